"""pi-Flow with distinct predictions per grid point (the conformance suite's toy model predicts one, which
`tests/specs/piflow.py` repeats): every step against diffusers' and sglang's `PiflowScheduler`, eager and on the
device path, rows at different steps, compiled, and the drop-ins."""

from __future__ import annotations

import diffusers
import pytest
import torch

from functional_sched.adapters import drop_in
from functional_sched.adapters.sglang import available, sglang_class
from functional_sched.schedulers.piflow import Piflow, SglangPiflow
from functional_sched.testing import latents, toy_model

OPTIONS = (
    {},
    {"shift": 3.0, "n_grid": 4, "final_step_size_scale": 1.0},
    {"num_policy_substeps": 7, "shift": 0.7, "final_step_size_scale": 0.25, "n_grid": 2},
)
sglang_only = pytest.mark.skipif(not available(), reason="sglang's wheel is not installed")


def grid_model(sample: torch.Tensor, timestep: torch.Tensor, n_grid: int) -> torch.Tensor:
    """`toy_model`'s output widened to `n_grid` distinct predictions per channel (grid point-major, the last dim)."""
    out = toy_model(sample, timestep).to(torch.float32)
    points = [out * (1.0 + 0.05 * k) + 0.01 * k for k in range(n_grid)]
    return torch.cat(points, dim=-1).to(sample.dtype)


def _classes(library: str) -> tuple[type, type]:
    if library == "sglang":
        return SglangPiflow, sglang_class("PiflowScheduler")
    return Piflow, diffusers.PiflowScheduler


LIBRARIES = ("diffusers", pytest.param("sglang", marks=sglang_only))


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("steps", (1, 4, 10))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("device_path", (False, True))
def test_every_step_is_the_references(
    library: str, options: dict, steps: int, dtype: torch.dtype, device_path: bool
) -> None:
    ours_class, reference_class = _classes(library)
    reference, sched = reference_class(**options), ours_class(**options)
    reference.set_timesteps(steps)
    x = latents((2, 3, 4, 6), dtype)
    y = x.clone()
    state = sched.init(steps, sample=y)
    assert torch.equal(sched.timesteps(state), reference.timesteps)
    assert torch.equal(sched.sigmas(state), reference.sigmas)
    for t in reference.timesteps:
        x = reference.step(grid_model(x, t, sched.n_grid), t, x, return_dict=False)[0]
        timestep = sched.timestep(state)
        if device_path:  # what compiled code and stacked states run: gathers and per-row masks
            state = state.replace(cursor=None)
        y, state = sched.step(state, grid_model(y, timestep, sched.n_grid), y)
        assert y.dtype == x.dtype
        assert torch.equal(y, x)


@pytest.mark.parametrize("library", LIBRARIES)
def test_rows_at_different_steps_step_as_alone(library: str) -> None:
    from functional_sched import batching

    ours_class, _ = _classes(library)
    sched = ours_class()
    alone = []
    for steps, seed in ((3, 0), (8, 1)):
        sample = latents((1, 2, 4, 4), seed=seed)
        state = sched.init(steps, sample=sample)
        samples = []
        for _ in range(steps):
            sample, state = sched.step(state, grid_model(sample, sched.timestep(state), 10), sample)
            samples.append(sample)
        alone.append(samples)
    states = [sched.init(steps, sample=latents((1, 2, 4, 4), seed=seed)) for steps, seed in ((3, 0), (8, 1))]
    state = batching.stack(states)
    sample = torch.cat([latents((1, 2, 4, 4), seed=0), latents((1, 2, 4, 4), seed=1)])
    for index in range(3):
        sample, state = sched.step(state, grid_model(sample, sched.timestep(state), 10), sample)
        assert torch.equal(sample[0], alone[0][index][0]) and torch.equal(sample[1], alone[1][index][0])


def test_compiled_step_equals_eager() -> None:
    sched = Piflow(n_grid=4)
    step = torch.compile(sched.step, fullgraph=True)
    eager_sample = compiled_sample = latents((2, 3, 4, 6))
    eager_state = compiled_state = sched.init(4, sample=eager_sample)
    for _ in range(4):
        t = sched.timestep(eager_state)
        eager_sample, eager_state = sched.step(eager_state, grid_model(eager_sample, t, 4), eager_sample)
        compiled_sample, compiled_state = step(
            compiled_state.replace(cursor=None), grid_model(compiled_sample, t, 4), compiled_sample
        )
        torch.testing.assert_close(compiled_sample, eager_sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize("library", LIBRARIES)
def test_drop_in_steps_as_the_reference(library: str) -> None:
    _, reference_class = _classes(library)
    registry = drop_in.SGLANG_DROP_INS if library == "sglang" else drop_in.DROP_INS
    ours, reference = registry["PiflowScheduler"](n_grid=4), reference_class(n_grid=4)
    for scheduler in (ours, reference):
        scheduler.set_timesteps(5)
    assert torch.equal(ours.timesteps, reference.timesteps) and torch.equal(ours.sigmas, reference.sigmas)
    x = latents((2, 3, 4, 6), torch.bfloat16)
    y = x.clone()
    for t in reference.timesteps:
        x = reference.step(grid_model(x, t, 4), t, x).prev_sample
        y = ours.step(grid_model(y, t, 4), t, y).prev_sample
        assert y.dtype == x.dtype and torch.equal(y, x)
    with pytest.raises(ValueError, match="integer indices"):
        ours.step(grid_model(y, t, 4), 5, y)


def test_model_output_of_another_grid_is_refused() -> None:
    sched = Piflow(n_grid=4)
    sample = latents((2, 3, 4, 6))
    state = sched.init(4, sample=sample)
    with pytest.raises(ValueError, match=r"model_output has shape \(2, 3, 4, 30\)"):
        sched.step(state, grid_model(sample, sched.timestep(state), 5), sample)
