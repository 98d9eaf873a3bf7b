"""The contract every scheduler keeps (DESIGN.md), checked over every registered config in `_support.FACTORIES`:
parity, compilation into one graph, purity, a state of fixed structure, independent rows, and clear errors."""

from __future__ import annotations

import functools
import gc
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import diffusers
import pytest
import torch
import torch._dynamo.testing
import torch.utils._pytree as pytree
from _support import (
    ALL_CASES,
    FACTORIES,
    Case,
    bit_identical_expected,
    is_stochastic,
    latents,
    rows_dims,
    run_loop,
    same_state,
    stack_states,
    step_noise,
    tensor_leaves,
    toy_model,
)

import functional_sched as fs

SHAPE = (2, 4, 8, 8)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Each test compiles from scratch and leaves no compiled code or stance behind."""
    torch._dynamo.reset()
    yield
    torch.compiler.set_stance("default")
    torch._dynamo.reset()


def start(case: Case, *, shape: tuple[int, ...] = SHAPE, dtype: torch.dtype = torch.float32, seed: int = 0):
    """(scheduler, state, sample) of a fresh request."""
    sched = case.scheduler()
    sample = latents(shape, dtype, seed)
    return sched, sched.init(sample=sample, **case.init_kwargs()), sample


def step_inputs(sched: Any, state: Any, sample: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
    """The model output (and noise, for stochastic configs) of the next step, as keyword arguments."""
    inputs = {"model_output": toy_model(sched.scale_model_input(state, sample), sched.timestep(state))}
    if is_stochastic(sched):
        inputs["noise"] = step_noise(sample.shape, generator)
    return inputs


def test_registry_covers_every_scheduler() -> None:
    """Every scheduler of the core has at least one registered config, and one compiled with inductor by default."""
    registered = {case.functional_cls for case in ALL_CASES}
    assert set(fs.SCHEDULERS) <= registered
    assert {case.functional_cls for case in ALL_CASES if case.inductor} == registered
    for cls in fs.SCHEDULERS:
        assert issubclass(getattr(diffusers, cls.diffusers_name), diffusers.SchedulerMixin), cls.diffusers_name


@pytest.mark.parametrize("case", FACTORIES)
def test_parity_with_diffusers(case: Case) -> None:
    """Every registered config: tables equal, every float32 step within 1e-5 and bit-identical where that holds on
    every machine (`bit_identical_expected`)."""
    result = case.parity(shape=SHAPE)
    assert torch.equal(result.ours_timesteps, result.ref_timesteps)
    assert result.ours_timesteps.dtype == result.ref_timesteps.dtype
    assert torch.equal(result.ours_sigmas, result.ref_sigmas)
    assert result.steps == case.steps
    assert all(result.timestep_agrees)
    assert result.max_error <= 1e-5, result.first_difference()
    if bit_identical_expected(case.functional_cls, case.config):
        assert all(result.identical), result.first_difference()


# ------------------------------------------------------------------------------------------------- compile
def compiled_loop(case: Case, backend: str) -> None:
    """A whole loop through `torch.compile(step, fullgraph=True)`: one graph, no recompiles, equal to eager."""
    sched, state, sample = start(case)
    steps = len(sched.timesteps(state))
    eager, eager_state = run_loop(sched, state, sample, steps, generator=torch.Generator().manual_seed(1))

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
            sched, state, sample, steps, generator=torch.Generator().manual_seed(1), step_fn=step_then_freeze
        )
    finally:
        torch.compiler.set_stance("default")

    assert next(calls) == steps
    assert counter.frame_count == 1, f"compiled {counter.frame_count} times"
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    for index, (ours, ref) in enumerate(zip(compiled, eager, strict=True)):
        if backend == "eager":  # the same ops, run by the same kernels
            assert torch.equal(ours, ref), f"step {index}"
        else:  # inductor may fuse and contract a * b + c into one rounding
            scale = ref.abs().max().item()
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6 * scale, msg=f"step {index}")
    assert pytree.tree_structure(compiled_state) == pytree.tree_structure(eager_state)
    assert torch.equal(compiled_state.step_index, eager_state.step_index)


@pytest.mark.parametrize("case", FACTORIES)
def test_compiles_fullgraph_eager_backend(case: Case) -> None:
    compiled_loop(case, "eager")


INDUCTOR = [pytest.param(case, id=case.id, marks=() if case.inductor else pytest.mark.slow) for case in ALL_CASES]


@pytest.mark.parametrize("case", INDUCTOR)
def test_compiles_fullgraph_inductor(case: Case) -> None:
    compiled_loop(case, "inductor")


# -------------------------------------------------------------------------------------------------- purity
def warmed(case: Case, steps: int = 2, dtype: torch.dtype = torch.float32):
    """A request a few steps in (so multistep histories hold real values)."""
    sched, state, sample = start(case, dtype=dtype)
    samples, state = run_loop(sched, state, sample, steps, generator=torch.Generator().manual_seed(2))
    return sched, state, samples[-1]


@pytest.mark.parametrize("case", FACTORIES)
def test_step_writes_into_nothing(case: Case) -> None:
    sched, state, sample = warmed(case)
    inputs = step_inputs(sched, state, sample, torch.Generator().manual_seed(3))
    watched = [("sample", sample), *inputs.items(), *tensor_leaves(state)]
    before = [(name, tensor.clone(), tensor._version) for name, tensor in watched]

    prev_sample, new_state = sched.step(state, sample=sample, **inputs)

    for (name, tensor), (_, copy, version) in zip(watched, before, strict=True):
        assert tensor._version == version, f"{name} was written in place"
        assert torch.equal(tensor, copy), f"{name} changed"
    assert prev_sample.data_ptr() != sample.data_ptr()
    # The same inputs give the same outputs: nothing hidden carries over between calls.
    again_sample, again_state = sched.step(state, sample=sample, **inputs)
    assert torch.equal(again_sample, prev_sample)
    assert same_state(again_state, new_state)
    assert torch.equal(new_state.step_index, state.step_index + 1)


# ---------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", FACTORIES)
def test_state_structure_is_stable(case: Case, dtype: torch.dtype) -> None:
    """After every step: the same pytree structure, and every leaf of the same shape, dtype and device (optax's
    `test_state_shape_dtype_shard_stability`)."""

    def layout(state: Any) -> tuple[Any, list[tuple[str, torch.Size, torch.dtype, torch.device]]]:
        return (
            pytree.tree_structure(state),
            [(path, leaf.shape, leaf.dtype, leaf.device) for path, leaf in tensor_leaves(state)],
        )

    sched, state, sample = start(case, dtype=dtype)
    initial = layout(state)
    assert all(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(state))
    generator = torch.Generator().manual_seed(4)
    for _ in range(len(sched.timesteps(state))):
        sample, state = sched.step(state, sample=sample, **step_inputs(sched, state, sample, generator))
        assert sample.dtype == dtype
        assert layout(state) == initial


# --------------------------------------------------------------------------------------------------- rows
def single_rows(
    case: Case, steps: list[int], warm: list[int]
) -> tuple[Any, list[Any], list[torch.Tensor], list[torch.Generator]]:
    """One-row requests with `steps[r]` steps each, advanced `warm[r]` steps alone."""
    sched = case.scheduler()
    states, samples, generators = [], [], []
    for row, (count, taken) in enumerate(zip(steps, warm, strict=True)):
        sample = latents((1, *SHAPE[1:]), torch.float32, seed=10 + row)
        generator = torch.Generator().manual_seed(20 + row)
        state = sched.init(sample=sample, **case.init_kwargs(count))
        history, state = run_loop(sched, state, sample, taken, generator=generator)
        states.append(state)
        samples.append(history[-1] if history else sample)
        generators.append(generator)
    return sched, states, samples, generators


def next_inputs(
    sched: Any, states: list[Any], samples: list[torch.Tensor], generators: list[torch.Generator]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each row's next step inputs, and the same concatenated along rows for the stacked state."""
    rows = [step_inputs(sched, *request) for request in zip(states, samples, generators, strict=True)]
    return rows, {key: torch.cat([row[key] for row in rows]) for key in rows[0]}


