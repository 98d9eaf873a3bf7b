"""Compilation: a whole loop through `torch.compile(step, fullgraph=True)` is one graph with no recompiles and equals
eager; `SamplingLoop` runs the hand-written loop eagerly and its compiled path equals it (the CUDA graph mode is
checked on the GPU by `benchmarks/suite.py`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch._dynamo.testing
import torch.utils._pytree as pytree

import functional_sched as fs

from ..parity import calls as schedule_calls
from ..parity import conditioned_model, latents
from ..requests import run_loop, start
from ..selection import configs
from ..spec import Case

LOOP_SHAPE = (2, 4, 6, 6)


def compiled_loop(case: Case, backend: str) -> None:
    """A whole loop through `torch.compile(step, fullgraph=True)`: one graph, no recompiles, equal to eager (bit
    for bit with the eager backend; within float32 rounding with inductor, which may contract a * b + c)."""
    sched, state, sample = start(case)
    steps = schedule_calls(sched, state)
    eager, eager_state = run_loop(case, sched, state, sample, steps, generator=torch.Generator().manual_seed(1))

    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled_step = torch.compile(sched.step, fullgraph=True, backend=counter)
    calls = itertools.count()

    def step_then_freeze(*args: Any, **kwargs: Any) -> Any:
        result = compiled_step(*args, **kwargs)
        if next(calls) == 0:
            torch.compiler.set_stance("fail_on_recompile")  # any later recompile raises
        return result

    torch._dynamo.utils.counters.clear()
    try:
        compiled, compiled_state = run_loop(
            case, sched, state, sample, steps, generator=torch.Generator().manual_seed(1), step_fn=step_then_freeze
        )
    finally:
        torch.compiler.set_stance("default")

    assert next(calls) == steps
    assert counter.frame_count == 1, f"compiled {counter.frame_count} times"
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    if backend != "eager" and case.spec.decisions_follow_rounding:
        assert_same_solve(compiled[-1], eager[-1])
        compiled, eager = compiled[-1:], eager[-1:]
    for index, (ours, ref) in enumerate(zip(compiled, eager, strict=True)):
        if backend == "eager":
            assert torch.equal(ours, ref), f"step {index}"
        else:
            scale = ref.abs().max().item()
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6 * scale, msg=f"step {index}")
    assert pytree.tree_structure(compiled_state) == pytree.tree_structure(eager_state)
    assert torch.equal(compiled_state.step_index, eager_state.step_index)


#: How far a loop whose decisions follow its rounding (`Spec.decisions_follow_rounding`) may end from eager's once
#: inductor rounds otherwise: two solves of one error tolerance (the configs' rtol is 0.01 to 0.05).
DECISIONS_TOLERANCE = 1e-2


def assert_same_solve(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Two whole solves of one problem (a compiled and an eager one) end within `DECISIONS_TOLERANCE` of each other."""
    scale = reference.abs().max().item()
    torch.testing.assert_close(ours, reference, rtol=0, atol=DECISIONS_TOLERANCE * scale)


