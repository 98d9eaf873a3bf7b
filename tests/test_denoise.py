"""`functional_sched.denoise`: the loop as one function. Its transforms (vmap, grad, checkpointing, modes, fake
tensors, export, compile) are the conformance suite's composability column; here, what it returns and refuses."""

from __future__ import annotations

import re

import pytest
import torch

import functional_sched as fs
from functional_sched.testing import plain_loop

STEPS = 6


def manual(sched, sample, noise=None, steps=STEPS, **init):
    """The loop written out: the sample after each step, each step's x0 estimate, and the final state."""
    state = sched.init(STEPS, sample=sample, **init)
    samples, estimates = [sample], []
    for index in range(steps):
        output = plain_loop.model(sched.scale_model_input(state, sample), sched.timestep(state))
        step_noise = None if noise is None else noise[index]
        sample, state, x0 = sched.step(state, output, sample, noise=step_noise, denoised=True)
        samples.append(sample)
        estimates.append(x0)
    return samples, estimates, state


@pytest.mark.parametrize(
    "sched",
    [fs.FlowMatchEulerDiscrete(shift=3.0), fs.DPMSolverMultistep(algorithm_type="sde-dpmsolver++")],
    ids=["flow-euler", "dpm-sde"],
)
def test_returns_the_written_out_loop(sched) -> None:
    made = plain_loop.inputs(sched, STEPS)
    samples, estimates, state = manual(sched, **made)
    assert torch.equal(fs.denoise(sched, plain_loop.model, **made, num_inference_steps=STEPS), samples[-1])
    run = fs.denoise(
        sched, plain_loop.model, **made, num_inference_steps=STEPS, trajectory=(0, 2, STEPS), denoised=True
    )
    assert isinstance(run, fs.Denoising)
    assert torch.equal(run.trajectory, torch.stack([samples[0], samples[2], samples[STEPS]]))
    assert torch.equal(run.denoised, torch.stack(estimates))
    assert torch.equal(run.sample, samples[-1]) and torch.equal(run.state.step_index, state.step_index)
    assert run.trajectory[0].data_ptr() != made["sample"].data_ptr(), "the trajectory is the caller's own copy"


def test_a_returned_state_resumes_where_it_stopped() -> None:
    """Three steps with `return_state`, then the rest from that state (on the host path: its cursor came back)."""
    sched = fs.UniPCMultistep()
    made = plain_loop.inputs(sched, STEPS)
    whole = fs.denoise(sched, plain_loop.model, made["sample"], num_inference_steps=STEPS)
    first = fs.denoise(sched, plain_loop.model, made["sample"], num_inference_steps=STEPS, steps=3, return_state=True)
    assert first.state.cursor is not None and sched.steps_left(first.state) == STEPS - 3
    assert torch.equal(fs.denoise(sched, plain_loop.model, first.sample, state=first.state), whole)
    assert torch.equal(fs.denoise(sched, plain_loop.model, first.sample, state=first.state, steps=0), first.sample)


def test_generator_noise_is_drawn_as_the_loop_driver_draws_it() -> None:
    sched = fs.FlowMatchEulerDiscrete(stochastic_sampling=True)
    sample = plain_loop.inputs(sched, STEPS)["sample"]
    generator = torch.Generator().manual_seed(1)
    drawn = torch.stack([fs.randn_tensor(sample.shape, generator=generator, dtype=sample.dtype) for _ in range(STEPS)])
    expected = fs.denoise(sched, plain_loop.model, sample, num_inference_steps=STEPS, noise=drawn)
    got = fs.denoise(sched, plain_loop.model, sample, num_inference_steps=STEPS, noise=torch.Generator().manual_seed(1))
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_fn": None}, "model_fn must be callable"),
        ({"steps": STEPS + 1}, re.escape(f"steps must be in [0, {STEPS}]")),
        ({"steps": -1}, "steps must be in"),
        ({"trajectory": (0, STEPS + 1)}, "trajectory must be True, False or step counts"),
        ({"trajectory": (2, 1)}, "each step count once, in increasing order"),
        ({"denoised": (STEPS,)}, re.escape(f"step counts in [0, {STEPS})")),
        ({"denoised": "all"}, "denoised must be True, False or step counts"),
        ({"checkpoint": 0}, "checkpoint must be a positive number of steps"),
        ({"noise": torch.zeros(STEPS, *plain_loop.SHAPE)}, "is deterministic; it takes no noise"),
        ({"begin_index": STEPS}, re.escape(f"begin_index must be in [0, {STEPS})")),
        ({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match) -> None:
    sched = fs.UniPCMultistep()
    arguments = {"model_fn": plain_loop.model, "num_inference_steps": STEPS, **kwargs}
    with pytest.raises((TypeError, ValueError), match=match):
        fs.denoise(sched, arguments.pop("model_fn"), plain_loop.inputs(sched, STEPS)["sample"], **arguments)


def test_a_schedule_and_a_state_together_are_refused() -> None:
    sched = fs.UniPCMultistep()
    sample = plain_loop.inputs(sched, STEPS)["sample"]
    with pytest.raises(ValueError, match=r"give a schedule .* or a state to resume from, not both"):
        fs.denoise(sched, plain_loop.model, sample, state=sched.init(STEPS, sample=sample), num_inference_steps=STEPS)


def test_stochastic_loops_ask_for_noise() -> None:
    sched = fs.DPMSolverMultistep(algorithm_type="sde-dpmsolver++")
    with pytest.raises(ValueError, match=r"draws fresh noise each step; pass noise="):
        fs.denoise(sched, plain_loop.model, torch.zeros(plain_loop.SHAPE), num_inference_steps=STEPS)


def test_a_mapped_state_needs_its_step_count() -> None:
    """Under vmap a state that is the mapped input lost its cursor: its steps left are on the device only."""
    sched = fs.FlowMatchEulerDiscrete()
    sample = torch.zeros(2, *plain_loop.SHAPE)
    states = torch.func.vmap(lambda x: sched.init(STEPS, sample=x))(sample)
    with pytest.raises(ValueError, match="pass steps="):
        torch.func.vmap(lambda s, x: fs.denoise(sched, plain_loop.model, x, state=s))(states, sample)
    mapped = torch.func.vmap(lambda s, x: fs.denoise(sched, plain_loop.model, x, state=s, steps=STEPS))(states, sample)
    assert torch.equal(mapped[0], fs.denoise(sched, plain_loop.model, sample[0], num_inference_steps=STEPS))


def test_checkpointing_under_torch_func_grad_is_refused() -> None:
    sched = fs.FlowMatchEulerDiscrete()
    sample = torch.zeros(plain_loop.SHAPE, dtype=torch.float64)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return fs.denoise(sched, plain_loop.model, x, num_inference_steps=STEPS, checkpoint=2).sum()

    with pytest.raises(ValueError, match=r"torch.func.grad and vjp do not support; differentiate with autograd"):
        torch.func.grad(loss)(sample)


def test_init_inside_torch_compile_says_to_make_the_state_outside() -> None:
    sched = fs.DPMSolverMultistep()
    torch._dynamo.reset()
    run = torch.compile(
        lambda x: fs.denoise(sched, plain_loop.model, x, num_inference_steps=STEPS), fullgraph=True, backend="eager"
    )
    with pytest.raises(Exception, match="Make the state outside and pass it in"):
        run(torch.zeros(plain_loop.SHAPE))
    torch._dynamo.reset()
