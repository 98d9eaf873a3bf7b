"""`SamplingLoop` on the CPU: noise drawn from a generator, bad calls refused clearly, `capturing()`. Every scheduler's
eager loop equals the hand-written loop and its compiled path equals eager: the conformance suite's compile column.
(The CUDA graph mode runs on the GPU: `benchmarks/suite.py --device cuda` checks it against the eager loop.)"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

import functional_sched as fs
from functional_sched.machinery.loop import SamplingLoop
from functional_sched.testing import latents
from functional_sched.testing.columns.compile import hand_loop, linear_denoiser

SHAPE = (2, 4, 6, 6)


def test_generator_noise_is_drawn_per_step_like_randn_tensor() -> None:
    sched = fs.FlowMatchEulerDiscrete(stochastic_sampling=True)
    x, embeds = latents(SHAPE, torch.float32, seed=1), latents(SHAPE, torch.float32, seed=2)
    generator = torch.Generator().manual_seed(11)
    drawn = torch.stack([fs.randn_tensor(SHAPE, generator=generator, dtype=torch.float32) for _ in range(5)])
    loop = SamplingLoop(sched, linear_denoiser)
    ours = loop(x, embeds, num_inference_steps=5, noise=torch.Generator().manual_seed(11))
    assert torch.equal(ours, hand_loop(sched, linear_denoiser, x, embeds, None, drawn, num_inference_steps=5))


def test_errors_say_what_to_do() -> None:
    flow, sde = fs.FlowMatchEulerDiscrete(), fs.DPMSolverMultistep(algorithm_type="sde-dpmsolver++")
    x, embeds = latents(SHAPE, torch.float32, seed=1), latents(SHAPE, torch.float32, seed=2)
    with pytest.raises(ValueError, match="mode must be one of auto, graph, compile, eager"):
        SamplingLoop(flow, linear_denoiser, mode="fast")
    with pytest.raises(ValueError, match=r"mode='graph' needs CUDA latents.*use mode='compile'"):
        SamplingLoop(flow, linear_denoiser, mode="graph")(x, embeds, num_inference_steps=4)
    with pytest.raises(ValueError, match="is deterministic; it takes no noise"):
        SamplingLoop(flow, linear_denoiser)(x, embeds, num_inference_steps=4, noise=torch.Generator())
    with pytest.raises(ValueError, match=r"draws fresh noise each step; pass noise="):
        SamplingLoop(sde, linear_denoiser)(x, embeds, num_inference_steps=4)
    with pytest.raises(ValueError, match=r"noise must be \[4, 2, 4, 6, 6\]"):
        SamplingLoop(sde, linear_denoiser)(x, embeds, num_inference_steps=4, noise=torch.zeros(3, *SHAPE))
    with pytest.raises(ValueError, match=r"conditioning\[0\] must have 4 rows.*negative rows, then positive"):
        SamplingLoop(flow, linear_denoiser, guidance_scale=2.0)(x, embeds, num_inference_steps=4)
    with pytest.raises(TypeError, match="guidance_scale must be a number"):
        SamplingLoop(flow, linear_denoiser, guidance_scale="7")  # type: ignore[arg-type]


def test_inside_capturing_steps_keep_to_the_device() -> None:
    """`capturing()` (what SamplingLoop wraps its CUDA graph capture in): a state stepped inside takes the device path
    (no host scalars a graph would bake in; the state it returns has no cursor), with the same results as outside."""
    sched = fs.DPMSolverMultistep()
    x, v = latents(SHAPE, torch.float32, seed=1), latents(SHAPE, torch.float32, seed=2)
    state = sched.init(6, sample=x)
    with fs.capturing():
        assert sched._cursor(state) is None
        inside, inside_state = sched.step(state, v, x)
    assert inside_state.cursor is None and sched._cursor(state) is not None
    outside, outside_state = sched.step(state, v, x)
    assert torch.equal(inside, outside) and outside_state.cursor is not None


def test_a_loop_resumes_from_a_state() -> None:
    """`SamplingLoop(state=...)`: a request begun elsewhere (here, three steps by hand) finishes as the whole loop."""
    sched = fs.UniPCMultistep()
    x, embeds = latents(SHAPE, torch.float32, seed=1), latents(SHAPE, torch.float32, seed=2)
    loop = SamplingLoop(sched, linear_denoiser)
    whole = loop(x, embeds, num_inference_steps=8)
    state, y = sched.init(8, sample=x), x
    for _ in range(3):
        y, state = sched.step(state, linear_denoiser(y, sched.timestep(state), embeds), y)
    assert torch.equal(loop(y, embeds, state=state), whole)
    with pytest.raises(ValueError, match="give a schedule or a state to resume from, not both"):
        loop(y, embeds, num_inference_steps=8, state=state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA graph mode needs CUDA")
@pytest.mark.parametrize("sched", [fs.FlowMatchEulerDiscrete(shift=3.0), fs.UniPCMultistep()], ids=["flow", "unipc"])
def test_graph_mode_replays_fresh_requests_and_given_states_as_eager(sched) -> None:
    """Graph mode on CUDA: a fresh request of a schedule whose graph exists replays it from the static state as
    captured (no `init`, no state copied in); a given state is copied in. Every call equals the eager loop (to
    the compiled step's rounding), a given state's call in between included."""
    graph = SamplingLoop(sched, linear_denoiser, mode="graph")
    eager = SamplingLoop(sched, linear_denoiser, mode="eager")
    *starts, embeds = [latents(SHAPE, torch.float32, seed=seed).cuda() for seed in range(4)]
    calls = [{"num_inference_steps": 6}] * 2 + [{"state": sched.init(6, sample=starts[2], begin_index=3)}]
    calls += [{"num_inference_steps": 6}, {"num_inference_steps": 5}]
    for x, kwargs in zip([*starts, starts[0], starts[1]], calls, strict=True):
        torch.testing.assert_close(graph(x, embeds, **kwargs), eager(x, embeds, **kwargs), rtol=1e-5, atol=1e-6)