def step_each(
    sched: Any, states: list[Any], samples: list[torch.Tensor], inputs: list[dict[str, Any]]
) -> tuple[list[Any], list[torch.Tensor]]:
    """Step every single-row request alone: (states, samples)."""
    stepped = [
        sched.step(state, sample=sample, **row) for state, sample, row in zip(states, samples, inputs, strict=True)
    ]
    return [state for _, state in stepped], [sample for sample, _ in stepped]


@pytest.mark.parametrize("share_plans", [True, False], ids=["shared-plan", "plan-per-row"])
@pytest.mark.parametrize("case", FACTORIES)
def test_rows_at_different_steps_step_as_alone(case: Case, share_plans: bool) -> None:
    """Rows at different step indices, stacked into one state, step bit for bit as each would alone."""
    warm = [0, 1, 4]
    sched, states, samples, generators = single_rows(case, [case.steps] * 3, warm)
    dims = rows_dims(sched, case.init_kwargs(), samples[0])
    batch_state = stack_states(sched, states, dims, share_plans=share_plans)
    batch_sample = torch.cat(samples)
    assert torch.equal(batch_state.step_index, torch.tensor(warm))
    for _ in range(3):
        inputs, batch_inputs = next_inputs(sched, states, samples, generators)
        assert torch.equal(sched.timestep(batch_state), torch.cat([sched.timestep(state) for state in states]))
        batch_sample, batch_state = sched.step(batch_state, sample=batch_sample, **batch_inputs)
        states, samples = step_each(sched, states, samples, inputs)
        for row, sample in enumerate(samples):
            assert torch.equal(batch_sample[row : row + 1], sample), f"row {row}"
        assert same_state(batch_state, stack_states(sched, states, dims, share_plans=share_plans))


