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
import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

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
