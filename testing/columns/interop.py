"""Interop with diffusers: the declared options are the reference's (names, defaults), `from_diffusers` and
`to_diffusers_config` round-trip any config, an option we lack is refused by name, and the drop-in scheduler
(`functional_sched.adapters.drop_in`) is indistinguishable from diffusers' in a loop and in its API."""

from __future__ import annotations

import inspect
from typing import Any

import attrs
import diffusers
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from functional_sched.adapters import drop_in, from_diffusers, from_sglang, to_diffusers_config
from functional_sched.adapters.diffusers import config_options, registered_config, set_by_calls
from functional_sched.machinery import options as declarations

from .. import strategies
from ..parity import begin_at, generator_kwargs, has_repeated_timesteps, latents, toy_model
from ..selection import configs, drop_in_noises, has_drop_in, has_reference, is_registered, keeps_history
from ..spec import Case, Spec, built_as_diffusers
from .parity import BOUND, GRID_SETTINGS, noised

SHAPE = (2, 4, 6, 6)


def _from_reference(scheduler_class: type, reference: Any) -> Any:
    """`from_diffusers` of the reference, or `from_sglang` for a class whose reference is sglang's."""
    return (from_sglang if scheduler_class.reference_library == "sglang" else from_diffusers)(reference)


def public(config: Any) -> dict[str, Any]:
    """A config's options, without diffusers' bookkeeping (`_class_name`, `_use_default_values`, ...), sequences as
    tuples (diffusers keeps what it was given; a JSON round trip makes lists)."""
    return {key: _tuples(value) for key, value in dict(config).items() if not key.startswith("_")}


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


def drop_in_pair(case: Case) -> tuple[Any, Any]:
    """(the class the drop-in replaces, our drop-in), both built with the config's options as its pipelines build
    them (`Spec.drop_in_reference`)."""
    ours_class = drop_in.drop_in_class(case.spec.scheduler)
    build = case.spec.drop_in_reference
    if build is None:
        return case.reference(), built_as_diffusers(ours_class, case.spec.scheduler, case.options)
    return build(drop_in.reference_class(case.spec.scheduler), case.options), build(ours_class, case.options)


def drop_in_defaults(spec: Spec) -> tuple[Any, Any]:
    """(the replaced class, our drop-in), built with no options (its classes' defaults)."""
    ours_class = drop_in.drop_in_class(spec.scheduler)
    if spec.drop_in_reference is None:
        return type(spec.case(spec.configs[0]).reference())(), ours_class()
    reference_class = drop_in.reference_class(spec.scheduler)
    return spec.drop_in_reference(reference_class, {}), spec.drop_in_reference(ours_class, {})


def schedule(case: Case, scheduler: Any, steps: int | None = None) -> None:
    """The config's schedule set as its pipelines set it (`Spec.drop_in_schedule`; `set_timesteps` by default)."""
    if case.spec.drop_in_schedule is None:
        scheduler.set_timesteps(**case.reference_kwargs(steps))
    else:
        case.spec.drop_in_schedule(scheduler, case.options, case.reference_kwargs(steps))


def step_call(
    case: Case, scheduler: Any, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True, **kwargs: Any
) -> Any:
    """One step as its pipelines call it (`Spec.drop_in_step`; `step` by default, `return_dict` passed: MOVA's sglang
    classes take it into their `**kwargs` and return a bare tensor): what the call returns."""
    if case.spec.drop_in_step is not None:
        return case.spec.drop_in_step(
            scheduler, case.options, model_output, timestep, sample, return_dict=return_dict, **kwargs
        )
    return scheduler.step(model_output, timestep, sample, return_dict=return_dict, **kwargs)


def prev_sample(out: Any) -> torch.Tensor:
    """The stepped sample of what a `step` returned: a bare tensor, a tuple's first item or the output's field."""
    if isinstance(out, torch.Tensor):
        return out
    return out[0] if isinstance(out, tuple) else out.prev_sample


def noised_alike(reference: Any, ours: Any, image: Any, noise: Any, t: Any) -> Any:
    """The reference's noising of `image` at `t`, ours equal (or raising as it does): the result, None if raised."""
    return same_outcome(lambda scheduler: noised(scheduler, image, noise, t), reference, ours)