@pytest.mark.parametrize("case", FACTORIES)
def test_rows_with_different_step_counts_step_as_alone(case: Case) -> None:
    """Requests with different step counts (one padded plan per row) in one state, stepped to the end."""
    counts, warm = [case.steps, case.steps + 3, case.steps - 2], [2, 0, 5]
    sched, states, samples, generators = single_rows(case, counts, warm)
    dims = rows_dims(sched, case.init_kwargs(), samples[0])
    batch_state = stack_states(sched, states, dims)
    assert batch_state.plan.timesteps.shape == (3, max(counts))
    batch_sample = torch.cat(samples)
    remaining = min(count - taken for count, taken in zip(counts, warm, strict=True))
    for _ in range(remaining):
        inputs, batch_inputs = next_inputs(sched, states, samples, generators)
        batch_sample, batch_state = sched.step(batch_state, sample=batch_sample, **batch_inputs)
        states, samples = step_each(sched, states, samples, inputs)
        assert torch.equal(batch_sample, torch.cat(samples))
        assert same_state(batch_state, stack_states(sched, states, dims))
    # The shortest request is done: asking for the batch's timesteps (or stepping it) is refused for that row.
    # (The padded plan still has an entry for row 2's index; a lone finished state has none.)
    with pytest.raises(IndexError, match=rf"row\(s\) \[2\] already took all {counts[2]} steps"):
        sched.timestep(batch_state)
    with pytest.raises(IndexError, match=rf"row\(s\) \[2\] already took all {counts[2]} steps"):
        sched.step(batch_state, sample=batch_sample, model_output=torch.zeros_like(batch_sample))


@pytest.mark.parametrize("case", FACTORIES)
def test_interleaved_requests_match_each_alone(case: Case) -> None:
    """Two requests with different step counts, stepped alternately by one scheduler object."""
    sched = case.scheduler()
    requests = []
    for index, count in enumerate([case.steps, case.steps + 5]):
        sample = latents((1 + index, *SHAPE[1:]), torch.float32, seed=30 + index)
        requests.append((sched.init(sample=sample, **case.init_kwargs(count)), sample, count, 40 + index))
    alone = [
        run_loop(sched, state, sample, count, generator=torch.Generator().manual_seed(seed))[0]
        for state, sample, count, seed in requests
    ]

    live = [[state, sample, torch.Generator().manual_seed(seed), []] for state, sample, _, seed in requests]
    for turn in range(max(count for *_, count, _ in requests)):
        for request, (_, _, count, _) in zip(live, requests, strict=True):
            if turn < count:
                state, sample, generator, history = request
                sample, state = sched.step(state, sample=sample, **step_inputs(sched, state, sample, generator))
                request[:2] = state, sample
                history.append(sample)
    for request, expected in zip(live, alone, strict=True):
        assert len(request[3]) == len(expected)
        assert all(torch.equal(a, b) for a, b in zip(request[3], expected, strict=True))


# ------------------------------------------------------------------------------------------------- errors
def one_step_inputs(case: Case) -> tuple[Any, Any, torch.Tensor, dict[str, Any]]:
    sched, state, sample = start(case)
    return sched, state, sample, step_inputs(sched, state, sample, torch.Generator().manual_seed(5))


@pytest.mark.parametrize("case", FACTORIES)
def test_error_sample_with_wrong_rows(case: Case) -> None:
    sched, state, sample, inputs = one_step_inputs(case)
    with pytest.raises(ValueError, match=r"sample has shape \(3, 4, 8, 8\), but the state has 2 rows"):
        sched.step(state, sample=torch.cat([sample, sample[:1]]), **inputs)


