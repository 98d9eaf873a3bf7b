"""sglang's `SelfForcingFlowMatchScheduler` drop-in against sglang's own objects, and what the suite's columns cannot
say: sglang's batch-level jump to sigma 0 (rows at different steps), which ours does not reproduce.

The conformance spec (`tests/specs/self_forcing.py`) holds the core class to an adapted reference; the drop-in is
sglang's class itself (its N sigmas, its output dtype, `set_timesteps(n, denoising_strength)`, a lookup per call), so
it is driven here against sglang's objects directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from functional_sched.adapters import drop_in, from_sglang
from functional_sched.adapters import sglang as sglang_adapter
from functional_sched.testing.parity import latents, toy_model

pytestmark = pytest.mark.skipif(
    not sglang_adapter.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)

CASES = [
    ({"num_inference_steps": 1000, "shift": 10.0, "sigma_min": 0.0, "extra_one_step": True}, 8, 1.0),
    ({"num_inference_steps": 1000, "shift": 5.0, "sigma_min": 0.0, "extra_one_step": True}, 4, 1.0),
    ({"shift": 5.0}, 20, 0.6),
    ({"inverse_timesteps": True}, 5, 1.0),
    ({"reverse_sigmas": True, "shift": 2.0}, 6, 1.0),
]
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)]


def pair(options: dict[str, Any]) -> tuple[Any, Any]:
    reference = sglang_adapter.sglang_class("SelfForcingFlowMatchScheduler")(**options)
    return reference, drop_in.SGLANG_DROP_INS["SelfForcingFlowMatchScheduler"](**options)


@pytest.mark.parametrize(("options", "steps", "strength"), CASES)
@pytest.mark.parametrize(("sample_dtype", "model_dtype"), DTYPES)
def test_drop_in_steps_as_sglang(
    options: dict[str, Any], steps: int, strength: float, sample_dtype: torch.dtype, model_dtype: torch.dtype
) -> None:
    """Construction's tables, `set_timesteps(n, denoising_strength)`'s, and every step of a loop (return_dict
    alternating) bit for bit, in sglang's output dtype."""
    reference, ours = pair(options)
    assert torch.equal(ours.timesteps, reference.timesteps) and torch.equal(ours.sigmas, reference.sigmas)
    reference.set_timesteps(steps, denoising_strength=strength)
    ours.set_timesteps(steps, denoising_strength=strength)
    assert torch.equal(ours.timesteps, reference.timesteps) and torch.equal(ours.sigmas, reference.sigmas)
    x = latents((2, 4, 8, 8), sample_dtype)
    y = x.clone()
    for index, t in enumerate(reference.timesteps):
        return_dict = index % 2 == 0
        a = reference.step(toy_model(x, t).to(model_dtype), t, x, return_dict=return_dict)
        b = ours.step(toy_model(y, t).to(model_dtype), t, y, return_dict=return_dict)
        assert type(a) is type(b)
        x, y = (a.prev_sample, b.prev_sample) if return_dict else (a[0], b[0])
        assert y.dtype == x.dtype and torch.equal(x, y), f"step {index}"


@pytest.mark.parametrize(("options", "steps", "strength"), CASES)
def test_drop_in_rows_and_noising_as_sglang_row_by_row(options: dict[str, Any], steps: int, strength: float) -> None:
    """A timestep per row: each row looked up and stepped as sglang steps that row alone; `add_noise` as sglang's."""
    reference, ours = pair(options)
    reference.set_timesteps(steps, denoising_strength=strength)
    ours.set_timesteps(steps, denoising_strength=strength)
    noise, clean = latents((2, 4, 8, 8), seed=2), latents((2, 4, 8, 8), seed=3)
    timesteps = reference.timesteps[[0, steps - 1]]
    assert torch.equal(ours.add_noise(clean, noise, timesteps), reference.add_noise(clean, noise, timesteps))
    output = toy_model(noise, timesteps)
    alone = [reference.step(output[row : row + 1], timesteps[row : row + 1], noise[row : row + 1])[0] for row in (0, 1)]
    assert torch.equal(ours.step(output, timesteps, noise)[0], torch.cat(alone))


def test_sglangs_batch_jump_to_zero_is_not_reproduced() -> None:
    """sglang sends every row to sigma 0 once any row of the batch is at its last step; ours steps each row to its
    own next sigma, as sglang does for each row alone (rows at steps 0 and 3 of 4, v = 1, x = 1)."""
    options = {"shift": 1.0, "sigma_min": 0.0, "extra_one_step": True}
    reference, ours = pair(options)
    reference.set_timesteps(4)
    ours.set_timesteps(4)
    ones, timesteps = torch.ones(2, 1, 1, 1), reference.timesteps[[0, 3]]
    assert reference.step(ones, timesteps, ones)[0].flatten().tolist() == [0.0, 0.75]  # sglang's batch: row 0 to 0
    alone = [reference.step(ones[:1], timesteps[row : row + 1], ones[:1])[0].item() for row in (0, 1)]
    assert alone == [0.75, 0.75]
    assert ours.step(ones, timesteps, ones)[0].flatten().tolist() == alone


def test_drop_in_refuses_to_final_and_maps_back() -> None:
    reference, ours = pair({"num_inference_steps": 1000, "shift": 10.0, "sigma_min": 0.0, "extra_one_step": True})
    with pytest.raises(NotImplementedError, match=r"step\(to_final=True\)"):
        ours.step(torch.ones(1, 1, 1, 1), ours.timesteps[0], torch.ones(1, 1, 1, 1), to_final=True)
    assert from_sglang(ours) == from_sglang(reference)
    reference.set_shift(5.0)
    ours.set_shift(5.0)
    reference.set_timesteps(1000)
    ours.set_timesteps(1000)
    assert torch.equal(ours.timesteps, reference.timesteps)
    assert from_sglang(ours) == from_sglang(reference) and from_sglang(reference).shift == 5.0
