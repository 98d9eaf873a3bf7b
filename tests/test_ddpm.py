"""DDIM and DDPM facts beyond their conformance tables (`tests/specs/ddpm.py`): learned variances (a model output with
twice the sample's channels, which the suite's toy model cannot serve), the graph path of a step at timestep 0, and
what the drop-ins do that a loop of table timesteps does not show (no noise drawn at timestep 0, timesteps out of
sequence or off the table, `variance_noise`)."""

from __future__ import annotations

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import latents, toy_model

# DeepFloyd IF stage I's scheduler (`DeepFloyd/IF-I-XL-v1.0`, scheduler/scheduler_config.json).
DEEPFLOYD_IF = {
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "learned_range",
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.95,
    "sample_max_value": 1.5,
}
# IF's pipelines pass uneven custom tables (`fast27_timesteps` and its kin): these end at timestep 0.
CUSTOM = [999, 800, 600, 420, 280, 160, 80, 30, 0]


def learned_output(sample: torch.Tensor, t: torch.Tensor, variance_type: str) -> torch.Tensor:
    """The toy model's prediction, then a variance channel per sample channel: a variance for 'learned' (positive,
    of a beta's size), a fraction in [-1, 1] for 'learned_range'."""
    raw = toy_model(sample.flip(1), t)
    variance = 0.02 * torch.sigmoid(raw) if variance_type == "learned" else torch.tanh(raw)
    return torch.cat([toy_model(sample, t), variance.to(sample.dtype)], dim=1)