@pytest.mark.parametrize("case", FACTORIES)
def test_error_model_output_of_another_shape(case: Case) -> None:
    sched, state, sample, inputs = one_step_inputs(case)
    inputs["model_output"] = inputs["model_output"][:, :, :4]
    with pytest.raises(ValueError, match=r"model_output has shape \(2, 4, 4, 8\)"):
        sched.step(state, sample=sample, **inputs)


@pytest.mark.parametrize("what", ["sample", "model_output"])
@pytest.mark.parametrize("case", FACTORIES)
def test_error_tensor_on_another_device(case: Case, what: str) -> None:
    sched, state, sample, inputs = one_step_inputs(case)
    arguments = {"sample": sample, **inputs}
    arguments[what] = arguments[what].to("meta")
    with pytest.raises(ValueError, match=rf"{what} is on meta, but the state is on cpu"):
        sched.step(state, **arguments)


HISTORY = [
    pytest.param(case, id=case.id)
    for case in ALL_CASES
    if "history" in attrs.fields_dict(case.functional_cls.state_type)
]


@pytest.mark.parametrize("case", HISTORY)
def test_error_sample_of_another_dtype_than_the_history(case: Case) -> None:
    """Multistep states keep a history in the sample's dtype; a sample of another dtype is refused, not mixed in."""
    sched, state, sample, inputs = one_step_inputs(case)
    inputs = {key: value.to(torch.bfloat16) if key == "model_output" else value for key, value in inputs.items()}
    with pytest.raises(ValueError, match=r"the sample is \(2, 4, 8, 8\) torch.bfloat16, but this state was built for"):
        sched.step(state, sample=sample.to(torch.bfloat16), **inputs)


@functools.cache
def impostor_type(state_type: type) -> type:
    """A record with the same fields as `state_type` that is not one (what another scheduler's state looks like)."""
    fields = {field.name: Any for field in attrs.fields(state_type)}
    return fs.record(type(f"Impostor{state_type.__name__}", (), {"__annotations__": fields}))


@pytest.mark.parametrize("case", FACTORIES)
def test_error_state_from_another_scheduler(case: Case) -> None:
    sched, state, sample, inputs = one_step_inputs(case)
    impostor = impostor_type(type(state))(**{name: getattr(state, name) for name in attrs.fields_dict(type(state))})
    foreign = [impostor]
    for other in ALL_CASES:
        if other.functional_cls is not case.functional_cls:
            foreign.append(start(other)[1])
            break
    for state in foreign:
        with pytest.raises(TypeError, match=rf"{sched.name} got a {type(state).__name__}, not a"):
            sched.step(state, sample=sample, **inputs)


@pytest.mark.parametrize("case", FACTORIES)
def test_error_state_built_for_other_step_options(case: Case) -> None:
    assert case.other_step_options, "each config names a step option to change"
    other = case.scheduler(**case.other_step_options)
    _, state, sample, inputs = one_step_inputs(case)
    for refused in (lambda: other.timestep(state), lambda: other.step(state, sample=sample, **inputs)):
        with pytest.raises(ValueError, match=r"this state was built by a \w+ with different step options"):
            refused()


@pytest.mark.parametrize("case", FACTORIES)
def test_error_stepping_past_the_end(case: Case) -> None:
    sched, state, sample = start(case)
    generator = torch.Generator().manual_seed(7)
    samples, state = run_loop(sched, state, sample, case.steps, generator=generator)
    inputs = {"model_output": toy_model(samples[-1], 0.0)}  # sched.timestep has no entry past the end
    if is_stochastic(sched):
        inputs["noise"] = step_noise(sample.shape, generator)
    with pytest.raises(IndexError, match=rf"row\(s\) \[0, 1\] already took all {case.steps} steps"):
        sched.step(state, sample=samples[-1], **inputs)


@pytest.mark.parametrize("case", FACTORIES)
def test_error_unknown_option_value(case: Case) -> None:
    option, value, allowed = case.invalid_option
    with pytest.raises(ValueError, match=rf"{option}={value!r} is not supported; choose one of") as error:
        case.scheduler(**{option: value})
    for choice in allowed:
        assert repr(choice) in str(error.value)


@pytest.mark.parametrize("case", FACTORIES)
def test_error_flag_of_wrong_type(case: Case) -> None:
    with pytest.raises(TypeError, match="use_karras_sigmas must be True or False, got 'yes'"):
        case.scheduler(use_karras_sigmas="yes")


@pytest.mark.parametrize("case", FACTORIES)
def test_error_bad_step_count_or_begin_index(case: Case) -> None:
    sched, _, sample = start(case)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer, got 0"):
        sched.init(0, sample=sample)
    steps = case.steps
    with pytest.raises(ValueError, match=rf"begin_index must be in \[0, {steps}\), got {steps}"):
        sched.init(sample=sample, begin_index=steps, **case.init_kwargs())


