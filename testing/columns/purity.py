"""Purity and structure: `step` writes into none of its inputs, the same inputs give the same outputs, and a state
keeps one structure (fields, shapes, dtypes, devices) after every step (optax's
`test_state_shape_dtype_shard_stability`). Requests own their tensors: no write into what one request's caller can
reach changes another request, and a caller may overwrite the buffers it passed to a step once the step returned."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.utils._pytree as pytree
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import functional_sched as fs

from .. import strategies
from ..parity import calls
from ..requests import run_loop, same_state, start, step_inputs, tensor_leaves
from ..selection import configs, is_stochastic, keeps_outputs_as_given
from ..spec import Case, Spec
from .parity import GRID_SETTINGS

#: The in-place writes a caller may make into a tensor it holds ("index": one entry of the leading dim).
WRITES = ("add_", "mul_", "fill_", "zero_", "copy_", "index")
VALUES = (0.0, -1.0, 0.5, 3.0, 1e6, math.nan, math.inf)


def layout(state: Any) -> tuple[Any, list[tuple[str, torch.Size, torch.dtype, torch.device]]]:
    return pytree.tree_structure(state), [
        (path, leaf.shape, leaf.dtype, leaf.device) for path, leaf in tensor_leaves(state)
    ]


def reachable(case: Case, sched: Any, state: Any) -> dict[str, torch.Tensor | None]:
    """Every tensor a request's caller can reach through its state: the state's leaves and what the queries return
    (None for a query the state cannot answer, e.g. a finished one's timestep: the names never depend on it)."""
    found: dict[str, torch.Tensor | None] = dict(tensor_leaves(state))
    found.update({f"plan(){name}": table for name, table in tensor_leaves(sched.plan(**case.init_kwargs()))})
    if sched.timestep_table:
        found.update({"timesteps()": sched.timesteps(state), "sigmas()": sched.sigmas(state)})
    found["init_noise_sigma()"] = sched.init_noise_sigma(state)
    try:
        found["timestep()"] = sched.timestep(state)
    except Exception:  # this request's state, written into or finished
        found["timestep()"] = None
    return found


def scribble(data: st.DataObject, label: str, targets: dict[str, torch.Tensor | None]) -> None:
    """Up to three drawn in-place writes into `targets` (a write torch refuses, e.g. into an expanded view, is
    skipped: the caller would have got the error)."""
    drawn = st.tuples(
        st.sampled_from(sorted(targets)), st.sampled_from(WRITES), st.sampled_from(VALUES), st.integers(0, 99)
    )
    for name, how, value, seed in data.draw(st.lists(drawn, max_size=3), label=label):
        if targets[name] is not None:
            with contextlib.suppress(RuntimeError):
                write(targets[name], how, value, seed)


def write(tensor: torch.Tensor, how: str, value: float, seed: int) -> None:
    """One in-place write (`copy_`: random values from `seed`; `index`: entry `seed` of the leading dim)."""
    if not tensor.is_floating_point():
        value = int(value) if math.isfinite(value) else -1
    if how == "copy_":
        tensor.copy_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(seed)) * 100)
    elif how == "index" and tensor.dim() > 0:
        tensor[seed % tensor.shape[0]] = value
    elif how == "zero_":
        tensor.zero_()
    else:
        getattr(tensor, "fill_" if how == "index" else how)(value)


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, NaN equal to NaN (a drawn config may end in NaN: the reused run must have it in the same places)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def cursorless(state: Any) -> Any:
    """`state` through a pytree round trip, which drops its cursor: it steps on the device path."""
    return pytree.tree_unflatten(*pytree.tree_flatten(state))


def buffered_run(case: Case, *, reuse: bool) -> list[torch.Tensor]:
    """A request's sample after each step, fed fresh tensors each step; or (`reuse`) fed from the caller's own
    buffers, which the caller poisons (NaN) once each step returned, as it does the returned sample and x0."""
    sched, state, sample = start(case)
    generator, samples, buffers = torch.Generator().manual_seed(6), [], {}
    for _ in range(calls(sched, state)):
        inputs = {"sample": sample, **step_inputs(case, sched, state, sample, generator)}
        if not reuse:
            sample, state = sched.step(state, **inputs)
            samples.append(sample)
            continue
        inputs = {
            name: buffers.setdefault(name, torch.empty_like(given)).copy_(given) for name, given in inputs.items()
        }
        prev_sample, state, x0 = sched.step(state, **inputs, denoised=True)
        sample = prev_sample.clone()
        samples.append(sample)
        for tensor in (*buffers.values(), prev_sample, x0):
            tensor.fill_(math.nan)
    return samples


