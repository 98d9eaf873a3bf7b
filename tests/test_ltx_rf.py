"""What the conformance suite does not express for `LTXEulerAncestralRF`: its weak order on the Gaussian problem, a
config taken over from LTX-Video's FlowMatchEuler (`from_config`), and the drop-in's custom-sigma table (the final
sigma's timestep included, a step past the last returning the sample) as LTX-2's pipelines drive it."""

from __future__ import annotations

import diffusers
import pytest
import torch
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

import functional_sched as fs
from functional_sched.adapters import drop_in, from_diffusers
from functional_sched.testing import gaussian

STEPS = (20, 40, 80, 160)
LTX_VIDEO = {
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}


# Measured slopes over 20-160 steps: 0.93 (eta = 1), 0.96 (eta = 0.5), 0.87 (shift 3). With s_noise != 1 the noise no
# longer restores the variance the step to sigma_down drops: the weak error stays O(1) (not a solver of the SDE).
@pytest.mark.parametrize("options", [{}, {"eta": 0.5}, {"shift": 3.0}], ids=["eta-1", "eta-0.5", "shift-3"])
def test_weak_order_one(options: dict) -> None:
    scheduler = fs.LTXEulerAncestralRF(**options)
    errors = [gaussian.weak_error(scheduler, steps) for steps in STEPS]
    slope = gaussian.fitted_order(STEPS, errors)
    assert abs(slope - 1) <= 0.2 and errors == sorted(errors, reverse=True), (slope, errors)


def test_config_taken_over_from_flow_match_euler() -> None:
    """`LTXEulerAncestralRFScheduler.from_config(ltx_video.scheduler.config)` (LTX's long multi-prompt pipeline):
    diffusers builds its step-count schedule from the FlowMatchEuler keys it keeps; `from_diffusers` maps them."""
    flow = diffusers.FlowMatchEulerDiscreteScheduler(**LTX_VIDEO)
    reference = diffusers.LTXEulerAncestralRFScheduler.from_config(flow.config, eta=0.5)
    ours = from_diffusers(reference)
    assert ours == fs.LTXEulerAncestralRF(eta=0.5, **LTX_VIDEO)
    reference.set_timesteps(8, mu=1.5)
    state = ours.init(8, sample=torch.zeros(1, 4), mu=1.5)
    assert torch.equal(ours.timesteps(state), reference.timesteps)
    assert torch.equal(ours.sigmas(state), reference.sigmas)


def test_invert_sigmas_is_refused_by_name() -> None:
    reference = diffusers.LTXEulerAncestralRFScheduler()
    reference.register_to_config(invert_sigmas=True)
    with pytest.raises(ValueError, match="invert_sigmas=True is not supported"):
        from_diffusers(reference)


def test_drop_in_runs_the_dfr_loop_as_diffusers() -> None:
    """LTX-2's DFR temporal refine: eta = 0.5, the distilled sigmas from the fifth on plus 0 (`set_timesteps` as a
    list), the loop over `timesteps[:-1]`; then a step at the final timestep returns the sample as it is."""
    sigmas = [*DISTILLED_SIGMA_VALUES[4:], 0.0]
    reference = diffusers.LTXEulerAncestralRFScheduler(eta=0.5)
    ours = drop_in.LTXEulerAncestralRFScheduler(eta=0.5)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(sigmas=sigmas, device="cpu")
    assert torch.equal(ours.timesteps, reference.timesteps) and len(ours.timesteps) == len(sigmas)
    assert torch.equal(ours.sigmas, reference.sigmas) and ours.num_inference_steps == reference.num_inference_steps
    x = y = torch.randn(2, 16, 4, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in reference.timesteps[:-1]:
        x = reference.step(torch.tanh(x.float()), t, x, generator=g_ref, return_dict=False)[0]
        y = ours.step(torch.tanh(y.float()), t, y, generator=g_ours, return_dict=False)[0]
        assert y.dtype == x.dtype == torch.bfloat16 and torch.equal(y, x)
    assert ours.step_index == reference.step_index == len(sigmas) - 1
    final = reference.timesteps[-1]
    assert reference.step(torch.tanh(x.float()), final, x).prev_sample is x
    assert ours.step(torch.tanh(y.float()), final, y).prev_sample is y
    assert ours.step_index == reference.step_index


def test_rows_draw_their_own_noise() -> None:
    """Batch invariance: a row stepped alone with its own noise gives what it gives stacked with another row."""
    scheduler = fs.LTXEulerAncestralRF(eta=0.5)
    sample = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    both, _ = scheduler.step(scheduler.init(6, sample=sample), torch.tanh(sample), sample, noise=noise)
    for row in range(2):
        alone = scheduler.init(6, sample=sample[row : row + 1])
        out, _ = scheduler.step(
            alone, torch.tanh(sample[row : row + 1]), sample[row : row + 1], noise=noise[row : row + 1]
        )
        assert torch.equal(out, both[row : row + 1])
