"""The core depends on torch and attrs alone: it imports and samples with diffusers (and scipy) unavailable."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter. `sys.modules[name] = None` makes any `import name` raise ImportError.
WITHOUT_DIFFUSERS = textwrap.dedent(
    """
    import sys
    sys.modules["diffusers"] = None
    sys.modules["scipy"] = None
    import torch
    import functional_sched as fs

    assert fs.SCHEDULERS, "no schedulers"
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for scheduler_cls in fs.SCHEDULERS:
        sched = scheduler_cls()
        state = sched.init(6, sample=sample)
        latents = sample
        for _ in range(min(3, sched.steps_left(state))):  # ComfyUIPassThrough: one step, whatever the count
            noise = torch.randn_like(latents) if sched.stochastic else None  # DDPM's default samples ancestrally
            latents, state = sched.step(state, torch.tanh(latents), latents, noise=noise)
        assert latents.shape == sample.shape and bool(torch.isfinite(latents).all()), scheduler_cls
    # Beta sigmas need scipy in diffusers; the core has its own quantile function.
    sched = fs.FlowMatchEulerDiscrete(shift=3.0, use_beta_sigmas=True)
    state = sched.init(5, sample=sample)
    latents, state = sched.step(state, torch.tanh(sample), sample)
    assert bool(torch.isfinite(sched.sigmas(state)).all())
    print("sampled", len(fs.SCHEDULERS))
    """
)

# What `import functional_sched` pulls in by itself (torch imports numpy on its own, so numpy is not checked).
IMPORTED_MODULES = textwrap.dedent(
    """
    import sys
    import torch
    before = set(sys.modules)
    import functional_sched
    print(sorted(name for name in set(sys.modules) - before if not name.startswith("functional_sched")))
    print(sorted(name for name in sys.modules if name.split(".")[0] in ("diffusers", "scipy")))
    """
)


def run_python(source: str) -> str:
    result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_core_samples_without_diffusers_or_scipy() -> None:
    assert run_python(WITHOUT_DIFFUSERS).strip().startswith("sampled")


def test_core_imports_no_diffusers_or_scipy() -> None:
    new_modules, reference_modules = map(ast.literal_eval, run_python(IMPORTED_MODULES).strip().splitlines())
    assert reference_modules == []
    assert not [name for name in new_modules if name.split(".")[0] in ("diffusers", "scipy")], new_modules