MU_SCHEDULERS = [
    pytest.param(lambda: fs.FlowMatchEulerDiscrete(use_dynamic_shifting=True), id="flow-match"),
    pytest.param(
        lambda: fs.UniPCMultistep(use_dynamic_shifting=True, use_flow_sigmas=True, prediction_type="flow_prediction"),
        id="unipc-flow",
    ),
]


@pytest.mark.parametrize("build", MU_SCHEDULERS)
def test_error_dynamic_shifting_without_mu(build: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=r"use_dynamic_shifting=True needs mu"):
        build().init(8, sample=torch.zeros(1, 4))


STOCHASTIC = [pytest.param(case, id=case.id) for case in ALL_CASES if is_stochastic(case.scheduler())]


@pytest.mark.parametrize("case", STOCHASTIC)
def test_error_stochastic_step_without_noise(case: Case) -> None:
    sched, state, sample, inputs = one_step_inputs(case)
    del inputs["noise"]
    with pytest.raises(ValueError, match=r"needs noise=\.\.\.: draw it with functional_sched\.randn_tensor"):
        sched.step(state, sample=sample, **inputs)
    inputs["noise"] = torch.zeros(SHAPE[0], 3)
    with pytest.raises(ValueError, match=r"noise has shape \(2, 3\), but sample has \(2, 4, 8, 8\)"):
        sched.step(state, sample=sample, **inputs)


# ------------------------------------------------------------------------------------------------ unchecked()
@pytest.mark.parametrize("case", FACTORIES[:3] + FACTORIES[-3:])
def test_unchecked_steps_equal_checked_steps(case: Case) -> None:
    sched, state, sample, inputs = one_step_inputs(case)
    checked_sample, checked_state = sched.step(state, sample=sample, **inputs)
    with fs.unchecked():
        unchecked_sample, unchecked_state = sched.step(state, sample=sample, **inputs)
    assert torch.equal(unchecked_sample, checked_sample)
    assert same_state(unchecked_state, checked_state)


def test_unchecked_is_scoped_to_its_block_and_thread() -> None:
    sched = fs.FlowMatchEulerDiscrete()
    sample = torch.randn(2, 3)
    state = sched.init(4, sample=sample)
    wrong_rows = torch.randn(3, 3)
    with pytest.raises(RuntimeError, match="boom"), fs.unchecked():
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="the state has 2 rows"):
        sched.step(state, wrong_rows, wrong_rows)  # checks are back after the block, even one that raised

    seen_in_thread: list[BaseException] = []

    def other_thread() -> None:
        try:
            sched.step(state, wrong_rows, wrong_rows)
        except ValueError as error:
            seen_in_thread.append(error)

    with fs.unchecked():
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert len(seen_in_thread) == 1, "another thread keeps its checks while this one runs unchecked"


def test_eager_entry_caches_are_freed_with_their_plans() -> None:
    """Eager steps cache each plan's 0-d coefficients; dropping the plan drops them (no leak)."""
    from functional_sched.machinery import host as _host
    from functional_sched.machinery import scheduler as _scheduler

    sched, sample = fs.FlowMatchEulerDiscrete(), torch.randn(1, 4)
    state = sched.init(sample=sample, sigmas=[0.987654, 0.5, 0.25])
    sched.step(state, sample, sample)
    key = id(state.plan.coefficients)
    assert key in _host._ENTRIES
    _scheduler._plan_on_device.cache_clear()
    _scheduler._cpu_plan.cache_clear()
    del state
    gc.collect()
    assert key not in _host._ENTRIES


def test_a_counter_written_in_place_is_not_trusted() -> None:
    """States share cached counter tensors; one written in place anyway is read for its new value, and later
    states get a fresh counter, not the written one."""
    sched, sample = fs.FlowMatchEulerDiscrete(), torch.randn(2, 4)
    state = sched.init(5, sample=sample)
    state.step_index.fill_(3)  # unsupported (states are immutable), but must not mislead anyone
    assert torch.equal(sched.timestep(state), sched.timesteps(state)[3].expand(2))
    jumped, _ = sched.step(state, sample, sample)
    expected, _ = sched.step(sched.init(5, sample=sample, begin_index=3), sample, sample)
    assert torch.equal(jumped, expected)
    fresh = sched.init(5, sample=sample)
    assert fresh.step_index is not state.step_index
    assert fresh.step_index.tolist() == [0, 0]
