"""A plain eager loop, run the same way in the test's process and in a fresh interpreter: the composability column's
control that no transform or tensor mode left anything behind that changes a later plain run.

In a fresh interpreter this file runs as a script (`python plain_loop.py`), so it imports only torch and
functional_sched, not the kit: the arguments come pickled on stdin, the final sample goes back `torch.save`d on
stdout.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

import functional_sched as fs

SHAPE = (2, 4, 6, 6)


def model(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """A smooth elementwise denoiser in the sample's dtype (float64 keeps float64, for finite differences)."""
    t = timestep.to(sample.dtype).reshape(-1, *([1] * (sample.dim() - 1))) / 1000.0
    return torch.tanh(sample) * (0.5 + t) - 0.3 * sample * torch.cos(3.0 * t) + 0.1 * torch.sin(2.0 * sample + t)


def inputs(scheduler: Any, steps: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, Any]:
    """The latents (and, for a stochastic scheduler, every step's noise) of a loop, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=generator, dtype=torch.float64).to(dtype)
    noise = torch.randn((steps, *SHAPE), generator=generator, dtype=torch.float64).to(dtype)
    return {"sample": sample, "noise": noise if scheduler.stochastic else None}


def run(scheduler: Any, init_kwargs: Mapping[str, Any], steps: int) -> torch.Tensor:
    """The final sample of a plain eager loop of `steps` steps with `model`."""
    state = scheduler.init(**init_kwargs, sample=inputs(scheduler, steps)["sample"])
    return fs.denoise(scheduler, model, **inputs(scheduler, steps), state=state, steps=steps)


#: What `run` takes: (scheduler, init_kwargs, steps).
Run = tuple[Any, Mapping[str, Any], int]


def run_in_fresh_process(runs: Sequence[Run]) -> list[torch.Tensor]:
    """`run` of each of `runs` in one new interpreter, where nothing ran before them. It imports from this process's
    `sys.path` (a test module's scheduler class unpickles there too), not from this folder (-P)."""
    done = subprocess.run(
        [sys.executable, "-P", __file__],
        input=pickle.dumps([(scheduler, dict(init_kwargs), steps) for scheduler, init_kwargs, steps in runs]),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the fresh interpreter failed:\n{done.stderr.decode()}")
    return torch.load(io.BytesIO(done.stdout))


if __name__ == "__main__":
    buffer = io.BytesIO()
    torch.save([run(*arguments) for arguments in pickle.loads(sys.stdin.buffer.read())], buffer)
    sys.stdout.buffer.write(buffer.getvalue())
