"""Hostile inputs: every bad value of every declared option, every misuse of `init` and `step`, and every config on
which the reference breaks down gets a clear error that names the argument and the fix, before anything is
computed."""

from __future__ import annotations

import functools
import itertools
import math
import re
from typing import Any

import attrs
import numpy as np
import pytest
import torch

import functional_sched as fs
from functional_sched.machinery import options as declarations
from functional_sched.machinery.schedule import MAX_INFERENCE_STEPS

from .. import strategies
from ..parity import calls, step_noise, toy_model
from ..requests import SHAPE, run_loop, same_state, start, step_inputs
from ..selection import configs, has_step_options, is_stochastic, keeps_history
from ..spec import Case, Spec
from .parity import reference_breaks_down


def one_step(case: Case) -> tuple[Any, Any, torch.Tensor, dict[str, Any]]:
    """(scheduler, fresh state, sample, the first step's inputs)."""
    sched, state, sample = start(case)
    return sched, state, sample, step_inputs(case, sched, state, sample, torch.Generator().manual_seed(5))


def other_step_options(case: Case) -> dict[str, Any]:
    """A change of one declared option that changes what `step` does (its fingerprint), found from the
    declarations: a state built before the change must be refused after it."""
    sched = case.scheduler()
    for name, option in declarations.declared(case.spec.scheduler).items():
        candidates = option.domain.values if isinstance(option.domain, declarations.Choice) else option.examples
        if isinstance(option.domain, declarations.Flag):
            candidates = (not getattr(sched, name),)
        for value in candidates:
            try:
                other = case.scheduler(**{name: value})
            except ValueError:
                continue
            if other.fingerprint != sched.fingerprint:
                return {name: value}
    raise AssertionError(f"{case.spec.name}: no declared option changes what step does")