@pytest.mark.parametrize(
    ("config", "schedule"),
    [
        (DEEPFLOYD_IF, {"timesteps": CUSTOM}),
        (DEEPFLOYD_IF, {"num_inference_steps": 10}),
        ({"variance_type": "learned", "timestep_spacing": "linspace"}, {"num_inference_steps": 8}),
        ({"variance_type": "learned", "prediction_type": "v_prediction", "clip_sample": False}, {"timesteps": CUSTOM}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_learned_variances_step_as_diffusers(config: dict, schedule: dict, dtype: torch.dtype) -> None:
    """Every step and x0 bit for bit, the core's and the drop-in's, with the noise diffusers draws."""
    variance_type = config["variance_type"]
    reference, ours = diffusers.DDPMScheduler(**config), fs.DDPM(**config)
    dropped = drop_in.as_diffusers(reference)
    reference.set_timesteps(**schedule)
    dropped.set_timesteps(**schedule)
    start = latents((2, 3, 8, 8), dtype)
    state = ours.init(sample=start, **schedule)
    assert torch.equal(ours.timesteps(state), reference.timesteps)
    ref, mine, other = start, start.clone(), start.clone()
    generators = [torch.Generator().manual_seed(7) for _ in range(3)]
    for index, t in enumerate(reference.timesteps):
        ref, ref_x0 = reference.step(learned_output(ref, t, variance_type), t, ref, generator=generators[0])[:2]
        noise = fs.randn_tensor(mine.shape, generator=generators[1], dtype=dtype)
        mine, state, x0 = ours.step(state, learned_output(mine, t, variance_type), mine, noise=noise, denoised=True)
        step = dropped.step(learned_output(other, t, variance_type), t, other, generator=generators[2])
        other = step.prev_sample
        for got, expected in ((mine, ref), (x0, ref_x0), (other, ref), (step.pred_original_sample, ref_x0)):
            assert got.dtype == expected.dtype
            torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=lambda m, i=index: f"step {i}: {m}")


def test_learned_range_at_timestep_0_on_the_graph_path() -> None:
    """Without the host's cursor (compiled and transformed code), a learned variance's noise is selected away at
    timestep 0 with `torch.where`: the same result as the eager step, which skips it."""
    sched = fs.DDPM(**DEEPFLOYD_IF)
    sample = latents((2, 3, 8, 8))
    eager = sched.init(sample=sample, timesteps=CUSTOM)
    graph = eager.replace(cursor=None)
    x, y = sample, sample.clone()
    generator = torch.Generator().manual_seed(3)
    for _ in CUSTOM:
        t = sched.timestep(eager)
        noise = fs.randn_tensor(x.shape, generator=generator)
        x, eager = sched.step(eager, learned_output(x, t, "learned_range"), x, noise=noise)
        y, graph = sched.step(graph, learned_output(y, t, "learned_range"), y, noise=noise)
        assert torch.equal(x, y)


def test_a_learned_variance_needs_its_channels() -> None:
    sched = fs.DDPM(variance_type="learned_range")
    sample = latents((1, 3, 4, 4))
    state = sched.init(4, sample=sample)
    with pytest.raises(ValueError, match=r"variance_type='learned_range'.*twice its channels"):
        sched.step(state, toy_model(sample, 999), sample, noise=torch.zeros_like(sample))


def test_the_ddpm_drop_in_draws_no_noise_at_timestep_0() -> None:
    """diffusers draws nothing at timestep 0: the generator a pipeline passes is left where diffusers leaves it."""
    reference = diffusers.DDPMScheduler(timestep_spacing="linspace")
    ours = drop_in.as_diffusers(reference)
    generators = []
    for scheduler in (reference, ours):
        scheduler.set_timesteps(5)
        assert int(scheduler.timesteps[-1]) == 0
        generator, sample = torch.Generator().manual_seed(0), latents((1, 4, 8, 8))
        for t in scheduler.timesteps:
            sample = scheduler.step(toy_model(sample, t), t, sample, generator=generator).prev_sample
        generators.append(generator)
    assert torch.equal(generators[1].get_state(), generators[0].get_state())


@pytest.mark.parametrize("name", ["DDIMScheduler", "DDPMScheduler"])
def test_drop_ins_step_from_the_timestep_they_are_given(name: str) -> None:
    """diffusers computes these steps from the timestep alone: a loop that skips, repeats or leaves the table (or,
    for DDPM, has set none) steps as diffusers does; and neither has the begin index or sigmas diffusers lacks."""
    reference = getattr(diffusers, name)()
    ours = drop_in.as_diffusers(reference)
    assert not any(hasattr(ours, attribute) for attribute in ("set_begin_index", "step_index", "sigmas"))
    for scheduler in (reference, ours):
        scheduler.set_timesteps(10)
    table = reference.timesteps
    calls = [table[0], table[3], table[3], torch.tensor(123), table[1], table[9]]
    if name == "DDPMScheduler":
        calls = [table[0], table[3], table[3], table[1], table[9]]  # diffusers' DDPM fails off its table
    samples = [latents((1, 4, 8, 8)), latents((1, 4, 8, 8))]
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)]
    for index, t in enumerate(calls):
        for side, scheduler in enumerate((reference, ours)):
            samples[side] = scheduler.step(toy_model(samples[side], t), t, samples[side], generator=generators[side])[0]
        assert torch.equal(samples[1], samples[0]), f"call {index} at {int(t)}"
    fresh = [diffusers.DDPMScheduler(), drop_in.DDPMScheduler()]  # no set_timesteps: DDPM steps t -> t - 1
    outputs = [
        scheduler.step(samples[0], torch.tensor(500), samples[0], generator=torch.Generator().manual_seed(2))[0]
        for scheduler in fresh
    ]
    assert torch.equal(outputs[1], outputs[0])


def test_ddim_drop_in_takes_variance_noise() -> None:
    """`step(..., eta=1.0, variance_noise=z)` (CycleDiffusion's call) adds the given noise, as diffusers does."""
    reference = diffusers.DDIMScheduler()
    ours = drop_in.as_diffusers(reference)
    sample = latents((1, 4, 8, 8))
    for scheduler in (reference, ours):
        scheduler.set_timesteps(10)
    outputs = []
    for scheduler in (reference, ours):
        x = sample
        for t in scheduler.timesteps[:3]:
            x = scheduler.step(toy_model(x, t), t, x, eta=1.0, variance_noise=torch.tanh(x)).prev_sample
        outputs.append(x)
    assert torch.equal(outputs[1], outputs[0])
    with pytest.raises(ValueError, match="Cannot pass both generator and variance_noise"):
        t = ours.timesteps[0]
        ours.step(sample, t, sample, eta=1.0, variance_noise=sample, generator=torch.Generator())
