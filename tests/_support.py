"""Shared test machinery: a toy denoiser, the diffusers parity driver, the scheduler registry, and row stacking.

Every test module imports from here; nothing here asserts. Scheduler-specific knowledge (which configs are
stochastic, in what dtype diffusers draws noise, where a state keeps its rows) is written once, in this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree

import functional_sched as fs

diffusers.utils.logging.set_verbosity_error()  # "timesteps were passed without sigmas" warnings are expected

# diffusers draws a stochastic step's noise in float32 whatever the sample's dtype: FlowMatchEulerDiscrete from the
# float32-upcast sample (`randn_tensor(sample.shape, dtype=sample.dtype)` after `sample.to(torch.float32)`),
# DPMSolverMultistep's sde variants with `randn_tensor(model_output.shape, dtype=torch.float32)`. Both shapes equal
# the sample's.
NOISE_DTYPE = torch.float32


# --------------------------------------------------------------------------------------------------- toy model
def toy_model(sample: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
    """A deterministic stand-in denoiser: smooth, nonlinear in `sample`, varying with the timestep.

    `timestep` is diffusers' 0-d timestep or our per-row [R] one; either way it is broadcast to one value per row
    with the same shape, so equal inputs give bit-equal outputs on both sides. Elementwise, so each row's output
    depends on that row alone. Computed in float32, returned in `sample`'s dtype.
    """
    rows = sample.shape[0]
    t = torch.as_tensor(timestep, device=sample.device).to(torch.float32).reshape(-1).expand(rows) / 1000.0
    t = t.reshape(rows, *([1] * (sample.dim() - 1)))
    x = sample.to(torch.float32)
    out = torch.tanh(x) * (0.5 + t) - x * (0.3 * torch.cos(3.0 * t)) + 0.1 * torch.sin(2.0 * x + t)
    return out.to(sample.dtype)


def latents(shape: Sequence[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Standard normal initial latents from a seeded CPU generator, cast to `dtype`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(dtype)


# ------------------------------------------------------------------------------------------------- stochastic
def is_stochastic(scheduler: Any) -> bool:
    """Whether `scheduler` (ours or diffusers') draws noise in `step`."""
    config = getattr(scheduler, "config", scheduler)
    if getattr(config, "stochastic_sampling", False):
        return True
    return str(getattr(config, "algorithm_type", "")).startswith("sde")


def step_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """The noise of one stochastic step, drawn exactly as diffusers draws it from `generator`."""
    return fs.randn_tensor(tuple(shape), generator=generator, dtype=NOISE_DTYPE)


# ------------------------------------------------------------------------------------------------ parity driver
@dataclasses.dataclass(frozen=True)
class ParityResult:
    """One side-by-side loop. Errors are relative to the trajectory's size: for step i,
    `max|ours_i - ref_i| / max|ref_i|` (max-abs norm of diffusers' sample after step i; 1 if that is 0)."""

    errors: list[float]
    identical: list[bool]
    timestep_agrees: list[bool]  # our `timestep(state)` equals diffusers' t on every row, before each step
    ours_samples: list[torch.Tensor]
    ref_samples: list[torch.Tensor]
    ours_timesteps: torch.Tensor
    ref_timesteps: torch.Tensor
    ours_sigmas: torch.Tensor
    ref_sigmas: torch.Tensor

    @property
    def steps(self) -> int:
        return len(self.errors)

    @property
    def max_error(self) -> float:
        return max(self.errors, default=0.0)

    @property
    def num_identical(self) -> int:
        return sum(self.identical)

    def first_difference(self) -> str:
        """A line naming the first step that is not bit-identical (for assertion messages)."""
        for index, (same, error) in enumerate(zip(self.identical, self.errors, strict=True)):
            if not same:
                return f"step {index}/{self.steps}: relative error {error:.3e}"
        return "all steps bit-identical"


def parity_run(
    diffusers_scheduler: Any,
    functional_scheduler: Any,
    *,
    num_inference_steps: int | None = None,
    set_timesteps_kwargs: Mapping[str, Any] | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
    shape: Sequence[int] = (2, 4, 8, 8),
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    begin_index: int | None = None,
) -> ParityResult:
    """Run diffusers' loop and ours from the same latents, each side feeding its own sample to `toy_model`.

    diffusers: `set_timesteps(num_inference_steps, **set_timesteps_kwargs)`, then `set_begin_index(begin_index)`
    when one is given (img2img), and `step(model_output, t, sample, generator=g, return_dict=False)[0]` for each
    remaining t. Ours: `init(num_inference_steps, sample=..., begin_index=begin_index or 0, **init_kwargs)`.
    Stochastic steps draw their noise from a second generator seeded like diffusers' (`seed + 1`).
    """
    set_timesteps_kwargs = dict(set_timesteps_kwargs or {})
    init_kwargs = dict(init_kwargs or {})
    diffusers_scheduler.set_timesteps(num_inference_steps, **set_timesteps_kwargs)
    if begin_index is not None:
        diffusers_scheduler.set_begin_index(begin_index)
    start = begin_index or 0
    ref_timesteps = diffusers_scheduler.timesteps

    ref = latents(shape, dtype, seed) * getattr(diffusers_scheduler, "init_noise_sigma", 1.0)
    ours = ref.clone()
    state = functional_scheduler.init(num_inference_steps, sample=ours, begin_index=start, **init_kwargs)
    ours_timesteps = functional_scheduler.timesteps(state)
    ours_sigmas = functional_scheduler.sigmas(state)
    ref_sigmas = diffusers_scheduler.sigmas.clone()  # diffusers keeps sigmas on the scheduler; copy before stepping

    g_diff = torch.Generator().manual_seed(seed + 1)
    g_ours = torch.Generator().manual_seed(seed + 1)
    stochastic = is_stochastic(functional_scheduler)
    scale_input = getattr(diffusers_scheduler, "scale_model_input", lambda sample, t: sample)

    step_kwargs = {"generator": g_diff} if stochastic else {}  # UniPC's step takes no generator

    errors, identical, timestep_agrees, ours_samples, ref_samples = [], [], [], [], []
    for t in ref_timesteps[start:]:
        our_timestep = functional_scheduler.timestep(state)
        timestep_agrees.append(our_timestep.dtype == t.dtype and torch.equal(our_timestep, t.expand(shape[0])))
        ref_output = toy_model(scale_input(ref, t), t)
        ref = diffusers_scheduler.step(ref_output, t, ref, return_dict=False, **step_kwargs)[0]

        our_output = toy_model(functional_scheduler.scale_model_input(state, ours), our_timestep)
        noise = {"noise": step_noise(ours.shape, g_ours)} if stochastic else {}  # UniPC's step takes no noise
        ours, state = functional_scheduler.step(state, our_output, ours, **noise)

        if ours.dtype != ref.dtype:
            raise TypeError(f"parity_run compares equal dtypes; ours {ours.dtype}, diffusers {ref.dtype}")
        difference = (ours.double() - ref.double()).abs().max().item()
        scale = ref.double().abs().max().item() or 1.0
        errors.append(difference / scale)
        identical.append(torch.equal(ours, ref))
        ours_samples.append(ours)
        ref_samples.append(ref)
    return ParityResult(
        errors=errors,
        identical=identical,
        timestep_agrees=timestep_agrees,
        ours_samples=ours_samples,
        ref_samples=ref_samples,
        ours_timesteps=ours_timesteps,
        ref_timesteps=ref_timesteps,
        ours_sigmas=ours_sigmas,
        ref_sigmas=ref_sigmas,
    )


# ----------------------------------------------------------------------------------------------------- registry
def bit_identical_expected(functional_cls: type, config: Mapping[str, Any]) -> bool:
    """Whether parity must be bit for bit on any machine, or within the design's bound only.

    Everything is bit-identical to diffusers on the CPU except UniPC at order 3: there diffusers sums its two
    weighted differences with `einsum`, whose rounding depends on the BLAS kernel the CPU gets (bit-identical on
    an AMD EPYC with torch 2.13, one float32 ulp off on an Intel Xeon with torch 2.11). The bound holds everywhere.
    """
    return not (functional_cls.__name__ == "UniPCMultistep" and config.get("solver_order", 2) >= 3)


@dataclasses.dataclass(frozen=True)
class Case:
    """One representative scheduler config: the same option names build ours and diffusers' scheduler.

    `schedule` holds the keyword arguments that `init` and diffusers' `set_timesteps` share (mu=...); `custom`,
    when given, builds a custom table for a step count (Flux's sigmas), which then replaces num_inference_steps.
    `invalid_option` is (option, bad value, allowed values) for the construction error test;
    `other_step_options` changes an option that `step` branches on.
    """

    id: str
    functional_cls: type
    config: Mapping[str, Any]
    steps: int = 8
    schedule: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    custom: Callable[[int], Mapping[str, Any]] | None = None
    invalid_option: tuple[str, Any, tuple[Any, ...]] = ("time_shift_type", "cubic", ("exponential", "linear"))
    other_step_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inductor: bool = False  # compiled with inductor in the default run (one per solver; the rest are slow)

    @property
    def diffusers_cls(self) -> type:
        return getattr(diffusers, self.functional_cls.diffusers_name)

    def scheduler(self, **overrides: Any) -> Any:
        return self.functional_cls(**{**self.config, **overrides})

    def diffusers_scheduler(self) -> Any:
        return self.diffusers_cls(**self.config)

    def set_timesteps_kwargs(self, steps: int | None = None) -> dict[str, Any]:
        """What diffusers' `set_timesteps` gets besides num_inference_steps (which is `num_steps(steps)`)."""
        steps = steps or self.steps
        return {**(self.custom(steps) if self.custom else {}), **self.schedule}

    def num_steps(self, steps: int | None = None) -> int | None:
        """The num_inference_steps argument: None where a custom table fixes the count, as pipelines pass it."""
        return None if self.custom else steps or self.steps

    def init_kwargs(self, steps: int | None = None) -> dict[str, Any]:
        """Arguments of `init` after the sample, for `steps` steps (default `self.steps`)."""
        return {"num_inference_steps": self.num_steps(steps), **self.set_timesteps_kwargs(steps)}

    def build(self) -> tuple[Any, dict[str, Any], type]:
        """(functional scheduler, init kwargs, diffusers class)."""
        return self.scheduler(), self.init_kwargs(), self.diffusers_cls

    def parity(self, *, steps: int | None = None, **kwargs: Any) -> ParityResult:
        """`parity_run` of this config against diffusers."""
        return parity_run(
            self.diffusers_scheduler(),
            self.scheduler(),
            num_inference_steps=self.num_steps(steps),
            set_timesteps_kwargs=self.set_timesteps_kwargs(steps),
            init_kwargs=self.set_timesteps_kwargs(steps),
            **kwargs,
        )


def flux_mu(image_seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float, max_shift: float) -> float:
    """Flux's `calculate_shift` (diffusers/pipelines/flux/pipeline_flux.py): mu linear in the sequence length."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def flux_sigmas(steps: int) -> tuple[float, ...]:
    """The sigmas Flux pipelines pass to `set_timesteps`: `np.linspace(1.0, 1 / n, n)`."""
    return tuple(float(sigma) for sigma in np.linspace(1.0, 1 / steps, steps))


def _flux_schedule(steps: int) -> dict[str, Any]:
    return {"sigmas": flux_sigmas(steps)}


FLOW_MATCH_CASES = [
    Case(
        "flow-sd3",
        fs.FlowMatchEulerDiscrete,
        {"shift": 3.0},
        other_step_options={"stochastic_sampling": True},
    ),
    Case(
        "flow-flux-dev",
        fs.FlowMatchEulerDiscrete,
        {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15},
        schedule={"mu": flux_mu(4096, 256, 4096, 0.5, 1.15)},
        custom=_flux_schedule,
        other_step_options={"stochastic_sampling": True},
    ),
    Case(
        "flow-stochastic-karras",
        fs.FlowMatchEulerDiscrete,
        {"shift": 2.0, "stochastic_sampling": True, "use_karras_sigmas": True},
        other_step_options={"stochastic_sampling": False},
        inductor=True,
    ),
    Case(
        "flow-ltx-terminal",
        fs.FlowMatchEulerDiscrete,
        {
            "use_dynamic_shifting": True,
            "base_shift": 0.95,
            "max_shift": 2.05,
            "base_image_seq_len": 1024,
            "max_image_seq_len": 4096,
            "shift_terminal": 0.1,
            "time_shift_type": "linear",
        },
        schedule={"mu": 1.5},
        other_step_options={"stochastic_sampling": True},
    ),
]

_DPM = fs.DPMSolverMultistep
_UNIPC = fs.UniPCMultistep

_DPM_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")
DPM_CASES: list[Case] = [
    Case(
        "dpm++2m",
        _DPM,
        {"solver_order": 2, "algorithm_type": "dpmsolver++"},
        invalid_option=("algorithm_type", "dpm-fast", _DPM_ALGORITHMS),
        other_step_options={"solver_order": 3},
        inductor=True,
    ),
    Case(
        "dpm++3m-karras-v",
        _DPM,
        {
            "solver_order": 3,
            "prediction_type": "v_prediction",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "use_karras_sigmas": True,
        },
        steps=12,
        invalid_option=("algorithm_type", "dpm-fast", _DPM_ALGORITHMS),
        other_step_options={"prediction_type": "epsilon"},
    ),
    Case(
        "dpm++2m-sde",
        _DPM,
        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
        invalid_option=("algorithm_type", "dpm-fast", _DPM_ALGORITHMS),
        other_step_options={"algorithm_type": "dpmsolver++"},
    ),
    Case(
        "dpm-flow-sana",
        _DPM,
        {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"},
        steps=10,
        invalid_option=("solver_type", "rk4", ("midpoint", "heun")),
        other_step_options={"solver_order": 1},
    ),
    Case(
        "dpmsolver-sigma-min-thresholding",
        _DPM,
        {
            "algorithm_type": "dpmsolver",
            "final_sigmas_type": "sigma_min",
            "solver_type": "heun",
            "thresholding": True,
            "sample_max_value": 1.5,
        },
        invalid_option=("final_sigmas_type", "one", ("zero", "sigma_min")),
        other_step_options={"thresholding": False},
    ),
]

UNIPC_CASES: list[Case] = [
    Case(
        "unipc-bh2",
        _UNIPC,
        {"solver_order": 2},
        invalid_option=("solver_type", "bh3", ("bh1", "bh2")),
        other_step_options={"solver_order": 3},
        inductor=True,
    ),
    Case(
        "unipc-wan-flow",
        _UNIPC,
        {"use_flow_sigmas": True, "flow_shift": 5.0, "prediction_type": "flow_prediction"},
        steps=10,
        invalid_option=("timestep_spacing", "uniform", ("linspace", "leading", "trailing")),
        other_step_options={"solver_order": 1},
    ),
    Case(
        "unipc-bh1-3-karras",
        _UNIPC,
        {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min", "use_karras_sigmas": True},
        steps=12,
        invalid_option=("solver_type", "bh3", ("bh1", "bh2")),
        other_step_options={"solver_order": 2},
    ),
]

ALL_CASES = FLOW_MATCH_CASES + DPM_CASES + UNIPC_CASES
FACTORIES = [pytest.param(case, id=case.id) for case in ALL_CASES]


# ------------------------------------------------------------------------------------------------ row stacking
def _leaves(state: Any) -> tuple[list[Any], Any]:
    """A state's leaves with each `Plan` kept whole (plans stack by their own rule)."""
    return pytree.tree_flatten(state, is_leaf=lambda node: isinstance(node, fs.Plan))


def rows_dims(scheduler: Any, init_kwargs: Mapping[str, Any], sample: torch.Tensor) -> list[int | None]:
    """For each leaf of `scheduler`'s state (plans whole), the dim that holds rows, or None if it has none.

    Found by comparing the states that `init` builds for one row and for two: the dim whose size follows the
    rows is the rows dim (step_index: 0; a history buffer [order, R, ...]: 1).
    """
    one = _leaves(scheduler.init(sample=sample[:1], **init_kwargs))[0]
    two = _leaves(scheduler.init(sample=torch.cat([sample[:1], sample[:1]]), **init_kwargs))[0]
    dims: list[int | None] = []
    for a, b in zip(one, two, strict=True):
        if isinstance(a, fs.Plan):
            dims.append(None)
            continue
        changed = [d for d, (m, n) in enumerate(zip(a.shape, b.shape, strict=True)) if m != n]
        if len(changed) > 1:
            raise AssertionError(f"a state leaf grows with rows in several dims: {a.shape} -> {b.shape}")
        dims.append(changed[0] if changed else None)
    return dims


def _pad_steps(table: torch.Tensor, size: int) -> torch.Tensor:
    """Pad dim 1 (steps) to `size` by repeating the last entry; padded entries lie past `num_steps`."""
    if table.dim() < 2 or table.shape[1] == size:
        return table
    tail = table[:, -1:].expand(table.shape[0], size - table.shape[1], *table.shape[2:])
    return torch.cat([table, tail], dim=1)


def stack_plans(plans: Sequence[Any], share: bool = True) -> Any:
    """One plan for the stacked rows: shared (S=1) when all are the same, else one schedule per row, padded."""
    if share and all(_same_tree(plan, plans[0]) for plan in plans):
        return plans[0]
    columns = [pytree.tree_flatten(plan)[0] for plan in plans]
    spec = pytree.tree_structure(plans[0])
    stacked = []
    for tables in zip(*columns, strict=True):
        size = max(table.shape[1] for table in tables) if tables[0].dim() >= 2 else None
        stacked.append(torch.cat([_pad_steps(table, size) if size else table for table in tables], dim=0))
    return pytree.tree_unflatten(stacked, spec)


def stack_states(scheduler: Any, states: Sequence[Any], dims: Sequence[int | None], *, share_plans: bool = True) -> Any:
    """Concatenate single-request states along their rows (the states' leaves, field by field).

    Leaves without a rows dim (the fingerprint) must agree; plans stack with `stack_plans`.
    """
    columns = [_leaves(state)[0] for state in states]
    spec = _leaves(states[0])[1]
    stacked = []
    for dim, leaves in zip(dims, zip(*columns, strict=True), strict=True):
        if isinstance(leaves[0], fs.Plan):
            stacked.append(stack_plans(leaves, share=share_plans))
        elif dim is None:
            if not all(torch.equal(leaf, leaves[0]) for leaf in leaves):
                raise AssertionError("a state leaf without a rows dim differs between the states being stacked")
            stacked.append(leaves[0])
        else:
            stacked.append(torch.cat(leaves, dim=dim))
    return pytree.tree_unflatten(stacked, spec)


def _same_tree(a: Any, b: Any) -> bool:
    if a is b:
        return True
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    return spec_a == spec_b and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def same_state(a: Any, b: Any) -> bool:
    """Equal pytree structure and bit-equal leaves of equal dtype."""
    return _same_tree(a, b)


def tensor_leaves(state: Any) -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor of a state, plans included."""
    flat, _ = pytree.tree_flatten_with_path(state)
    return [(pytree.keystr(path), leaf) for path, leaf in flat]


def run_loop(
    scheduler: Any,
    state: Any,
    sample: torch.Tensor,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    step_fn: Callable[..., Any] | None = None,
) -> tuple[list[torch.Tensor], Any]:
    """`steps` steps of our loop with the toy model; returns every sample after a step, and the last state."""
    step_fn = step_fn or scheduler.step
    stochastic = is_stochastic(scheduler)
    samples = []
    for _ in range(steps):
        output = toy_model(scheduler.scale_model_input(state, sample), scheduler.timestep(state))
        noise = {"noise": step_noise(sample.shape, generator)} if stochastic else {}
        sample, state = step_fn(state, output, sample, **noise)
        samples.append(sample)
    return samples, state


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| in float64."""
    return (ours.double() - ref.double()).abs().max().item() / (ref.double().abs().max().item() or 1.0)


def ulp(values: torch.Tensor) -> torch.Tensor:
    """The spacing of `values`' dtype at each value (one unit in the last place), as float64."""
    finfo = torch.finfo(values.dtype)
    exponent = torch.floor(torch.log2(values.double().abs().clamp(min=finfo.tiny)))
    return torch.exp2(exponent) * finfo.eps
