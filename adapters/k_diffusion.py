"""k-diffusion's samplers (`k_diffusion.sampling`, k-diffusion 0.1.1.post1), loaded without its package `__init__`.

k-diffusion's samplers are whole loops, `sample_x(model, x, sigmas, extra_args, callback, disable, ...)`, with the
model a denoiser `model(x, sigma) -> x0`: the references of the classes that reproduce them step by step
(`DPMSolverPlusPlus2SAncestral`, `DPMSolverPlusPlus3MSDE`). Its package `__init__` imports every module of it (image
augmentation, CLIP evaluation, torchvision, scikit-image ...), none of which the samplers use. `sampling_module` loads
`k_diffusion/sampling.py` from the installed package's files under a bare parent package, with a `k_diffusion.utils`
that holds `append_dims` alone, compiled from k-diffusion's own `utils.py` (the one function `sampling.py` calls of it;
the rest of that module imports PIL and torchvision). The modules are in `sys.modules` only while `sampling.py`
loads, so a later `import k_diffusion` is untouched. `sampling.py` itself imports scipy, torchsde, torchdiffeq and
tqdm (the `test` extra has them).

    pip install --no-deps k-diffusion==0.1.1.post1      # the wheel alone
    from functional_sched.adapters.k_diffusion import sampler
    x = sampler("sample_dpmpp_2s_ancestral")(denoiser, x, sigmas, disable=True)
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import math
import queue
import sys
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

#: The k-diffusion release whose samplers the classes and the conformance suite were checked against.
K_DIFFUSION_VERSION = "0.1.1.post1"
_PACKAGE = "k_diffusion"
#: What `sampling.py` uses of `k_diffusion.utils`.
_UTILS = ("append_dims",)
_LOCK = threading.Lock()
_LOADED: dict[str, types.ModuleType] = {}


def available() -> bool:
    """Whether k-diffusion's package is installed (its files; nothing of it is imported to ask)."""
    return importlib.util.find_spec(_PACKAGE) is not None


def sampler(name: str) -> Any:
    """k-diffusion's sampler function `name` (e.g. "sample_dpmpp_3m_sde"), or another name of `k_diffusion.sampling`
    (`BrownianTreeNoiseSampler`, `get_sigmas_karras`)."""
    module = sampling_module()
    if not hasattr(module, name):
        raise KeyError(f"sampler: k-diffusion {K_DIFFUSION_VERSION}'s sampling module has no {name!r}.")
    return getattr(module, name)


def sampling_module() -> types.ModuleType:
    """The module `k_diffusion.sampling`, loaded once per process (k-diffusion's own where it is imported already)."""
    qualified = f"{_PACKAGE}.sampling"
    if qualified in sys.modules:  # k-diffusion imported for real
        return sys.modules[qualified]
    with _LOCK:
        if qualified not in _LOADED:
            _LOADED[qualified] = _load(qualified)
        return _LOADED[qualified]


