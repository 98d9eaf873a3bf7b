"""`SamplingLoop`: a whole sampling loop (scale the input, call the denoiser, classifier-free guidance, step) run
eagerly, as compiled steps, or captured once into a CUDA graph and replayed with static buffers.

    loop = SamplingLoop(sched, denoiser, guidance_scale=5.0)          # mode="auto": a CUDA graph on CUDA, else eager
    latents = loop(noise, negative_and_positive_embeds, num_inference_steps=50)
    latents = loop(latents, embeds, state=state)                      # or from a state, at the step it is at

The graph mode compiles one step (`torch.compile(fullgraph=True)`, inductor) and captures the Python loop of the
remaining steps in one `torch.cuda.CUDAGraph`, once per state layout, step count and shapes; each call makes its
state outside the capture, copies it and its inputs into the graph's static buffers, replays the graph, and returns
a copy of the static output. It does not use `mode="reduce-overhead"`: on
torch 2.11 that mode handed out output buffers that its next call overwrote while they were still read (pytorch
#152887). Where no graph can be used (no CUDA device, or more distinct shapes and schedules than `max_graphs`) the
loop falls back to compiled steps (`mode="graph"` on a CPU raises instead). Every mode computes the same loop, the
eager one being the reference: on the CPU the scheduler's part of a compiled step rounds exactly as eager, and a
denoiser the compiler rounds otherwise (fused transcendental functions) stays within float32 rounding of it.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from . import checks, host
from .noise import loop_noise
from .scheduler import check_scheduler

#: denoiser(model_input [R', ...], timestep [R'], *conditioning) -> an output like model_input (R' = 2R when guided).
Denoiser = Callable[..., torch.Tensor]
MODES = ("auto", "graph", "compile", "eager")
#: inductor settings of the compiled step unless the caller gives its own: `combo_kernels` launches a step's
#: independent kernels (the latent update, the counter increments) as one, which halves a graph-replayed step on an
#: H100 (benchmarks/step_kernels.py: 2-3 kernels and 3.6-7.0 us a step become 1 kernel and 2.5-3.5 us at 1x16x128x128).
DEFAULT_COMPILE_OPTIONS: dict[str, Any] = {"combo_kernels": True}
_LOOPS = itertools.count()


def _with_own_code(function: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of `function` with a code object of its own. Dynamo keeps its compiled graphs per code object and
    stops compiling one after `torch._dynamo.config.recompile_limit` (8) guard failures; every loop instance (its
    scheduler, denoiser and shapes) would otherwise spend one shared budget."""
    code = function.__code__
    own = code.replace(co_name=f"{code.co_name}_loop{next(_LOOPS)}")
    return types.FunctionType(own, function.__globals__, own.co_name, function.__defaults__, function.__closure__)


def _signature(tensor: torch.Tensor) -> tuple[Any, ...]:
    return tuple(tensor.shape), tensor.dtype, str(tensor.device)


class _Graph:
    """One captured loop: static inputs, the graph, and its static output."""

    def __init__(
        self,
        run: Callable[..., torch.Tensor],
        state: Any,
        steps: int,
        latents: torch.Tensor,
        conditioning: Sequence[torch.Tensor],
        noise: torch.Tensor | None,
    ) -> None:
        self.state = pytree.tree_map(torch.clone, state)  # the static state: leaves only, no cursor
        self.steps = steps
        self.latents = latents.clone()
        self.conditioning = [value.clone() for value in conditioning]
        self.noise = None if noise is None else noise.clone()
        side = torch.cuda.Stream(device=latents.device)
        side.wait_stream(torch.cuda.current_stream(latents.device))
        with torch.cuda.stream(side):  # compile and autotune outside the capture
            run(self.state, self.latents, self.conditioning, self.noise)
        torch.cuda.current_stream(latents.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), host.capturing():
            self.output = run(self.state, self.latents, self.conditioning, self.noise)

    def __call__(
        self, state: Any, latents: torch.Tensor, conditioning: Sequence[torch.Tensor], noise: torch.Tensor | None
    ) -> torch.Tensor:
        """Replay from `state` (copied into the static state), or, given None, from the static state as it is."""
        if state is not None:
            for static, value in zip(pytree.tree_leaves(self.state), pytree.tree_leaves(state), strict=True):
                static.copy_(value)
        self.latents.copy_(latents)
        for static, value in zip(self.conditioning, conditioning, strict=True):
            static.copy_(value)
        if noise is not None:
            self.noise.copy_(noise)  # type: ignore[union-attr]
        self.graph.replay()
        return self.output.clone()  # the static output is overwritten by the next replay


