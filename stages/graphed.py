"""`GraphedDenoise`: `Denoise` whose rounds replay a CUDA graph per batch-size bucket, as LLM servers do for decode.

A round of `step_many` stacks the requests' states (`batching.stack`), pads them to the smallest bucket that holds
their rows (`batching.pad`: copies of the first row, stepped and dropped), copies them, the latents, the
embeddings and the guidance scales into the bucket's static buffers, and replays the graph captured for that
bucket: the model on both guidance halves, guidance, and the scheduler's step, all rows at once. Each request's
results are then copied out of the static outputs (its latents and its state's per-row tensors), so no request
keeps a reference into a buffer the next round overwrites; its plan and counters are its own, advanced on the host
(`host.Rows`), so nothing is read back from the device.

One graph per bucket and layout (the latents' and embeddings' shapes, guided or not; every plan is padded to
`max_steps` steps, so any mix of step counts shares it), captured on first use from that round's inputs, with the
model run eagerly inside the capture (no compile). What a graph cannot take runs as `Denoise` does: a CPU device,
more rows than the largest bucket, a request with `guidance_rescale` or more than `max_steps` steps, a state the
host does not know (handed over, say), and, past `max_graphs`, a new layout.
On the CPU `capture=False` runs the same static-buffer round eagerly (what the tests check the copies with).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.utils._pytree as pytree

from functional_sched import batching
from functional_sched.machinery import host
from functional_sched.machinery.record import fields

from .denoise import Denoise, per_row_values, step_noise, to_device
from .request import Req

_DATA_FIELDS_SKIP = ("plan", "fingerprint", "step_index", "lower_order_nums")  # what a request gets back from itself


def _buckets(value: Any) -> tuple[int, ...]:
    sizes = tuple(sorted({int(size) for size in value}))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"GraphedDenoise: buckets must be positive batch sizes, got {value!r}.")
    return sizes


def _layout(tree: Any) -> tuple[Any, ...]:
    """What a graph's buffers fix of these tensors: their shapes but for the rows (dim 0), dtypes and devices."""
    return tuple((tuple(leaf.shape[1:]), leaf.dtype, leaf.device) for leaf in pytree.tree_leaves(tree))


def _rows_of(static: torch.Tensor, rows: int) -> torch.Tensor:
    """The first `rows` rows of a static buffer (all of a 0-d one: the fingerprint, the same for every row)."""
    return static[:rows] if static.dim() else static


class _Round:
    """One bucket's static buffers, the graph captured over them (or, uncaptured, the round run on them eagerly),
    and its static outputs. A round writes its requests' rows into the first rows of the buffers; the rows past
    them keep what an earlier round (or the capture's padding) left, valid inputs whose outputs are dropped."""

    def __init__(self, run: Callable[..., tuple[torch.Tensor, Any]], inputs: dict[str, Any], capture: bool) -> None:
        self.run = run
        self.inputs = {  # contiguous copies: the graph's own
            name: None if value is None else pytree.tree_map(torch.clone, value) for name, value in inputs.items()
        }
        self.scales: tuple[float, ...] | None = None  # the per-row guidance scales the static buffer holds
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            device = inputs["latents"].device
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), host.capturing():  # warm-up: the kernels' first calls, outside the graph
                run(**self.inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph), host.capturing():
                self.outputs = run(**self.inputs)

    def __call__(self, rows: int, state: Any, tensors: dict[str, list[torch.Tensor]], scales: tuple[float, ...]) -> Any:
        """Replay over these rows: the per-row `state` and the per-request `tensors` written into the first `rows`
        rows (one copy or concatenation each), the guidance scales copied to the device only when they change."""
        for static, value in zip(pytree.tree_leaves(self.inputs["state"]), pytree.tree_leaves(state), strict=True):
            _rows_of(static, rows).copy_(value)
        for name, values in tensors.items():
            torch.cat(values, out=self.inputs[name][:rows])
        if scales != self.scales:  # only when the requests change
            static = self.inputs["scales"]
            column = to_device(torch.tensor(scales, dtype=static.dtype), static.device)
            static[:rows].copy_(column.view(-1, *static.shape[1:]))
            self.scales = scales
        if self.graph is None:
            with host.capturing():  # as the graph runs it: on the device, no host reads
                return self.run(**self.inputs)
        self.graph.replay()
        return self.outputs