def _root() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"k-diffusion is not installed; its samplers need the wheel alone: "
            f"pip install --no-deps k-diffusion=={K_DIFFUSION_VERSION}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _load(qualified: str) -> types.ModuleType:
    """Loads `sampling.py` with a bare parent package and the `utils` it needs, then takes every k-diffusion module
    out of `sys.modules` again (the loaded module keeps its own references)."""
    root = _root()
    made = [_PACKAGE, f"{_PACKAGE}.utils", qualified]
    if any(name in sys.modules for name in made):
        raise RuntimeError(f"k-diffusion's {', '.join(n for n in made if n in sys.modules)} is half-imported already.")
    package = types.ModuleType(_PACKAGE)
    package.__path__ = [str(root)]
    sys.modules[_PACKAGE] = package
    try:
        sys.modules[f"{_PACKAGE}.utils"] = package.utils = _utils(root / "utils.py")  # type: ignore[attr-defined]
        spec = importlib.util.spec_from_file_location(qualified, root / "sampling.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
        return module
    finally:
        for name in made:
            sys.modules.pop(name, None)


def _utils(path: Path) -> types.ModuleType:
    """A `k_diffusion.utils` of the functions `sampling.py` calls (`_UTILS`), compiled from k-diffusion's own source
    (the module's other imports, PIL and torchvision among them, are not run)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in _UTILS]
    if {node.name for node in functions} != set(_UTILS):
        raise ImportError(f"k-diffusion's {path} lacks {sorted(set(_UTILS) - {node.name for node in functions})}.")
    module = types.ModuleType(f"{_PACKAGE}.utils")
    module.__file__ = str(path)
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(path), "exec"), module.__dict__)
    return module


def sample_dpm_adaptive_rows(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scheduler: Any,
    attempts: int,
    noise_samplers: Sequence[Callable[..., torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """k-diffusion's `sample_dpm_adaptive` with a `DPMSolverAdaptive` config's options, on each row of `x` alone (a
    batch of one, whose error norm is that row's, as the class's), the rows' model calls made together: each call of
    `model(x, sigma)` takes every row's next call, a finished row's final sample at its final sigma (what the class
    feeds a finished row). Returns the final samples and each row's `info`.

    The class's budget of `attempts` applied to k-diffusion's own loop (which has none): its
    `DPMSolver.dpm_solver_adaptive`, run with a subclass of its `PIDStepSizeController` in place of that name, which
    makes the budget's last attempt run to sigma_min (a step of inf, clamped to t_end) and accepts it. Where the loop
    finishes within the budget the subclass changes nothing. `noise_samplers`: each row's `noise_sampler(sigma,
    sigma_next)` (with eta > 0: e.g. a `BrownianTreeNoiseSampler` per row); None draws zeros (eta = 0 adds none)."""
    module = sampling_module()
    controller = _budgeted_controller(module.PIDStepSizeController, attempts)
    # k-diffusion's own code object, with its globals but for the controller's name.
    solve = types.FunctionType(
        module.DPMSolver.dpm_solver_adaptive.__code__,
        {**module.__dict__, "PIDStepSizeController": controller},
        "dpm_solver_adaptive",
        module.DPMSolver.dpm_solver_adaptive.__defaults__,
    )

    def run(row: int, row_model: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        solver = module.DPMSolver(row_model)
        last = {"t": None}
        solver.info_callback = lambda info: last.update(t=info["t"])
        t_start, t_end = (solver.t(torch.tensor(value)) for value in (scheduler.sigma_max, scheduler.sigma_min))
        sampler_ = (
            noise_samplers[row]
            if noise_samplers is not None
            else lambda sigma, sigma_next: torch.zeros_like(x[row : row + 1])
        )
        final, info = solve(
            solver,
            x[row : row + 1],
            t_start,
            t_end,
            scheduler.order,
            scheduler.rtol,
            scheduler.atol,
            scheduler.h_init,
            scheduler.pcoeff,
            scheduler.icoeff,
            scheduler.dcoeff,
            scheduler.accept_safety,
            scheduler.eta,
            scheduler.s_noise,
            sampler_,
        )
        return final, solver.sigma(last["t"]), info

    if x.shape[0] == 1:  # one row: its loop as it is, no threads
        return (lambda final, _sigma, info: (final, [info]))(*run(0, model))
    finals = _lockstep([functools.partial(run, row) for row in range(x.shape[0])], model)
    return torch.cat([final for final, _, _ in finals]), [info for _, _, info in finals]


def _budgeted_controller(base: type, attempts: int) -> type:
    """k-diffusion's `PIDStepSizeController` with a budget of `attempts` proposals: the last attempt steps to the end
    (its step inf) and is accepted."""

    class Budgeted(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.left = attempts
            if attempts == 1:
                self.h = math.inf

        def propose_step(self, error: Any) -> bool:
            accept = super().propose_step(error)
            self.left -= 1
            if self.left == 1:
                self.h = math.inf
            return accept or self.left == 0

    return Budgeted


def _lockstep(runs: Sequence[Callable[[Callable[..., torch.Tensor]], Any]], model: Callable[..., torch.Tensor]) -> list:
    """Runs `runs[r](row_model)` (a row's whole loop, returning (final, final sigma, ...)) in a thread each, their
    model calls batched: a call of `model` takes every unfinished row's next call, a finished row's final sample at
    its final sigma. Returns each run's result."""
    calls: queue.Queue = queue.Queue()
    replies = [queue.Queue() for _ in runs]

    def worker(row: int) -> None:
        def row_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            calls.put((row, "call", (x, sigma)))
            reply = replies[row].get()
            if isinstance(reply, BaseException):
                raise reply
            return reply

        try:
            calls.put((row, "done", runs[row](row_model)))
        except BaseException as error:
            calls.put((row, "error", error))

    threads = [threading.Thread(target=worker, args=(row,), daemon=True) for row in range(len(runs))]
    for thread in threads:
        thread.start()
    pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    results: dict[int, Any] = {}
    try:
        while True:
            while len(pending) + len(results) < len(runs):
                row, kind, value = calls.get()
                if kind == "error":
                    raise value
                (results if kind == "done" else pending)[row] = value
            if not pending:
                return [results[row] for row in range(len(runs))]
            inputs = [pending[row] if row in pending else results[row][:2] for row in range(len(runs))]
            output = model(torch.cat([x for x, _ in inputs]), torch.cat([sigma.reshape(-1) for _, sigma in inputs]))
            for row in pending:
                replies[row].put(output[row : row + 1])
            pending.clear()
    except BaseException as error:
        for row in pending:
            replies[row].put(error)
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