class SamplingLoop:
    """A sampling loop over one scheduler and one denoiser; see the module's docstring.

    With `guidance_scale`, each conditioning tensor holds the negative rows then the positive rows (2R rows), the
    denoiser sees the latents twice (`cat([x, x])`), and the output is `uncond + guidance_scale * (cond - uncond)`,
    as diffusers' pipelines combine it. A stochastic scheduler takes `noise=`: the noise of every step, [steps, R,
    ...], or a `torch.Generator` from which the loop draws it step by step as `randn_tensor` does.
    `compile_options` go to `torch.compile(options=...)` (default `DEFAULT_COMPILE_OPTIONS`; `{}` for inductor's own);
    `max_graphs` bounds the graphs kept (one per schedule and shapes), past which calls run compiled steps.
    """

    def __init__(
        self,
        scheduler: Any,
        denoiser: Denoiser,
        *,
        guidance_scale: float | None = None,
        mode: str = "auto",
        max_graphs: int = 8,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        owner = "SamplingLoop"
        check_scheduler(owner, scheduler)
        if not callable(denoiser):
            raise TypeError(f"{owner}: denoiser must be callable as denoiser(model_input, timestep, *conditioning).")
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"{owner}: mode must be one of {', '.join(MODES)}, got {checks.shown(mode)}.")
        if compile_options is not None and not isinstance(compile_options, Mapping):
            raise TypeError(
                f"{owner}: compile_options must be a dict of inductor options, got {checks.shown(compile_options)}."
            )
        self.scheduler = scheduler
        self.denoiser = denoiser
        self.guidance_scale = None if guidance_scale is None else checks.real(owner, "guidance_scale", guidance_scale)
        self.mode = mode
        self.max_graphs = checks.integer(owner, "max_graphs", max_graphs, 0)
        own_step = types.MethodType(_with_own_code(type(self)._step), self)
        options = DEFAULT_COMPILE_OPTIONS if compile_options is None else compile_options
        self._compiled_step = torch.compile(own_step, fullgraph=True, options=dict(options))
        self._graphs: dict[tuple[Any, ...], _Graph] = {}

    # ------------------------------------------------------------------ one step and the loop
    def _step(
        self, state: Any, latents: torch.Tensor, conditioning: Sequence[torch.Tensor], noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, Any]:
        sched = self.scheduler
        model_input = sched.scale_model_input(state, latents)
        timestep = sched.timestep(state)
        if self.guidance_scale is None:
            output = self.denoiser(model_input, timestep, *conditioning)
        else:
            both = self.denoiser(torch.cat([model_input, model_input]), torch.cat([timestep, timestep]), *conditioning)
            uncond, cond = both.chunk(2)
            output = uncond + self.guidance_scale * (cond - uncond)
        return sched.step(state, output, latents, noise=noise)

    def _loop(
        self,
        step: Callable[..., tuple[torch.Tensor, Any]],
        state: Any,
        steps: int,
        latents: torch.Tensor,
        conditioning: Sequence[torch.Tensor],
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        for index in range(steps):
            latents, state = step(state, latents, conditioning, None if noise is None else noise[index])
        return latents

    # ------------------------------------------------------------------ calls
    def resolved_mode(self, latents: torch.Tensor) -> str:
        """The mode a call with these latents runs in (`auto` resolved)."""
        if self.mode == "auto":
            return "graph" if latents.is_cuda else "eager"
        if self.mode == "graph" and not latents.is_cuda:
            raise ValueError(
                f"SamplingLoop: mode='graph' needs CUDA latents, got latents on {latents.device}; use mode='compile' "
                "or 'eager' (or 'auto', which picks eager off CUDA)."
            )
        return self.mode

    def __call__(
        self,
        latents: torch.Tensor,
        *conditioning: torch.Tensor,
        num_inference_steps: int | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        mu: float | None = None,
        noise: torch.Tensor | torch.Generator | None = None,
        state: Any = None,
    ) -> torch.Tensor:
        """The denoised latents after the rest of a schedule: a fresh one (given as `init` takes it), or `state`'s (a
        request begun elsewhere: an img2img start, a request handed over mid-loop), from the step it is at."""
        if checks.checking():
            self._check(latents, conditioning)
        schedule = {"num_inference_steps": num_inference_steps, "timesteps": timesteps, "sigmas": sigmas, "mu": mu}
        mode = self.resolved_mode(latents)
        inputs = (_signature(latents), tuple(_signature(value) for value in conditioning), noise is None)
        if state is None:
            # A fresh request of a schedule whose graph exists: the graph's static state is that fresh state (a
            # replay only reads it), so neither `init` nor copying a state in is needed.
            fresh = ("fresh", *inputs, self.scheduler.schedule(**schedule)) if mode == "graph" else None
            graph = self._graphs.get(fresh) if fresh is not None else None
            if graph is not None:
                noise = loop_noise("SamplingLoop", self.scheduler, noise, graph.steps, latents)
                return graph(None, latents, conditioning, noise)
            state = self.scheduler.init(sample=latents, **schedule)
        elif any(value is not None for value in schedule.values()):
            raise ValueError("SamplingLoop: give a schedule or a state to resume from, not both.")
        else:
            fresh = None
        steps = self.scheduler.steps_left(state)
        noise = loop_noise("SamplingLoop", self.scheduler, noise, steps, latents)
        if mode == "eager":
            return self._loop(self._step, state, steps, latents, conditioning, noise)
        key = fresh or (
            *inputs,
            pytree.tree_structure(state),
            tuple(_signature(leaf) for leaf in pytree.tree_leaves(state)),
            steps,
        )
        graph = self._graphs.get(key) if mode == "graph" else None
        if graph is None and mode == "graph" and len(self._graphs) < self.max_graphs:

            def run(
                start: Any, x: torch.Tensor, cond: Sequence[torch.Tensor], eps: torch.Tensor | None
            ) -> torch.Tensor:
                return self._loop(self._compiled_step, start, steps, x, cond, eps)

            graph = self._graphs[key] = _Graph(run, state, steps, latents, conditioning, noise)
        if graph is not None:
            return graph(state, latents, conditioning, noise)
        return self._loop(self._compiled_step, state, steps, latents, conditioning, noise)

    def _check(self, latents: torch.Tensor, conditioning: Sequence[torch.Tensor]) -> None:
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.dim() == 0:
            raise TypeError("SamplingLoop: latents must be a floating-point tensor with a leading rows dim.")
        rows = latents.shape[0] * (1 if self.guidance_scale is None else 2)
        for index, value in enumerate(conditioning):
            if not isinstance(value, torch.Tensor) or value.shape[:1] != (rows,) or value.device != latents.device:
                got = f"{list(value.shape)} on {value.device}" if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"SamplingLoop: conditioning[{index}] must have {rows} rows on {latents.device}"
                    + (" (negative rows, then positive)" if self.guidance_scale is not None else "")
                    + f", got {got}."
                )
