"""`SamplingLoop` on the CPU: the eager loop is the hand-written loop, compiled steps equal it, and bad calls get clear
errors. (The CUDA graph mode runs on the GPU: `benchmarks/suite.py --device cuda` checks it against the eager loop.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo.testing
from _support import FACTORIES, Case, is_stochastic, latents

import functional_sched as fs
from functional_sched.machinery.loop import SamplingLoop

SHAPE = (2, 4, 6, 6)


def linear_denoiser(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """Elementwise and free of transcendental functions, so a compiled copy rounds exactly as the eager one."""
    t = timestep.to(sample.dtype).view(-1, *([1] * (sample.dim() - 1)))
    return sample * (0.3 + t / 2000) - 0.2 * embeds


def tanh_denoiser(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    t = timestep.to(sample.dtype).view(-1, *([1] * (sample.dim() - 1)))
    return torch.tanh(sample) * (0.5 + t / 1000) + 0.1 * torch.sin(embeds)


def hand_loop(
    sched: Any,
    denoiser: Any,
    x: torch.Tensor,
    embeds: torch.Tensor,
    guidance: float | None,
    noise: Any,
    **schedule: Any,
) -> torch.Tensor:
    state = sched.init(sample=x, **schedule)
    for index in range(len(sched.timesteps(state))):
        model_input, t = sched.scale_model_input(state, x), sched.timestep(state)
        if guidance is None:
            output = denoiser(model_input, t, embeds)
        else:
            uncond, cond = denoiser(torch.cat([model_input] * 2), torch.cat([t, t]), embeds).chunk(2)
            output = uncond + guidance * (cond - uncond)
        x, state = sched.step(state, output, x, noise=None if noise is None else noise[index])
    return x


def _inputs(case: Case, guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    x = latents(SHAPE, torch.float32, seed=1)
    embeds = latents(((2 if guided else 1) * SHAPE[0], *SHAPE[1:]), torch.float32, seed=2)
    schedule = case.init_kwargs(6)
    steps = len(case.scheduler().timesteps(case.scheduler().init(sample=x, **schedule)))
    noise = latents((steps, *SHAPE), torch.float32, seed=3) if is_stochastic(case.scheduler()) else None
    return x, embeds, noise, schedule


@pytest.mark.parametrize("guided", [True, False], ids=["cfg", "no-cfg"])
@pytest.mark.parametrize("case", FACTORIES)
def test_eager_loop_is_the_hand_written_loop(case: Case, guided: bool) -> None:
    x, embeds, noise, schedule = _inputs(case, guided)
    guidance = 4.5 if guided else None
    loop = SamplingLoop(case.scheduler(), tanh_denoiser, guidance_scale=guidance)
    assert loop.resolved_mode(x) == "eager"  # auto, off CUDA
    x_before = x.clone()
    ours = loop(x, embeds, noise=noise, **schedule)
    assert torch.equal(ours, hand_loop(case.scheduler(), tanh_denoiser, x, embeds, guidance, noise, **schedule))
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("case", [FACTORIES[0], FACTORIES[4], FACTORIES[9]])
def test_compiled_steps_equal_the_eager_loop_without_recompiling(case: Case) -> None:
    """One graph for the whole run (every step and a second call with other inputs), bit-equal to eager with a
    denoiser the compiler cannot round differently; with tanh/sin in the denoiser, equal to float32 rounding."""
    torch._dynamo.reset()
    x, embeds, noise, schedule = _inputs(case, guided=True)
    counter = torch._dynamo.testing.CompileCounter()
    loop = SamplingLoop(case.scheduler(), linear_denoiser, guidance_scale=3.0, mode="compile")
    loop._compiled_step = torch.compile(loop._step, fullgraph=True, backend=counter)  # counts graphs, eager kernels
    eager = SamplingLoop(case.scheduler(), linear_denoiser, guidance_scale=3.0, mode="eager")
    for seed in (1, 7):
        x = latents(SHAPE, torch.float32, seed=seed)
        assert torch.equal(loop(x, embeds, noise=noise, **schedule), eager(x, embeds, noise=noise, **schedule))
    assert counter.frame_count == 1
    inductor = SamplingLoop(case.scheduler(), tanh_denoiser, guidance_scale=3.0, mode="compile")
    reference = hand_loop(case.scheduler(), tanh_denoiser, x, embeds, 3.0, noise, **schedule)
    torch.testing.assert_close(inductor(x, embeds, noise=noise, **schedule), reference, rtol=1e-5, atol=1e-5)
    linear = SamplingLoop(case.scheduler(), linear_denoiser, guidance_scale=3.0, mode="compile")
    assert torch.equal(linear(x, embeds, noise=noise, **schedule), eager(x, embeds, noise=noise, **schedule))


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


def test_inside_capturing_states_keep_to_the_device() -> None:
    """`capturing()` (what SamplingLoop wraps its CUDA graph capture in): no shared counters or zeros handed out, no
    host scalars, and the same results as outside."""
    sched = fs.DPMSolverMultistep()
    x, v = latents(SHAPE, torch.float32, seed=1), latents(SHAPE, torch.float32, seed=2)
    outside = sched.init(6, sample=x)
    with fs.capturing():
        inside = sched.init(6, sample=x)
        assert inside.step_index is not outside.step_index and inside.history[0] is not outside.history[0]
        y, state = sched.step(inside, v, x)
        assert sched._host_entry(state, state.lower_order_nums) is None
    assert sched.init(6, sample=x).history[0] is outside.history[0]  # shared again outside
    y_, _ = sched.step(outside, v, x)
    assert torch.equal(y, y_)