class Purity:
    """No input written, nothing hidden carried between calls, a state of fixed structure."""

    @configs("every")
    def test_step_writes_into_nothing(self, case: Case) -> None:
        sched, state, sample = start(case)
        samples, state = run_loop(case, sched, state, sample, 2, generator=torch.Generator().manual_seed(2))
        sample = samples[-1]  # a request a few steps in: multistep histories hold real values
        inputs = step_inputs(case, sched, state, sample, torch.Generator().manual_seed(3))
        watched = [("sample", sample), *inputs.items(), *tensor_leaves(state)]
        before = [(tensor.clone(), tensor._version) for _, tensor in watched]

        prev_sample, new_state = sched.step(state, sample=sample, **inputs)

        for (name, tensor), (copy, version) in zip(watched, before, strict=True):
            assert tensor._version == version, f"{name} was written in place"
            assert torch.equal(tensor, copy), f"{name} changed"
        assert prev_sample.data_ptr() != sample.data_ptr()
        again_sample, again_state = sched.step(state, sample=sample, **inputs)
        assert torch.equal(again_sample, prev_sample), "the same inputs gave another sample"
        assert same_state(again_state, new_state), "the same inputs gave another state"
        assert torch.equal(new_state.step_index, state.step_index + 1)

    @configs("every")
    def test_state_structure_is_stable(self, case: Case) -> None:
        for dtype in (torch.float32, torch.bfloat16):
            sched, state, sample = start(case, dtype=dtype)
            initial = layout(state)
            assert state.plan.coefficients.shape[-1] == sched.plan_columns, "the plan's layout is not plan_columns"
            assert all(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(state)), "a state holds tensors"
            generator = torch.Generator().manual_seed(4)
            for index in range(calls(sched, state)):
                expected = sched._output_dtype(sample)  # the sample's, or float32 where the reference keeps it
                sample, state = sched.step(state, sample=sample, **step_inputs(case, sched, state, sample, generator))
                assert sample.dtype == expected, f"{dtype}, step {index}: returned {sample.dtype}"
                assert layout(state) == initial, f"{dtype}, step {index}: the state changed structure"

    @configs("every")
    @settings(max_examples=25, **GRID_SETTINGS)
    @given(data=st.data())
    def test_request_isolation_under_writes_into_another(self, case: Case, data: st.DataObject) -> None:
        """Requests own their tensors (DESIGN.md): two requests A and B of one schedule and one scheduler object,
        stepped in turn, where A's caller writes in place, before and after each of A's steps, into all it can reach
        (A's state, its queries' answers, the buffers it passed, the x0 it got back): B's samples stay bit-identical
        to B's run alone. Drawn: inference mode or not, an emptied plan cache, when B starts. A may break."""
        self._isolation(case, data)

    @configs(where=is_stochastic)
    @settings(max_examples=25, **GRID_SETTINGS)
    @given(data=st.data())
    def test_request_isolation_under_writes_into_another_stochastic(self, case: Case, data: st.DataObject) -> None:
        """The same on the first stochastic config (noise buffers too)."""
        self._isolation(case, data)

    @staticmethod
    def _isolation(case: Case, data: st.DataObject) -> None:
        fs.clear_caches()  # a failure replays from the same process state
        sched, init_kwargs = case.scheduler(), case.init_kwargs()
        a_start, b_start = start(case, seed=0)[2], start(case, seed=1)[2]
        b_state = sched.init(sample=b_start, **init_kwargs)
        tables = (sched.timesteps(b_state).clone(), sched.sigmas(b_state).clone()) if sched.timestep_table else None
        steps = calls(sched, b_state)
        alone = run_loop(case, sched, b_state, b_start, steps, generator=torch.Generator().manual_seed(41))[0]
        inference = data.draw(st.booleans(), label="under torch.inference_mode()")
        # Without its cursor a state steps on the device path, reading its own plan and counters.
        begin = cursorless if data.draw(st.booleans(), label="on the device path") else lambda state: state
        joins = data.draw(st.integers(0, steps // 2), label="B starts after A's step")
        if data.draw(st.booleans(), label="clear_caches() after B alone"):
            fs.clear_caches()
        with torch.inference_mode() if inference else contextlib.nullcontext():
            a = [begin(sched.init(sample=a_start, **init_kwargs)), a_start.clone(), torch.Generator().manual_seed(40)]
            for turn in range(joins + steps):
                if turn == joins:
                    b_state, b_sample = begin(sched.init(sample=b_start, **init_kwargs)), b_start
                    b_generator = torch.Generator().manual_seed(41)
                if turn < steps:
                    a = Purity._scribbled_step(case, sched, data, a, f"A's step {turn}")
                if turn >= joins:
                    inputs = step_inputs(case, sched, b_state, b_sample, b_generator)
                    b_sample, b_state = sched.step(b_state, sample=b_sample, **inputs)
                    assert torch.equal(b_sample, alone[turn - joins]), f"B's step {turn - joins} differs from B alone"
                    if tables is not None:
                        assert torch.equal(sched.timesteps(b_state), tables[0]), "B's timesteps changed"
                        assert torch.equal(sched.sigmas(b_state), tables[1]), "B's sigmas changed"

    @staticmethod
    def _scribbled_step(case: Case, sched: Any, data: st.DataObject, request: list[Any], label: str) -> list[Any]:
        """One step of request [state, sample, generator], with drawn writes into all its caller can reach before
        and after it. The request may break (its state written into): it then stays where it was. What is drawn
        never depends on the library's answers, so hypothesis replays a failure as it found it."""
        state, sample, generator = request
        scribble(data, f"{label}, writes before", {**reachable(case, sched, state), "sample": sample})
        denoised = data.draw(st.booleans(), label=f"{label}, denoised=")
        inputs = dict.fromkeys(("model_output", "noise") if sched.stochastic else ("model_output",))
        returned = dict.fromkeys(("x0",) if denoised else ())
        with contextlib.suppress(Exception):
            inputs = step_inputs(case, sched, state, sample, generator)
            prev_sample, new_state, *x0 = sched.step(state, sample=sample, **inputs, denoised=denoised)
            request, returned = [new_state, prev_sample, generator], dict(zip(returned, x0, strict=True))
        targets = {
            **reachable(case, sched, request[0]),
            **{f"{name} (passed)": tensor for name, tensor in {"sample": sample, **inputs}.items()},
            **{f"{name} (returned)": tensor for name, tensor in returned.items()},
        }
        scribble(data, f"{label}, writes after", targets)
        return request

    @configs("every")
    def test_reused_caller_buffers_change_no_later_step(self, case: Case) -> None:
        """A caller may overwrite the sample, model output and noise buffers it passed to a step once the step
        returned (serving engines and CUDA graphs reuse buffers), and the sample and x0 it got back: no later step
        changes, so no state keeps the caller's tensor (e.g. a history holding the model output where the conversion
        is the identity, or UniPC's last sample). Also: asking for x0 (`denoised=True`) changes no sample."""
        self._buffers(case)

    @configs(where=keeps_outputs_as_given)
    def test_reused_caller_buffers_change_no_later_step_where_outputs_are_kept_as_given(self, case: Case) -> None:
        """The same on the first config whose history would hold the model's own output but for a copy."""
        self._buffers(case)

    @configs(slow=True)
    @settings(max_examples=60, **GRID_SETTINGS)
    @given(data=st.data())
    def test_reused_caller_buffers_change_no_later_step_on_drawn_configs(self, spec: Spec, data: st.DataObject) -> None:
        """The same on drawn configs: the tables may hold no config that keeps the caller's tensor by reference
        (e.g. DPM-Solver's data prediction with `prediction_type="sample"`)."""
        case = data.draw(strategies.cases(spec))
        try:
            start(case)
        except ValueError:
            reject()  # a schedule `init` refuses (the hostile-inputs column checks those)
        self._buffers(case)

    @staticmethod
    def _buffers(case: Case) -> None:
        fresh, reused = buffered_run(case, reuse=False), buffered_run(case, reuse=True)
        for index, (expected, got) in enumerate(zip(fresh, reused, strict=True)):
            assert identical(got, expected), f"step {index} changed: a state kept a tensor its caller reused"