def linear_denoiser(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """Elementwise and free of transcendental functions, so a compiled copy rounds exactly as the eager one."""
    t = timestep.to(sample.dtype).view(-1, *([1] * (sample.dim() - 1)))
    return sample * (0.3 + t / 2000) - 0.2 * embeds


def hand_loop(
    sched: Any,
    denoiser: Any,
    x: torch.Tensor,
    embeds: torch.Tensor,
    guidance: float | None,
    noise: Any,
    **schedule: Any,
) -> torch.Tensor:
    """The loop `SamplingLoop` must equal, written out: scale, model (classifier-free guidance), step."""
    state = sched.init(sample=x, **schedule)
    for index in range(schedule_calls(sched, state)):
        model_input, t = sched.scale_model_input(state, x), sched.timestep(state)
        if guidance is None:
            output = denoiser(model_input, t, embeds)
        else:
            uncond, cond = denoiser(torch.cat([model_input] * 2), torch.cat([t, t]), embeds).chunk(2)
            output = uncond + guidance * (cond - uncond)
        x, state = sched.step(state, output, x, noise=None if noise is None else noise[index])
    return x


def loop_inputs(case: Case, guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Latents, conditioning (negative rows then positive when guided), every step's noise, and the schedule."""
    x = latents(LOOP_SHAPE, torch.float32, seed=1)
    embeds = latents(((2 if guided else 1) * LOOP_SHAPE[0], *LOOP_SHAPE[1:]), torch.float32, seed=2)
    schedule = case.init_kwargs(6)
    sched = case.scheduler()
    steps = schedule_calls(sched, sched.init(sample=x, **schedule))
    noise = latents((steps, *LOOP_SHAPE), torch.float32, seed=3) if sched.stochastic else None
    return x, embeds, noise, schedule


class Compile:
    """One graph per loop, no recompiles, compiled == eager; the `SamplingLoop` driver."""

    @pytest.fixture(autouse=True)
    def fresh_dynamo(self) -> Iterator[None]:
        """Each test starts compiling from scratch and leaves no compiled code or stance behind (a test whose calls
        hit another test's compiled graphs would prove nothing about its own)."""
        torch._dynamo.reset()
        yield
        torch.compiler.set_stance("default")
        torch._dynamo.reset()

    @configs("every")
    def test_compiles_fullgraph_without_recompiles(self, case: Case) -> None:
        compiled_loop(case, "eager")

    @configs("every", per_base=True)  # fullgraph without recompiles on every class: the column above
    def test_compiles_with_inductor(self, case: Case) -> None:
        compiled_loop(case, "inductor")

    @configs("every")
    def test_sampling_loop_is_the_hand_written_loop(self, case: Case) -> None:
        for guidance in (4.5, None):
            x, embeds, noise, schedule = loop_inputs(case, guided=guidance is not None)
            loop = fs.SamplingLoop(case.scheduler(), conditioned_model, guidance_scale=guidance)
            assert loop.resolved_mode(x) == "eager"  # auto, off CUDA
            x_before = x.clone()
            ours = loop(x, embeds, noise=noise, **schedule)
            assert torch.equal(
                ours, hand_loop(case.scheduler(), conditioned_model, x, embeds, guidance, noise, **schedule)
            )
            assert torch.equal(x, x_before), "the loop wrote into its input"

    @configs("every", per_base=True)
    def test_sampling_loop_compiled_equals_eager(self, case: Case) -> None:
        """One graph for the whole run (every step, and a second call with other inputs), bit-equal to eager with a
        denoiser the compiler cannot round otherwise; with `conditioned_model` (tanh, cos and sin, which inductor
        rounds its own way, and the loop carries on), within 1e-4 of the loop's scale."""
        x, embeds, noise, schedule = loop_inputs(case, guided=True)
        counter = torch._dynamo.testing.CompileCounter()
        loop = fs.SamplingLoop(case.scheduler(), linear_denoiser, guidance_scale=3.0, mode="compile")
        loop._compiled_step = torch.compile(loop._step, fullgraph=True, backend=counter)  # counts graphs
        eager = fs.SamplingLoop(case.scheduler(), linear_denoiser, guidance_scale=3.0, mode="eager")
        for seed in (1, 7):
            x = latents(LOOP_SHAPE, torch.float32, seed=seed)
            assert torch.equal(loop(x, embeds, noise=noise, **schedule), eager(x, embeds, noise=noise, **schedule))
        assert counter.frame_count == 1
        inductor = fs.SamplingLoop(case.scheduler(), conditioned_model, guidance_scale=3.0, mode="compile")
        reference = hand_loop(case.scheduler(), conditioned_model, x, embeds, 3.0, noise, **schedule)
        got = inductor(x, embeds, noise=noise, **schedule)
        linear = fs.SamplingLoop(case.scheduler(), linear_denoiser, guidance_scale=3.0, mode="compile")
        linear_got, eager_got = linear(x, embeds, noise=noise, **schedule), eager(x, embeds, noise=noise, **schedule)
        if case.spec.decisions_follow_rounding:
            assert_same_solve(got, reference)
            assert_same_solve(linear_got, eager_got)
        else:
            torch.testing.assert_close(got, reference, rtol=0, atol=1e-4 * reference.abs().max().item())
            assert torch.equal(linear_got, eager_got)
