"""ComfyUI's gradient estimation and iPNDM-v samplers against their recorded trajectories
(`tests/fixtures/comfyui/`, made by `record_k_samplers.py` there from ComfyUI's own functions), and what the
conformance suite (`tests/specs/k_multistep.py`) does not express: iPNDM-v's weights on even steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import functional_sched as fs
from functional_sched.testing import toy_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"


def recorded(sampler: str) -> dict[str, dict[str, Any]]:
    """A fixture's configs: each one's options and tensors (sigmas, noise, every call's input and sigma, final)."""
    with safe_open(str(FIXTURES / f"{sampler}.safetensors"), "pt") as handle:
        meta, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return {
        config: {
            **json.loads(info),
            **{key.split("/", 1)[1]: value for key, value in tensors.items() if key.startswith(f"{config}/")},
        }
        for config, info in meta.items()
    }


def replay(scheduler: Any, run: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Our eager loop on a recorded run's table from its latents (times `init_noise_sigma`): (our sample before each
    call and the final one, the recorded ones), each call's sigma checked against the recorded one."""
    state = scheduler.init(sigmas=run["sigmas"].tolist(), sample=run["noise"])
    sample = run["noise"] * scheduler.init_noise_sigma(state).view(-1, *[1] * (run["noise"].dim() - 1))
    ours = []
    while scheduler.steps_left(state):
        ours.append(sample)
        timestep = scheduler.timestep(state)
        assert torch.equal(timestep, run["call_sigmas"][len(ours) - 1]), (len(ours), timestep)
        sample, state = scheduler.step(state, toy_model(sample, timestep), sample)
    assert len(ours) == run["inputs"].shape[0], "ours calls the model as often as ComfyUI"
    return [*ours, sample], [*run["inputs"].unbind(0), run["final"]]


def relative_errors(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> list[float]:
    return [float((a - b).norm() / b.norm()) for a, b in zip(ours, reference, strict=True)]


GRADIENT_ESTIMATION_RUNS = recorded("gradient_estimation")
IPNDM_V_RUNS = recorded("ipndm_v")


@pytest.mark.parametrize("config", sorted(GRADIENT_ESTIMATION_RUNS))
def test_gradient_estimation_is_comfyuis_bit_for_bit(config: str) -> None:
    """Every model call's input and the final sample equal ComfyUI's `sample_gradient_estimation` bit for bit
    (its coefficients are the table's float32 differences and ge_gamma - 1, formed as ComfyUI forms them)."""
    run = GRADIENT_ESTIMATION_RUNS[config]
    ours, reference = replay(fs.GradientEstimation(**run["options"]), run)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True)), relative_errors(ours, reference)


@pytest.mark.parametrize("config", sorted(IPNDM_V_RUNS))
def test_ipndm_v_is_comfyuis_within_1e_5(config: str) -> None:
    """Every model call's input and the final sample within 1e-5 of ComfyUI's `sample_ipndm_v` (relative to each
    sample's norm; measured at most 1.1e-6): our weights are formed in float64 and rounded once, ComfyUI's in
    float32 by another arrangement of the same formulas, so they differ in the last bits."""
    run = IPNDM_V_RUNS[config]
    ours, reference = replay(fs.IPNDMVariableStep(**run["options"]), run)
    errors = relative_errors(ours, reference)
    assert max(errors) <= 1e-5, errors
    assert torch.equal(ours[1], reference[1]), "the first step is Euler's, bit for bit"


def test_ipndm_v_weights_on_even_steps() -> None:
    """On a table of even steps (sigmas 12, 11, ..., 1, 0) the weights of orders 1 to 3 are
    Adams-Bashforth's, (1), (3, -1)/2, (23, -16, 5)/12, at warm-up levels 0 to 2; order 4's are ComfyUI's
    (57, -65, 43, -11)/24, not Adams-Bashforth's (55, -59, 37, -9)/24 (exact for quadratic derivatives only)."""
    scheduler = fs.IPNDMVariableStep()
    state = scheduler.init(sigmas=[float(sigma) for sigma in range(12, -1, -1)], sample=torch.zeros(1, 2))
    table = state.plan.coefficients[0, 6, :, 3:].double()  # step 6, every level, the weights (float32)
    expected = torch.tensor(
        [[1, 0, 0, 0], [3 / 2, -1 / 2, 0, 0], [23 / 12, -16 / 12, 5 / 12, 0], [57 / 24, -65 / 24, 43 / 24, -11 / 24]],
        dtype=torch.float64,
    )
    assert torch.allclose(table, expected, rtol=0, atol=1e-6), table