def saves_config(case: Case) -> bool:
    """A drop-in whose reference has a diffusers config (`save_config`, `from_pretrained`)."""
    return has_drop_in(case) and issubclass(drop_in.drop_in_class(case.spec.scheduler), diffusers.ConfigMixin)


def config_of(scheduler: Any) -> dict[str, Any] | None:
    """A scheduler's config as `public` gives it (a plain-attribute config object's attributes); None where it has
    none (MOVA's sglang classes)."""
    config = getattr(scheduler, "config", None)
    if config is None:
        return None
    return public(config if isinstance(scheduler, diffusers.ConfigMixin) else vars(config))


def same_outcome(call: Any, reference: Any, ours: Any) -> Any:
    """`call(reference)` and `call(ours)` equal, or raising the same error type: the reference's result (None where
    both raised)."""
    try:
        expected = call(reference)
    except Exception as error:  # whatever the reference raises, ours must raise too
        with pytest.raises(type(error)):
            call(ours)
        return None
    assert_same(expected, call(ours), "outcome")
    return expected


def assert_tables_equal(reference: Any, ours: Any) -> None:
    """The tables and indices the reference exposes, equal on ours; what it lacks (DDIM keeps no sigmas, no step
    index), ours lacks too."""
    for name in ("timesteps", "sigmas"):
        assert hasattr(ours, name) == hasattr(reference, name), name
        if not hasattr(reference, name):
            continue
        expected, got = getattr(reference, name), getattr(ours, name)
        assert got.dtype == expected.dtype and got.device == expected.device, name
        assert torch.equal(got, expected), name
    # sglang's Hunyuan3D Euler sets no num_inference_steps for custom sigmas: then neither has one.
    assert getattr(ours, "num_inference_steps", None) == getattr(reference, "num_inference_steps", None)
    for name in ("step_index", "begin_index"):
        assert hasattr(ours, name) == hasattr(reference, name), name
        assert getattr(ours, name, None) == getattr(reference, name, None), name


def takes_model_outputs(case: Case) -> bool:
    """A multistep solver whose diffusers class exposes `model_outputs` by `solver_order` (not PNDM's `ets`)."""
    return "solver_order" in declarations.declared(case.spec.scheduler)


def vars_of(scheduler: Any) -> dict[str, Any]:
    """A scheduler's declared options and their values."""
    return {name: getattr(scheduler, name) for name in declarations.declared(type(scheduler))}


def is_registered_option(spec: Spec, name: str) -> bool:
    return declarations.declared(spec.scheduler)[name].registered