def refuses_aliens(calls: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    """Each call runs with its arguments, and refuses, by the argument's name, each of them replaced by a value of no
    type any argument takes."""
    for method, (call, arguments) in calls.items():
        call(**arguments)
        for name in arguments:
            for alien in (object(), "text", [[1.0]]):
                with pytest.raises((TypeError, ValueError)) as raised:
                    call(**{**arguments, name: alien})
                assert re.search(name.rstrip("s"), str(raised.value), re.IGNORECASE), (
                    f"{method}({name}={alien!r}) raised {raised.value!r}, which does not name {name}"
                )


@functools.cache
def impostor_type(state_type: type) -> type:
    """A record with the same fields as `state_type` that is not one (what another scheduler's state looks like)."""
    fields = {field.name: Any for field in attrs.fields(state_type)}
    return fs.record(type(f"Impostor{state_type.__name__}", (), {"__annotations__": fields}))


class HostileInputs:
    """Bad options, bad calls, and configs the reference cannot run, each refused with a clear error."""

    # ------------------------------------------------------------------------------------------ options
    @configs()
    def test_every_option_refuses_bad_values_by_name(self, spec: Spec) -> None:
        """Each declared option, given each value its domain refuses, raises naming the class and the option."""
        for name, option in declarations.declared(spec.scheduler).items():
            for value, error, message in strategies.refused_values(option.domain):
                with pytest.raises(error, match=rf"^{spec.name}: {name}{message}"):
                    spec.scheduler(**{name: value})

    @configs()
    def test_exclusive_flags_refuse_two_at_once(self, spec: Spec) -> None:
        groups: dict[str, list[str]] = {}
        for name, option in declarations.declared(spec.scheduler).items():
            if option.exclusive is not None:
                groups.setdefault(option.exclusive, []).append(name)
        for names in groups.values():
            for first, second in itertools.pairwise(names):
                with pytest.raises(ValueError, match=rf"only one of .*{first}.* can be True, got {first}, {second}"):
                    spec.scheduler(**{first: True, second: True})

    @configs("every")
    def test_refusals_are_where_the_reference_breaks_down(self, refusal: tuple[Spec, Any]) -> None:
        """A config on which the reference raises or returns NaN/inf is refused up front, with the reason."""
        spec, entry = refusal
        case = spec.case(entry.options, entry.schedule)
        assert reference_breaks_down(case), f"{entry.id}: the reference runs this config; do not refuse it"
        if entry.at == "construction":
            with pytest.raises(ValueError, match=entry.match):
                case.scheduler()
        else:
            sched = case.scheduler()
            with pytest.raises(ValueError, match=entry.match):
                sched.init(sample=torch.zeros(SHAPE), **case.init_kwargs())

    # ------------------------------------------------------------------------------------------- init
    @configs()
    def test_bad_step_count_or_begin_index(self, case: Case) -> None:
        sched, _, sample = start(case)
        for steps in (0, MAX_INFERENCE_STEPS + 1):
            with pytest.raises(ValueError, match=rf"num_inference_steps must be >= 1 and <= {MAX_INFERENCE_STEPS}"):
                sched.init(steps, sample=sample)
        with pytest.raises(TypeError, match=r"num_inference_steps must be an integer, got 4\.0"):
            sched.init(4.0, sample=sample)
        steps = calls(sched, sched.init(sample=sample, **case.init_kwargs()))
        with pytest.raises(ValueError, match=rf"begin_index must be in \[0, {steps}\), got {steps}"):
            sched.init(sample=sample, begin_index=steps, **case.init_kwargs())
        with pytest.raises(TypeError, match="sample must be a floating-point tensor"):
            sched.init(sample=torch.zeros(SHAPE, dtype=torch.int64), **case.init_kwargs())

    @configs()
    def test_numpy_and_tensor_integers_count_as_integers(self, case: Case) -> None:
        """diffusers takes any integral number where it takes an int: numpy integers, 0-d integer tensors."""
        sched, _, sample = start(case)
        kwargs = case.init_kwargs()
        steps = kwargs.pop("num_inference_steps")
        begin = 1 if sched.timestep_table else 0  # a solve whose steps the data chooses starts at its first call
        expected = sched.init(steps, sample=sample, begin_index=begin, **kwargs)
        for convert in (np.int64, np.int32, torch.tensor):
            state = sched.init(
                None if steps is None else convert(steps), sample=sample, begin_index=convert(begin), **kwargs
            )
            assert same_state(state, expected)

    @configs()
    def test_custom_tables_are_checked_before_anything_is_computed(self, case: Case) -> None:
        """Custom timesteps/sigmas that are not 1-D, finite, within the training range, decreasing and whole where
        the schedule needs it, or that are longer than a schedule may be, are refused naming the argument (a solver
        whose step takes its sigmas in any order takes them out of order)."""
        sched = case.scheduler()
        for name in ("timesteps", "sigmas"):
            low, high, integral = sched._custom_range(name)
            valid = [high, (high + low) / 2, low + (high - low) / 4, low]
            valid = [float(round(value)) for value in valid] if integral else valid
            try:
                sched.plan(**{name: valid})
            except ValueError:
                continue  # this config takes no custom table of that name (it says so; tested in parity)
            bad: list[tuple[Any, type[Exception], str]] = [
                ([valid[0], math.nan, valid[-1]], ValueError, "must be finite"),
                ([math.inf, valid[-1]], ValueError, "must be finite"),
                ([high + 1, *valid[1:]], ValueError, "must lie in"),
                ([*valid[:-1], low - 1], ValueError, "must lie in"),
                (torch.tensor([valid[:2], valid[2:]]), ValueError, r"must be 1-D .* got shape \(2, 2\)"),
                (
                    [high] * (MAX_INFERENCE_STEPS + 1),
                    ValueError,
                    f"has {MAX_INFERENCE_STEPS + 1} values; a schedule has at most",
                ),
                ("0.5", TypeError, "must be a 1-D sequence"),
                ([], ValueError, "must not be empty"),
            ]
            if integral:
                bad.append(([valid[0], valid[1] + 0.5, valid[-1]], ValueError, "must be whole numbers"))
            if sched._custom_tables_decrease:
                bad.append((valid[::-1], ValueError, "must be decreasing"))
            else:  # a solver whose step takes sigmas in any order (flow-match Euler: Stable Audio 3 relies on it)
                sched.plan(**{name: [valid[1], valid[0], *valid[2:]]})
            if not sched._takes_repeats:
                bad.append(([valid[0], valid[1], valid[1], valid[-1]], ValueError, "must be strictly decreasing"))
            for values, error, message in bad:
                for call in (sched.plan, functools.partial(sched.init, sample=torch.zeros(SHAPE))):
                    with pytest.raises(error, match=rf"^{sched.name}: {name} {message}"):
                        call(**{name: values})

    @configs()
    def test_every_argument_of_the_api_refuses_alien_values_by_name(self, case: Case) -> None:
        """Each argument of each public method, given a value of no type it takes, raises a TypeError or
        ValueError that names it, before anything is computed (never an AttributeError from deep inside)."""
        sched, state, sample, inputs = one_step(case)
        schedule = case.init_kwargs()
        calls: dict[str, tuple[Any, dict[str, Any]]] = {
            "init": (sched.init, {"sample": sample, "begin_index": 0, **schedule}),
            "plan": (sched.plan, {**schedule, "dtype": torch.float32, "device": "cpu"}),
            "schedule": (sched.schedule, schedule),
            "step": (sched.step, {"state": state, "sample": sample, "noise": sample, "denoised": False, **inputs}),
            "scale_model_input": (sched.scale_model_input, {"state": state, "sample": sample}),
            "add_noise": (sched.add_noise, {"state": state, "original_samples": sample, "noise": sample}),
        }
        tables = ("timesteps", "sigmas") if sched.timestep_table else ()
        for method in (*tables, "timestep", "steps_taken", "steps_left", "init_noise_sigma"):
            calls[method] = (getattr(sched, method), {"state": state})
        refuses_aliens(calls)

    @configs()
    def test_the_machinery_refuses_alien_arguments_by_name(self, case: Case) -> None:
        """The same for the functions around the schedulers: batching, noise, the loops."""
        sched, state, sample, _ = one_step(case)
        schedule = case.init_kwargs()
        model = toy_model
        noise = {"noise": torch.Generator().manual_seed(0)} if sched.stochastic else {}
        calls: dict[str, tuple[Any, dict[str, Any]]] = {
            "stack": (fs.batching.stack, {"states": [state, state]}),
            "split": (fs.batching.split, {"state": state, "sizes": [1, 1]}),
            "randn_tensor": (
                fs.randn_tensor,
                {"shape": SHAPE, "generator": torch.Generator(), "device": "cpu", "dtype": torch.float32},
            ),
            "denoise": (fs.denoise, {"scheduler": sched, "model_fn": model, "sample": sample, **schedule, **noise}),
            "SamplingLoop": (fs.SamplingLoop, {"scheduler": sched, "denoiser": model, "mode": "eager"}),
            "SamplingLoop()": (fs.SamplingLoop(sched, model, mode="eager"), {"latents": sample, **schedule, **noise}),
        }
        refuses_aliens(calls)

    # ------------------------------------------------------------------------------------------- step
    @configs()
    def test_sample_with_other_rows(self, case: Case) -> None:
        sched, state, sample, inputs = one_step(case)
        with pytest.raises(ValueError, match=r"sample has shape \(3, 4, 8, 8\), but the state has 2 rows"):
            sched.step(state, sample=torch.cat([sample, sample[:1]]), **inputs)

    @configs()
    def test_model_output_of_another_shape(self, case: Case) -> None:
        sched, state, sample, inputs = one_step(case)
        inputs["model_output"] = inputs["model_output"][:, :, :4]
        with pytest.raises(ValueError, match=r"model_output has shape \(2, 4, 4, 8\)"):
            sched.step(state, sample=sample, **inputs)

    @configs()
    def test_tensors_on_another_device(self, case: Case) -> None:
        sched, state, sample, inputs = one_step(case)
        for what in ("sample", "model_output"):
            arguments = {"sample": sample, **inputs}
            arguments[what] = arguments[what].to("meta")
            with pytest.raises(ValueError, match=rf"{what} is on meta, but the state is on cpu"):
                sched.step(state, **arguments)

    @configs(where=keeps_history)
    def test_sample_of_another_dtype_than_the_history(self, case: Case) -> None:
        """A state keeps its history in the sample's dtype; a sample of another dtype is refused, not mixed in."""
        sched, state, sample, inputs = one_step(case)
        inputs = {key: value.to(torch.bfloat16) if key == "model_output" else value for key, value in inputs.items()}
        with pytest.raises(ValueError, match=r"the sample is \(2, 4, 8, 8\) torch.bfloat16, but this state was built"):
            sched.step(state, sample=sample.to(torch.bfloat16), **inputs)

    @configs()
    def test_state_from_another_scheduler(self, case: Case) -> None:
        sched, state, sample, inputs = one_step(case)
        impostor = impostor_type(type(state))(**{name: getattr(state, name) for name in attrs.fields_dict(type(state))})
        foreign = [impostor]
        other = next((cls for cls in fs.SCHEDULERS if cls.state_type is not type(state)), None)
        if other is not None:
            foreign.append(other().init(8, sample=sample))
        for state in foreign:
            with pytest.raises(TypeError, match=rf"{sched.name} got a {type(state).__name__}, not a"):
                sched.step(state, sample=sample, **inputs)

    @configs(where=has_step_options)
    def test_state_built_for_other_step_options(self, case: Case) -> None:
        other = case.scheduler(**other_step_options(case))
        _, state, sample, inputs = one_step(case)
        for refused in (lambda: other.timestep(state), lambda: other.step(state, sample=sample, **inputs)):
            with pytest.raises(ValueError, match=r"this state was built by a \w+ with different step options"):
                refused()

    @configs()
    def test_stepping_past_the_end(self, case: Case) -> None:
        sched, state, sample = start(case)
        generator = torch.Generator().manual_seed(7)
        steps = calls(sched, state)
        samples, state = run_loop(case, sched, state, sample, steps, generator=generator)
        inputs = {"model_output": toy_model(samples[-1], 0.0)}  # sched.timestep has no entry past the end
        if sched.stochastic:
            inputs["noise"] = step_noise(case, sample.shape, generator)
        with pytest.raises(IndexError, match=rf"row\(s\) \[0, 1\] already took all {steps} steps"):
            sched.step(state, sample=samples[-1], **inputs)
        with pytest.raises(IndexError, match=rf"row\(s\) \[0, 1\] already took all {steps} steps"):
            sched.timestep(state)

    @configs(where=is_stochastic)
    def test_stochastic_step_without_noise(self, case: Case) -> None:
        sched, state, sample, inputs = one_step(case)
        del inputs["noise"]
        with pytest.raises(ValueError, match=r"needs noise=\.\.\.: draw it with functional_sched\.randn_tensor"):
            sched.step(state, sample=sample, **inputs)
        inputs["noise"] = torch.zeros(SHAPE[0], 3)
        with pytest.raises(ValueError, match=re.escape(f"noise has shape ({SHAPE[0]}, 3), but sample has {SHAPE}")):
            sched.step(state, sample=sample, **inputs)

    @configs()
    def test_unchecked_steps_equal_checked_steps(self, case: Case) -> None:
        sched, state, sample, inputs = one_step(case)
        checked_sample, checked_state = sched.step(state, sample=sample, **inputs)
        with fs.unchecked():
            unchecked_sample, unchecked_state = sched.step(state, sample=sample, **inputs)
        assert torch.equal(unchecked_sample, checked_sample)
        assert same_state(unchecked_state, checked_state)