@attrs.frozen(eq=False)
class GraphedDenoise(Denoise):
    """`Denoise` with its batched rounds replayed from CUDA graphs, one per bucket of `buckets` (batch sizes in
    rows); see the module's docstring."""

    buckets: tuple[int, ...] = attrs.field(default=(1, 2, 4, 8, 16, 32), converter=_buckets)
    max_steps: int = 64
    capture: bool = True
    max_graphs: int = 16
    _rounds: dict[tuple[Any, ...], _Round] = attrs.field(factory=dict, init=False, repr=False)
    # One round at a time: the static buffers are the stage's, whichever thread steps requests through it.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def _step_batch(self, key: tuple[Any, ...], reqs: list[Req], labels: list[str]) -> list[Req]:
        sched = key[0]
        counts = [req.rows for req in reqs]
        rows = sum(counts)
        bucket = next((size for size in self.buckets if size >= rows), None)
        known = [host.cursors(req.state, getattr(req.state, "lower_order_nums", None)) for req in reqs]
        device = reqs[0].latents.device
        if (
            bucket is None
            or (self.capture and device.type != "cuda")
            or any(req.guidance_rescale > 0 for req in reqs)
            or any(cursors is None for cursors in known)
            or any(req.state.plan.timesteps.shape[1] > self.max_steps for req in reqs)
        ):
            return super()._step_batch(key, reqs, labels)
        guided = reqs[0].guided
        state = batching.pad(batching.stack([req.state for req in reqs]), rows, self.max_steps)  # per row
        tensors = {"latents": [req.latents for req in reqs], "embeds": [req.prompt_embeds for req in reqs]}
        if guided:
            tensors["negative"] = [req.negative_prompt_embeds for req in reqs]
        if sched.stochastic:
            tensors["noise"] = [step_noise(sched, req) for req in reqs]
        scales = per_row_values([req.guidance_scale for req in reqs], counts)
        layout = (bucket, sched, _layout(state), tuple((name, _layout(values[0])) for name, values in tensors.items()))
        with self._lock:
            stepped = self._replayed(layout, sched, guided, bucket, rows, counts, state, tensors, scales, reqs, known)
        return super()._step_batch(key, reqs, labels) if stepped is None else stepped

    def _replayed(
        self,
        layout: tuple[Any, ...],
        sched: Any,
        guided: bool,
        bucket: int,
        rows: int,
        counts: list[int],
        state: Any,
        tensors: dict[str, list[torch.Tensor]],
        scales: tuple[float, ...],
        reqs: list[Req],
        known: list[Any],
    ) -> list[Req] | None:
        """The round through the layout's graph (captured now if it is new), its results copied out; None where a
        new layout would pass `max_graphs`."""
        found = self._rounds.get(layout)
        if found is None:
            if len(self._rounds) >= self.max_graphs:
                return None
            first = {name: _padded(torch.cat(values), bucket) for name, values in tensors.items()}
            like = first["latents"]
            column = torch.tensor(scales + scales[:1] * (bucket - rows), dtype=like.dtype, device=like.device)
            inputs = {
                "state": batching.pad(state, bucket, self.max_steps),
                "negative": None,
                "noise": None,
                **first,
                "scales": column.view(-1, *([1] * (like.dim() - 1))),
            }
            found = self._rounds[layout] = _Round(self._round(sched, guided), inputs, self.capture)
        out_latents, out_state = found(rows, state, tensors, scales)
        return self._copied_out(reqs, counts, rows, known, out_latents, out_state)

    def _round(self, sched: Any, guided: bool) -> Callable[..., tuple[torch.Tensor, Any]]:
        """The captured round: scale, the model (both guidance halves at once), guidance, the step."""
        model = self.model

        def run(
            state: Any,
            latents: torch.Tensor,
            embeds: torch.Tensor,
            negative: torch.Tensor | None,
            scales: torch.Tensor,
            noise: torch.Tensor | None,
        ) -> tuple[torch.Tensor, Any]:
            model_input = sched.scale_model_input(state, latents)
            timestep = sched.timestep(state)
            if guided:
                both = model(
                    torch.cat([model_input, model_input]),
                    torch.cat([timestep, timestep]),
                    torch.cat([negative, embeds]),
                )
                uncond, cond = both.chunk(2)
                output = uncond + scales.to(cond.dtype) * (cond - uncond)  # as `combine_guidance` rounds it
            else:
                output = model(model_input, timestep, embeds)
            return sched.step(state, output, latents, noise=noise)

        return run

    @staticmethod
    def _copied_out(
        reqs: list[Req],
        counts: list[int],
        rows: int,
        known: list[Any],
        out_latents: torch.Tensor,
        out_state: Any,
    ) -> list[Req]:
        """Each request's results, copied out of the static outputs: its latents and its state's per-row tensors
        (one copy each for all requests), its plan and counters its own, advanced on the host."""
        latents = out_latents[:rows].clone()
        copies = {
            name: pytree.tree_map(lambda value: value[:rows].clone(), getattr(out_state, name))
            for name in fields(out_state)
            if name not in _DATA_FIELDS_SKIP
        }
        warmup = getattr(out_state, "lower_order_nums", None)
        warmup = None if warmup is None else warmup[:rows]
        step_index = out_state.step_index[:rows]
        parts = tuple(cursor for cursors in known for cursor in cursors)
        last_level = out_state.plan.coefficients.shape[2] - 1
        stepped = host.Rows(parts, out_state.plan, out_state.step_index, None).advanced(step_index, warmup, last_level)
        counters = (
            {"step_index": step_index} if warmup is None else {"step_index": step_index, "lower_order_nums": warmup}
        )
        state = out_state.replace(**copies, **counters, cursor=stepped)
        pieces = batching.split(state, counts)
        return [
            req.evolve(latents=row, state=piece)
            for req, row, piece in zip(reqs, latents.split(counts), pieces, strict=True)
        ]


def _padded(value: torch.Tensor, rows: int) -> torch.Tensor:
    """`value` grown to `rows` rows with copies of its first row."""
    extra = rows - value.shape[0]
    return value if extra == 0 else torch.cat([value, value[:1].expand(extra, *value.shape[1:])])