def assert_same(reference: Any, ours: Any, what: str) -> bool:
    """Equal values as diffusers exposes them: tensors (dtype, shape and values; NaN where NaN), lists and tuples
    item by item, numbers and the rest by `==`."""
    if isinstance(reference, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.dtype == reference.dtype, f"{what}: {ours!r} vs {reference!r}"
        torch.testing.assert_close(ours.cpu(), reference.cpu(), rtol=0, atol=0, equal_nan=True, msg=what)
    elif isinstance(reference, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(reference), f"{what}: {ours!r} vs {reference!r}"
        for index, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
            assert_same(theirs, mine, f"{what}[{index}]")
    elif inspect.isfunction(reference):  # a callable option (SASolver's default tau_func, a lambda per instance)
        assert inspect.isfunction(ours) and ours.__code__ is reference.__code__, f"{what}: {ours!r} vs {reference!r}"
    elif isinstance(reference, np.ndarray):  # PNDM's prk_timesteps, plms_timesteps
        assert isinstance(ours, np.ndarray) and ours.dtype == reference.dtype, f"{what}: {ours!r} vs {reference!r}"
        assert np.array_equal(ours, reference), f"{what}: {ours!r} vs {reference!r}"
    elif isinstance(reference, dict):  # Helios' per-stage tables
        assert isinstance(ours, dict) and ours.keys() == reference.keys(), f"{what}: {ours!r} vs {reference!r}"
        for key, value in reference.items():
            assert_same(value, ours[key], f"{what}[{key!r}]")
    elif type(ours) is type(reference) and hasattr(reference, "__dict__") and ours != reference:
        assert_same(vars(reference), vars(ours), what)  # a plain-attribute object (sglang's Helios config)
    else:
        assert ours == reference or (ours != ours and reference != reference), f"{what}: {ours!r} vs {reference!r}"
    return True


def drop_in_loop(
    case: Case, reference: Any, ours: Any, x: torch.Tensor, *, seed: int = 0, start: int = 0, model_dtype: Any = None
) -> int:
    """Step both through the rest of the schedule, `return_dict` alternating; every output and read-out must match
    (bit for bit, or within the design's bound where the spec says rounding may differ). Returns the steps taken."""
    y = x.clone()
    g_ref, g_ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    wants_generator = "generator" in inspect.signature(reference.step).parameters
    timesteps = reference.timesteps[start:]
    for index, t in enumerate(timesteps):
        e_ref, e_ours = toy_model(x, t), toy_model(y, t)
        if model_dtype is not None:
            e_ref, e_ours = e_ref.to(model_dtype), e_ours.to(model_dtype)
        extra_ref = (
            {"generator": g_ref, **case.reference_step_kwargs} if wants_generator else case.reference_step_kwargs
        )
        extra_ours = (
            {"generator": g_ours, **case.reference_step_kwargs} if wants_generator else case.reference_step_kwargs
        )
        return_dict = index % 2 == 0
        out_ref = step_call(case, reference, e_ref, t, x, return_dict, **extra_ref)
        out_ours = step_call(case, ours, e_ours, t, y, return_dict, **extra_ours)
        assert type(out_ours) is type(out_ref)
        x, y = prev_sample(out_ref), prev_sample(out_ours)
        assert y.dtype == x.dtype, f"step {index}"
        if case.exact("mixed" if model_dtype is not None else "float32"):
            torch.testing.assert_close(  # NaN where the reference has NaN (a zero-length step's 0/0 noise)
                y, x, rtol=0, atol=0, equal_nan=True, msg=lambda m, i=index: f"step {i}: {m}"
            )
        else:
            assert (y.double() - x.double()).norm() <= BOUND * x.double().norm(), f"step {index}"
        assert_tables_equal(reference, ours)
    return len(timesteps)


def set_both(case: Case, reference: Any, ours: Any, steps: int | None = None, *, lookup: bool = False) -> None:
    """`set_timesteps` on both, and `set_begin_index(0)` where timesteps repeat (as pipelines do; without it diffusers
    starts at the second match of the first timestep), unless the test is of the `lookup` of each timestep's index."""
    for scheduler in (reference, ours):
        schedule(case, scheduler, steps)
    if has_repeated_timesteps(reference) and not lookup:
        begin_at(reference, 0)
        begin_at(ours, 0)


class Interop:
    """The config mapping and the drop-in scheduler against diffusers."""

    # ------------------------------------------------------------------------------------------ the config
    @configs(where=has_reference)
    def test_options_are_the_references(self, spec: Spec) -> None:
        """Every declared option is a parameter of the reference's `__init__` (or, for a step argument, of its
        `step`) with the same default; every `__init__` parameter we do not declare is listed as unsupported."""
        reference_class = type(spec.case(spec.configs[0]).reference())
        init = inspect.signature(reference_class.__init__).parameters
        step = inspect.signature(reference_class.step).parameters
        for name, option in declarations.declared(spec.scheduler).items():
            if option.set_by is not None:  # set by a method of a built scheduler (FlowMatchEuler's `set_shift`)
                assert callable(getattr(reference_class, option.set_by, None)), f"{name}: no {option.set_by} method"
                continue
            if option.registered:  # a config key diffusers reads, that its constructor does not take
                assert name not in init, f"{name} is a parameter of the reference's __init__, not a registered key"
                continue
            where = step if option.step_argument else init
            assert name in where, (
                f"{name} is no parameter of the reference's {'step' if option.step_argument else '__init__'}"
            )
            theirs = option.domain.check(spec.name, name, where[name].default)
            assert theirs == option.default, f"{name}: the reference's default {theirs!r}, ours {option.default!r}"
        named = {name for name, parameter in init.items() if parameter.kind is not parameter.VAR_KEYWORD}
        missing = sorted(named - {"self", *declarations.declared(spec.scheduler)})  # not DDIMInverse's **kwargs
        assert missing == sorted(spec.unsupported), f"undeclared options of the reference: {missing}"

    @configs(where=is_registered)
    def test_unsupported_options_are_refused_by_name(self, spec: Spec) -> None:
        for name, value in spec.unsupported.items():
            reference = spec.case({name: value}).reference()
            with pytest.raises(NotImplementedError, match=rf"option {name}="):
                _from_reference(spec.scheduler, reference)
            if drop_in.drop_in_class(spec.scheduler) is not None:
                with pytest.raises(NotImplementedError, match=rf"option {name}="):
                    drop_in.drop_in_class(spec.scheduler)(**{name: value})

    @configs(where=is_registered)
    @settings(max_examples=10, **GRID_SETTINGS)
    @given(data=st.data())
    def test_config_round_trips_through_diffusers(self, spec: Spec, data: st.DataObject) -> None:
        """`from_diffusers` of the reference built with any options gives ours with those options, and
        `to_diffusers_config` builds the reference back (`from_config`), its config item for item."""
        options = data.draw(strategies.config_options(spec))
        case = spec.case(options)
        reference, ours = case.reference(), case.scheduler()
        ours = without_step_arguments(ours)  # diffusers' config has none: they come with each `step()` call
        assert _from_reference(spec.scheduler, reference) == ours
        rebuilt = type(reference).from_config(to_diffusers_config(ours))
        rebuilt.register_to_config(**registered_config(ours))  # what no constructor takes, as a pipeline adds it
        for method, value in set_by_calls(ours).items():  # FlowMatchEuler's `set_shift`, as a pipeline calls it
            getattr(rebuilt, method)(value)
        assert public(rebuilt.config) == public(reference.config)
        assert _from_reference(spec.scheduler, rebuilt) == ours
        unset = {name for name, value in vars_of(ours).items() if value is None and is_registered_option(spec, name)}
        assert set(to_diffusers_config(ours)) == set(config_options(spec.scheduler)) - unset

    @configs("every", where=is_registered)
    def test_table_config_round_trips_through_diffusers(self, case: Case) -> None:
        reference, ours = case.reference(), without_step_arguments(case.scheduler())
        assert _from_reference(case.spec.scheduler, reference) == ours
        rebuilt = type(reference).from_config(to_diffusers_config(ours))
        for method, value in set_by_calls(ours).items():
            getattr(rebuilt, method)(value)
        assert _from_reference(case.spec.scheduler, rebuilt) == ours

    # ----------------------------------------------------------------------------------------- the drop-in
    @configs("every", where=has_drop_in)
    def test_drop_in_steps_as_the_reference(self, case: Case) -> None:
        """A full loop, then `set_timesteps` again (a fresh run on the same object), every read-out equal."""
        reference, ours = drop_in_pair(case)
        # None (or unset; sglang's ComfyUI count: 0), or the constructor's count (Heun's 1000)
        for name in ("step_index", "num_inference_steps"):
            assert getattr(ours, name, None) == getattr(reference, name, None), name
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
        for seed in (0, 1):
            set_both(case, reference, ours)
            assert getattr(ours, "step_index", None) == getattr(reference, "step_index", None)
            assert_tables_equal(reference, ours)
            assert drop_in_loop(case, reference, ours, x, seed=seed) == len(reference.timesteps)

    @configs("representative", where=has_drop_in)
    def test_drop_in_under_inference_mode_steps_as_the_reference(self, case: Case) -> None:
        """`with torch.inference_mode(): pipe(...)`, as diffusers users and serving engines run pipelines: the
        drop-in's whole loop (and its `set_timesteps`) under it, equal to diffusers' under it."""
        reference, ours = drop_in_pair(case)
        with torch.inference_mode():
            set_both(case, reference, ours)
            drop_in_loop(case, reference, ours, torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)))

    @configs(where=has_drop_in)
    def test_two_drop_ins_share_nothing_writable(self, case: Case) -> None:
        """Two drop-ins of one config and schedule (two pipelines, two requests): writing into everything one of
        them hands out (its timesteps, sigmas, a step's output) changes nothing of the other's run; the one edited
        steps on from its edited tables, as diffusers does from the same edit (never ignores it)."""
        reference, alone = drop_in_pair(case)
        set_both(case, reference, alone)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
        drop_in_loop(case, reference, alone, x)  # the second's run, alone, equal to diffusers'
        reference, first = drop_in_pair(case)
        _, second = drop_in_pair(case)
        set_both(case, reference, second)
        set_both(case, drop_in_pair(case)[0], first)
        edited = drop_in_pair(case)[0]
        set_both(case, edited, drop_in_pair(case)[1])
        outputs = []
        for scheduler in (edited, first):
            sample = x.clone()
            kwargs = generator_kwargs(scheduler, torch.Generator().manual_seed(1), case.stochastic)
            t = scheduler.timesteps[0]
            step = prev_sample(step_call(case, scheduler, toy_model(sample, t), t, sample, False, **kwargs))
            if hasattr(scheduler, "sigmas"):  # DDIM's and DDPM's steps read no sigma table
                scheduler.sigmas.mul_(0.999)  # in place, into what each hands out (ours: the first)
            t = scheduler.timesteps[1]
            # (a copy: sglang's pass-through hands back the very tensor it was given, which the next line writes into)
            following = step_call(case, scheduler, toy_model(step, t), t, step, False, **kwargs)
            outputs.append(prev_sample(following).clone())
            step.fill_(float("nan"))
        torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=BOUND * outputs[0].abs().max().item())
        drop_in_loop(case, reference, second, x)

    @configs("every", where=has_drop_in)
    def test_drop_in_steps_from_tables_edited_in_place(self, case: Case) -> None:
        """Cosmos 2's edit after `set_timesteps` (the final sigma set to the one before it): the drop-in re-plans
        from its edited tables and steps as diffusers steps from them, every step of the loop."""
        reference, ours = drop_in_pair(case)
        if not hasattr(reference, "sigmas"):
            return  # DDIM and DDPM keep no sigma table
        set_both(case, reference, ours)
        for scheduler in (reference, ours):
            scheduler.sigmas[-1] = scheduler.sigmas[-2]
        if not bool(torch.isfinite(reference.sigmas).all()):
            return
        drop_in_loop(case, reference, ours, latents(SHAPE, torch.float32, seed=4))
        assert torch.equal(ours.sigmas, reference.sigmas)

    # Not where the reference's noise is a Brownian tree made for the first step's shape (Cosine DPM's): diffusers' own
    # step fails once the sample changes shape.
    @configs(
        "every",
        where=lambda case: (
            has_drop_in(case)
            and keeps_history(case)
            and takes_model_outputs(case)
            and not hasattr(case.spec.scheduler, "_brownian_queries")
            and "history" not in case.spec.drop_in_gaps
        ),
    )
    def test_drop_in_takes_edits_of_its_solver_history(self, case: Case) -> None:
        """What pipelines and diffusers' tests write into a multistep scheduler's history, the drop-in steps from, as
        diffusers does, bit for bit: `model_outputs` assigned before the first step (diffusers' own tests), and
        ChronoEdit's mid-loop edit (each entry and UniPC's `last_sample` sliced to two frames, with the latents,
        so the sample changes shape). A warm-up level the history cannot have reached is refused by name."""
        video = latents((1, 4, 5, 4, 4), torch.float32, seed=2)
        reference, ours = drop_in_pair(case)
        set_both(case, reference, ours)
        samples = [video, video.clone()]
        generators = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)]
        for scheduler in (reference, ours):
            scheduler.model_outputs = [0.1 * video + 0.2, 0.1 * video + 0.15, 0.1 * video + 0.1][
                : scheduler.config.solver_order
            ]
        steps = min(len(reference.timesteps) - 1, 6)  # a step left after them (Wan Turbo's 4-step schedule)
        for index, t in enumerate(reference.timesteps[:steps]):
            for side, scheduler in enumerate((reference, ours)):
                if index == steps // 2:  # ChronoEdit, between its reasoning and its final steps
                    for j in range(len(scheduler.model_outputs)):
                        if scheduler.model_outputs[j] is not None:
                            scheduler.model_outputs[j] = scheduler.model_outputs[j][:, :, [0, -1]]
                    for name in ("last_sample", "sample"):  # UniPC's corrector input, singlestep DPM's start
                        if getattr(scheduler, name, None) is not None:
                            setattr(scheduler, name, getattr(scheduler, name)[:, :, [0, -1]])
                    samples[side] = samples[side][:, :, [0, -1]]
                kwargs = {"generator": generators[side]} if case.stochastic else {}
                samples[side] = prev_sample(
                    step_call(case, scheduler, toy_model(samples[side], t), t, samples[side], False, **kwargs)
                )
            assert samples[1].shape == samples[0].shape
            torch.testing.assert_close(samples[1], samples[0], rtol=0, atol=BOUND * samples[0].abs().max().item())
            if case.exact():
                assert torch.equal(samples[1], samples[0]), f"step {index}"
        ours.lower_order_nums = steps + 1
        with pytest.raises(ValueError, match="lower_order_nums"):
            step_call(case, ours, toy_model(samples[1], ours.timesteps[steps]), ours.timesteps[steps], samples[1])

    @configs(where=has_drop_in)
    def test_drop_in_with_a_bf16_model_returns_the_references_dtype(self, case: Case) -> None:
        reference, ours = drop_in_pair(case)
        set_both(case, reference, ours)
        drop_in_loop(case, reference, ours, torch.randn(SHAPE), model_dtype=torch.bfloat16)

    @configs(where=has_drop_in)
    def test_drop_in_api_is_the_references(self, spec: Spec) -> None:
        """Name, constructor, `set_timesteps` and `step` signatures, config, compatibles, order, `init_noise_sigma`."""
        reference, ours = drop_in_defaults(spec)
        reference_class, ours_class = type(reference), drop_in.drop_in_class(spec.scheduler)
        assert ours_class.__name__ == reference_class.__name__
        for mixin in (diffusers.SchedulerMixin, diffusers.ConfigMixin):  # MOVA's sglang classes: neither
            assert issubclass(ours_class, mixin) == issubclass(reference_class, mixin), mixin
        assert issubclass(ours_class, reference_class)  # every `isinstance` a pipeline makes holds
        assert inspect.signature(ours_class.__init__) == inspect.signature(reference_class.__init__)
        for method in ("set_timesteps", "step"):
            assert inspect.signature(getattr(ours, method)) == inspect.signature(getattr(reference, method)), method
        assert config_of(ours) == config_of(reference)
        assert list(getattr(ours, "_compatibles", [])) == list(getattr(reference_class, "_compatibles", []))
        assert hasattr(ours, "compatibles") == hasattr(reference, "compatibles")
        if hasattr(reference, "compatibles"):
            assert [c.__name__ for c in ours.compatibles] == [c.__name__ for c in reference.compatibles]
        assert ours.order == reference.order
        assert hasattr(ours, "init_noise_sigma") == hasattr(reference, "init_noise_sigma")
        if hasattr(reference, "init_noise_sigma"):
            assert ours.init_noise_sigma == reference.init_noise_sigma
        parameters = inspect.signature(reference_class.__init__).parameters.values()
        if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):  # DDIMInverse's **kwargs
            assert config_of(ours_class(not_an_option=1)) == config_of(reference_class(not_an_option=1))
        else:
            with pytest.raises(TypeError):
                ours_class(not_an_option=1)

    @configs(where=saves_config)
    def test_drop_in_config_round_trips_through_files(self, case: Case, tmp_path: Any) -> None:
        """`save_config` / `from_pretrained`, ours to ours, ours to the reference's class and back; where the
        reference cannot save its config (sglang's ComfyUI class: its `args` key), ours fails as it does."""
        reference, ours = drop_in_pair(case)
        ours_class = type(ours)
        try:
            reference.save_config(tmp_path / "reference")
        except Exception as error:  # whatever the reference raises, ours must raise too
            with pytest.raises(type(error)):
                ours.save_config(tmp_path / "ours")
            return
        ours.save_config(tmp_path / "ours")
        again = ours_class.from_pretrained(tmp_path / "ours")
        assert type(again) is ours_class and public(again.config) == public(ours.config)
        theirs = type(reference).from_pretrained(tmp_path / "ours")
        assert public(theirs.config) == public(ours.config)
        theirs.save_config(tmp_path / "theirs")
        assert public(ours_class.from_pretrained(tmp_path / "theirs").config) == public(theirs.config)

    @configs(where=lambda case: has_drop_in(case) and "img2img" not in case.spec.drop_in_gaps)
    def test_drop_in_img2img_starts_at_its_begin_index(self, case: Case) -> None:
        for strength in (0.5, 0.75):
            reference, ours = drop_in_pair(case)
            set_both(case, reference, ours, steps=10)
            begin = int(10 - 10 * strength) * reference.order  # the img2img pipelines' get_timesteps
            begin_at(reference, begin)
            begin_at(ours, begin)
            assert getattr(ours, "begin_index", begin) == begin
            image, noise = torch.randn(SHAPE), torch.randn(SHAPE)
            t = reference.timesteps[begin : begin + 1].repeat(SHAPE[0])
            x = noise  # a reference that noises nothing (DDIMInverse's, IPNDM's) starts from the noise itself
            if hasattr(reference, "add_noise") or hasattr(reference, "scale_noise"):
                x = noised_alike(reference, ours, image, noise, t)
                if x is None:  # one timestep for the batch (MOVA's sglang classes), as their pipelines pass it
                    x = noised_alike(reference, ours, image, noise, t[0])
                if x is None:  # a noising that takes more (Helios' DMD `add_noise`: the tables): from the noise
                    x = noise
            assert drop_in_loop(case, reference, ours, x, start=begin) == len(reference.timesteps) - begin

    @configs(where=drop_in_noises)
    def test_drop_in_noising_looks_up_each_rows_timestep(self, case: Case) -> None:
        """No begin index: each row's sigma is found by its timestep; after steps (inpainting): the step index."""
        reference, ours = drop_in_pair(case)
        set_both(case, reference, ours, steps=10, lookup=True)
        image, noise = torch.randn(SHAPE), torch.randn(SHAPE)
        t = reference.timesteps[[1, 6]]
        # FlowMatchHeun's `scale_noise` takes one timestep (its step index's), as do MOVA's sglang classes: ours alike
        for rows in (t, t[[1, 1]]):
            noised_alike(reference, ours, image, noise, rows)
        set_both(case, reference, ours, steps=10)
        begin_at(reference, 2)
        begin_at(ours, 2)
        x = y = image
        for step_t in reference.timesteps[2:5]:
            x = prev_sample(step_call(case, reference, toy_model(x, step_t), step_t, x))
            y = prev_sample(step_call(case, ours, toy_model(y, step_t), step_t, y))
        assert getattr(ours, "step_index", None) == getattr(reference, "step_index", None)
        noised_alike(reference, ours, image, noise, t)

    @configs(where=has_drop_in)
    def test_drop_in_first_step_finds_its_index_by_timestep(self, case: Case) -> None:
        reference, ours = drop_in_pair(case)
        set_both(case, reference, ours, steps=10, lookup=True)
        assert drop_in_loop(case, reference, ours, torch.randn(SHAPE), start=4) == len(reference.timesteps) - 4
        assert getattr(ours, "step_index", None) == getattr(reference, "step_index", None)

    @configs(where=has_drop_in)
    def test_drop_in_unknown_first_timestep_is_handled_as_the_reference(self, case: Case) -> None:
        """A first `step` at a timestep that is not in the table: the same error, or the same index and result."""
        reference, ours = drop_in_pair(case)
        set_both(case, reference, ours, steps=6)
        sample = latents((1, 4, 8, 8), torch.float32, 0)
        unknown = torch.tensor(123.25).to(reference.timesteps.dtype)
        assert not bool((reference.timesteps == unknown).any())
        outcomes = []
        for scheduler in (reference, ours):
            try:
                outcomes.append(prev_sample(step_call(case, scheduler, torch.tanh(sample), unknown, sample)))
            except Exception as error:  # whatever the reference raises, ours must raise too
                outcomes.append(type(error))
        if isinstance(outcomes[0], type):
            assert outcomes[1] is outcomes[0]
        else:
            assert torch.equal(outcomes[1], outcomes[0])
            assert getattr(ours, "step_index", None) == getattr(reference, "step_index", None)

    @configs(where=has_drop_in)
    def test_drop_in_needs_set_timesteps_first(self, spec: Spec) -> None:
        """`step` before `set_timesteps` raises diffusers' ValueError, or does what the reference does (DDPM's steps
        its training schedule, and fails as diffusers' on a float timestep); the tables read are diffusers' defaults."""
        reference, ours = drop_in_defaults(spec)
        case = spec.case({})
        x = torch.randn(SHAPE)
        for timestep in (torch.tensor(999.0), torch.tensor(999)):
            outcomes = []
            for scheduler in (reference, ours):
                takes_generator = "generator" in inspect.signature(scheduler.step).parameters
                kwargs = {"generator": torch.Generator().manual_seed(0)} if takes_generator else {}
                try:
                    with torch.random.fork_rng():  # a scheduler seeding itself from the global generator (DPM-SDE)
                        torch.manual_seed(0)
                        outcomes.append(prev_sample(step_call(case, scheduler, x, timestep, x, **kwargs)))
                except Exception as error:  # whatever the reference raises, ours must raise too
                    outcomes.append(error)
            if isinstance(outcomes[1], ValueError) and "set_timesteps" in str(outcomes[1]):
                continue  # the drop-in asks for a schedule first, in diffusers' words (FlowMatchEuler's steps anyway)
            if isinstance(outcomes[0], Exception):
                assert type(outcomes[1]) is type(outcomes[0]), outcomes
                if isinstance(outcomes[0], ValueError):  # diffusers' words: no schedule yet, or Euler's integer index
                    assert "set_timesteps" in str(outcomes[1]) or str(outcomes[1]) == str(outcomes[0])
            else:
                assert torch.equal(outcomes[1], outcomes[0])
        assert_same(reference.timesteps, ours.timesteps, "timesteps")
        assert hasattr(ours, "sigmas") == hasattr(reference, "sigmas")
        if hasattr(reference, "sigmas"):
            assert_same(reference.sigmas, ours.sigmas, "sigmas")

    @configs("every", where=has_drop_in)
    def test_drop_in_exposes_what_the_reference_does(self, case: Case) -> None:
        """Every public attribute and property of the reference, after construction, `set_timesteps` and each of the
        first steps, equal on the drop-in: the training tables (`betas`, `alphas_cumprod`, `alpha_t`, `lambda_t`,
        ...), `sigma_min`/`sigma_max`, the solver history (`model_outputs`, `lower_order_nums`, `last_sample`),
        `step_index`, `begin_index`; and each drop-in owns its tensors."""
        reference, ours = drop_in_pair(case)
        other = drop_in_pair(case)[1]
        names = sorted(
            {name for name in vars(reference) if not name.startswith("_")}
            | {name for name, value in inspect.getmembers(type(reference)) if isinstance(value, property)} - {"config"}
        )
        names = [name for name in names if not name.startswith("_")]

        def compare(when: str) -> None:
            # diffusers sets some attributes in its first `step` (UniPC's `this_order`): those it has by now too.
            for name in sorted({*names, *(name for name in vars(reference) if not name.startswith("_"))}):
                if not hasattr(reference, name):  # not set yet (FlowMatchHeun's `dt` before set_timesteps): nor ours
                    assert not hasattr(ours, name), f"{when}: {name}"
                elif not inspect.ismethod(getattr(reference, name)):  # a spec's adapter method on its instance
                    assert_same(getattr(reference, name), getattr(ours, name), f"{when}: {name}")

        compare("constructed")
        for name in names:
            value = getattr(ours, name, None)  # None: not set yet, as on the reference (checked above)
            if isinstance(value, torch.Tensor) and value.numel():  # an empty one (pi-Flow's before set_timesteps): none
                assert value.untyped_storage().data_ptr() != getattr(other, name).untyped_storage().data_ptr(), name
        set_both(case, reference, ours)
        compare("after set_timesteps")
        sample = latents(SHAPE, torch.float32, seed=0)
        samples = [sample, sample.clone()]
        generators = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)]
        for index, t in enumerate(reference.timesteps[:3]):
            for side, scheduler in enumerate((reference, ours)):
                kwargs = generator_kwargs(scheduler, generators[side], case.stochastic)
                step = step_call(case, scheduler, toy_model(samples[side], t), t, samples[side], False, **kwargs)
                samples[side] = prev_sample(step)
            compare(f"after step {index}")

    @configs(where=has_drop_in)
    def test_as_diffusers_from_either_scheduler(self, case: Case) -> None:
        reference = drop_in_pair(case)[0]
        ours = drop_in.as_diffusers(reference)
        assert type(ours) is drop_in.drop_in_class(case.spec.scheduler)
        assert config_of(ours) == config_of(reference)
        from_functional = drop_in.as_diffusers(case.scheduler())
        assert type(from_functional) is type(ours) and config_of(from_functional) == config_of(reference)
        set_both(case, reference, ours)
        drop_in_loop(case, reference, ours, torch.randn(SHAPE))


def without_step_arguments(scheduler: Any) -> Any:
    """`scheduler` with its `step()`-argument options (`Option.step_argument`) at their defaults: what a config
    mapped from diffusers' (which holds none of them) gives."""
    declared = declarations.declared(type(scheduler)).items()
    defaults = {name: option.default for name, option in declared if option.step_argument}
    return attrs.evolve(scheduler, **defaults)
