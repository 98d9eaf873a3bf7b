"""ER-SDE (`ERSDE`) against ComfyUI's `sample_er_sde`, whose trajectories are recorded in tests/fixtures/comfyui
(er_sde_*.safetensors; README.md says how): every model call's input, its sigma and the final sample,
bit for bit in float32; and its weak order on the Gaussian problem (the suite measures the ODE's strong order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import functional_sched as fs
from functional_sched.testing import gaussian
from functional_sched.testing.parity import toy_model

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"


def recorded(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    return load_file(str(path)), metadata


def replay(sched: fs.Scheduler, tensors: dict[str, torch.Tensor]) -> list[float]:
    """Our loop from the recorded latents on the recorded sigma table, fed the toy model and the recorded noise draws
    where ours draws: the max-abs difference from the recorded input at each model call, then from the final sample.
    Each call's sigma must be the one ComfyUI called its model at."""
    x = tensors["latents"].clone()
    state = sched.init(sigmas=tensors["sigmas"].tolist(), sample=x)
    x = x * sched.init_noise_sigma(state).view(-1, *[1] * (x.dim() - 1))
    draws = iter(tensors["noise"])
    differences = []
    for index, expected in enumerate(tensors["inputs"]):
        differences.append((x - expected).abs().max().item())
        timestep = sched.timestep(state)
        assert torch.equal(timestep, tensors["call_sigmas"][index].expand(x.shape[0])), index
        noise = next(draws) if sched._draws_noise(state) else torch.zeros_like(x)
        x, state = sched.step(state, toy_model(x, timestep), x, noise=noise)
    assert next(draws, None) is None, "ComfyUI drew more noise than ours"
    assert not sched.steps_left(state)
    differences.append((x - tensors["final"]).abs().max().item())
    return differences


@pytest.mark.parametrize("name", ["default", "reverse-time-stage-2", "ode", "stage-1-to-refiner"])
def test_er_sde_is_comfyuis_bit_for_bit(name: str) -> None:
    tensors, metadata = recorded(f"er_sde_{name}")
    sched = fs.ERSDE(**json.loads(metadata["options"]))
    assert replay(sched, tensors) == [0.0] * (len(tensors["inputs"]) + 1)


def test_karras_table_is_comfyuis() -> None:
    """`num_inference_steps` gives the Karras table the default fixture ran on (ComfyUI's `get_sigmas_karras` of SD
    1.5's range), and so its trajectory."""
    tensors, _ = recorded("er_sde_default")
    sched = fs.ERSDE()
    state = sched.init(10, sample=tensors["latents"])
    assert torch.equal(sched.sigmas(state), tensors["sigmas"])


def test_noise_scaler_other_than_the_default_is_refused() -> None:
    assert fs.ERSDE(noise_scaler=None) == fs.ERSDE()
    with pytest.raises(ValueError, match=r"ERSDE: noise_scaler=.* is not supported.*solver_type='Reverse-time SDE'"):
        fs.ERSDE(noise_scaler=lambda x: x**2)


@pytest.mark.parametrize(
    ("options", "order"),
    [
        ({}, 2.0),  # the node's default: ER-SDE scaler, 3 stages
        pytest.param({"max_stage": 1}, 1.0, marks=pytest.mark.slow),
        pytest.param({"solver_type": "Reverse-time SDE", "eta": 0.5, "max_stage": 2}, 2.0, marks=pytest.mark.slow),
    ],
)
def test_weak_order(options: dict, order: float) -> None:
    """The law of the samples (mean and variance, tracked exactly through the linear step) converges at the stage
    count's order, second at most (as the ODE's, tests/specs/er_sde.py), before the Riemann sums' floor."""
    counts = (20, 40, 80)
    errors = [gaussian.weak_error_of_states(fs.ERSDE(**options), steps) for steps in counts]
    assert errors == sorted(errors, reverse=True), errors
    assert abs(gaussian.fitted_order(counts, errors) - order) <= 0.4, errors
