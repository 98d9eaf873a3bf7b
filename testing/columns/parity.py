"""Parity with the reference on every step: timestep and sigma tables equal, every float32 step within 1e-5 of the
trajectory's norm and bit-identical where the spec says it is (`Spec.exact`); half precision and a bf16 model with
float32 latents within one ulp; float64 close to float32; img2img starts; and a hypothesis grid over the options."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functional_sched.machinery import options as declarations

from .. import strategies
from ..parity import (
    ParityResult,
    begin_at,
    calls,
    generator_kwargs,
    has_repeated_timesteps,
    latents,
    loop_parity_run,
    loop_timesteps,
    parity_run,
    reference_noise,
    run_reference_loop,
    sigma_table,
    step_noise,
    toy_model,
    ulp,
)
from ..requests import SHAPE, tensor_leaves
from ..selection import configs, has_parity_reference, has_reference
from ..spec import Case, Config, Spec

#: A float32 step passes within BOUND times the max-abs of the reference's sample after that step (DESIGN.md).
BOUND = 1e-5
#: Methods of a class are called from a new instance per test: the health check that flags it does not apply to a
#: stateless suite.
GRID_SETTINGS: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.differing_executors, HealthCheck.too_slow],
}


def assert_parity(result: ParityResult, *, exact: bool, steps: int | None = None) -> None:
    """Tables equal; every step within the bound, then (if `exact`) bit-identical.

    A NaN or inf must sit where the reference has the same (a zero-length final step of order 3 divides 0 by 0 on
    both sides); the bound applies to the finite entries.
    """
    assert result.ours_timesteps.dtype == result.ref_timesteps.dtype
    assert torch.equal(result.ours_timesteps, result.ref_timesteps), (result.ours_timesteps, result.ref_timesteps)
    if result.ref_sigmas is not None:
        assert result.ours_sigmas.dtype == result.ref_sigmas.dtype
        torch.testing.assert_close(result.ours_sigmas, result.ref_sigmas, rtol=0, atol=0, equal_nan=True)
    assert result.steps == (steps if steps is not None else len(result.ref_timesteps)) and result.steps > 0
    assert all(result.timestep_agrees), "our timestep(state) differs from the reference's t"
    assert bool(torch.isfinite(result.ref_samples[0]).all()), "the first step of the reference's loop is not finite"
    for index, (ours, ref) in enumerate(zip(result.ours_samples, result.ref_samples, strict=True)):
        assert ours.dtype == ref.dtype
        finite = torch.isfinite(ref)
        assert torch.equal(torch.isfinite(ours), finite), f"step {index}: finite where the reference is not, or not"
        torch.testing.assert_close(ours[~finite], ref[~finite], rtol=0, atol=0, equal_nan=True)  # same NaN, same inf
        if bool(finite.any()):
            scale = ref[finite].double().abs().max().item() or 1.0
            error = (ours[finite].double() - ref[finite].double()).abs().max().item()
            assert error <= BOUND * scale, f"step {index}: relative error {error / scale:.3e}"
    if exact:
        for index, (ours, ref) in enumerate(zip(result.ours_samples, result.ref_samples, strict=True)):
            torch.testing.assert_close(
                ours, ref, rtol=0, atol=0, equal_nan=True, msg=lambda m, i=index: f"step {i}: {m}"
            )


def assert_stepwise_parity(case: Case, sample_dtype: torch.dtype, model_dtype: torch.dtype, situation: str) -> None:
    """Both sides start every step from the reference's previous sample (cast to `sample_dtype`, as pipelines cast
    latents back) with the same model output in `model_dtype`: ours, cast to the dtype the reference returns,
    equals it (`exact`), or lies within the design's bound (1e-5 of the sample's max-abs) or one ulp of that dtype at
    the sample's max-abs, whichever is wider. Free-running loops would compare the reference's roundings of every
    step, not one step."""
    reference = case.reference()
    reference.set_timesteps(**case.reference_kwargs())
    begin_at(reference, 0)
    sched = case.scheduler()
    sample = latents(SHAPE, torch.float32, seed=5).to(sample_dtype)
    state = sched.init(sample=sample, **case.init_kwargs())
    g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ref_kwargs = generator_kwargs(reference, g_ref, sched.stochastic)
    ref_kwargs.update(case.reference_step_kwargs)
    exact = case.exact(situation)
    for index, t in enumerate(loop_timesteps(reference)):
        model_output = toy_model(sample, t).to(model_dtype)
        ref = reference.step(model_output, t, sample, return_dict=False, **ref_kwargs)[0]
        noise = reference_noise(case, sched, state, sample, g_ours, model_dtype, reference)
        ours, state = sched.step(state, model_output, sample, noise=noise)
        expected = sched._output_dtype(sample)  # the sample's, or float32 where the reference keeps it
        assert ours.dtype == expected, f"step {index}: ours is {ours.dtype}, the sample {sample_dtype}"
        ours = ours.to(ref.dtype)
        gap = (ours.double() - ref.double()).abs()
        if exact:
            assert torch.equal(ours, ref), f"{situation}, step {index}: max diff {gap.max().item():.3e}"
        else:  # the design's bound, or one ulp of a half-precision result, at the trajectory's scale
            scale = ref.abs().max()
            allowed = max(BOUND * scale.item(), ulp(scale).item())
            assert gap.max().item() <= allowed, f"{situation}, step {index}: max diff {gap.max().item():.3e}"
        sample = ref.to(sample_dtype)


def reference_breaks_down(case: Case, steps: int | None = None) -> bool:
    """Whether the reference fails on this config and schedule: it raises, or its tables or its loop (with the toy
    model) hold a NaN or an infinity, run as text-to-image pipelines run it (the scheduler finds its first step by
    looking the timestep up) or from `set_begin_index(0)`; a whole-loop reference (`Spec.reference_loop`): it raises
    or returns a NaN or an infinity."""
    if case.spec.reference_loop is not None:
        try:
            final = run_reference_loop(case, latents(SHAPE, torch.float32, 0), steps=steps)[2]
            return not bool(torch.isfinite(final).all())
        except Exception:  # whatever it raises (k-diffusion's UnboundLocalError included) is a breakdown
            return True
    return any(_reference_loop_fails(case, steps, begin_index) for begin_index in (False, True))


def _reference_loop_fails(case: Case, steps: int | None, begin_index: bool) -> bool:
    try:
        reference = case.reference()
        reference.set_timesteps(**case.reference_kwargs(steps))
        tables = [reference.timesteps] + [table for table in [sigma_table(reference)] if table is not None]
        if not all(bool(torch.isfinite(table.double()).all()) for table in tables):
            return True
        if len(loop_timesteps(reference)) == 0:  # no step to take (LTXEulerAncestralRF's table of one sigma)
            return True
        if begin_index:
            begin_at(reference, 0)
        sample = latents(SHAPE, torch.float32, 0)
        generator = torch.Generator().manual_seed(0)
        kwargs = generator_kwargs(reference, generator, case.stochastic)
        kwargs.update(case.reference_step_kwargs)
        for t in reference.timesteps:
            sample = reference.step(toy_model(sample, t), t, sample, return_dict=False, **kwargs)[0]
            if not bool(torch.isfinite(sample).all()):
                return True
    except Exception:  # whatever it raises (UnboundLocalError included) is a breakdown
        return True
    return False


def check_parity(case: Case, *, steps: int | None = None, seed: int = 0) -> None:
    """`assert_parity` of a full loop; where ours refuses the schedule (`init` raises ValueError), the reference
    must break down there (`reference_breaks_down`): ours refuses only what would be silently wrong."""
    try:
        case.scheduler().plan(**case.init_kwargs(steps))
    except ValueError as error:
        assert reference_breaks_down(case, steps), f"ours refuses what the reference runs: {error}"
        return
    run = loop_parity_run if case.spec.reference_loop is not None else parity_run
    assert_parity(run(case, steps=steps, seed=seed), exact=case.exact())


class Parity:
    """Parity with the reference (diffusers' class, or the spec's own reference)."""

    @configs("every", where=has_parity_reference)
    def test_parity(self, case: Case) -> None:
        check_parity(case)

    @configs("every", where=has_parity_reference)
    def test_parity_at_step_count_extremes(self, case: Case) -> None:
        """One step, two, three, and a long schedule (warm-up and final-order rules live at the ends)."""
        for steps in (1, 2, 3, 25):
            check_parity(case, steps=steps)

    @configs(where=has_parity_reference)
    @settings(max_examples=6, **GRID_SETTINGS)
    @given(data=st.data())
    def test_parity_grid(self, spec: Spec, data: st.DataObject) -> None:
        """A few drawn configs in the default run; the full grid is `test_parity_grid_full` (slow)."""
        self._grid(data.draw(strategies.cases(spec)), data.draw(st.integers(0, 3)))

    @configs(where=has_parity_reference, slow=True)
    @settings(max_examples=80, **GRID_SETTINGS)
    @given(data=st.data())
    def test_parity_grid_full(self, spec: Spec, data: st.DataObject) -> None:
        self._grid(data.draw(strategies.cases(spec)), data.draw(st.integers(0, 3)))

    @staticmethod
    def _grid(case: Case, seed: int) -> None:
        check_parity(case, seed=seed)

    @configs(where=has_parity_reference, slow=True)
    def test_each_option_alone(self, spec: Spec) -> None:
        """Every value worth trying of every declared option (`strategies.candidates`), one option at a time on the
        first config, at several step counts: each option is covered whatever the grid draws. A value the
        constructor refuses with the first config is skipped (its refusal has tests of its own)."""
        first = spec.configs[0]
        declared = declarations.declared(spec.scheduler)
        for name, option in declared.items():
            if name in spec.held:
                continue
            for value in strategies.candidates(option):
                options = {**first.options, name: value}
                if option.exclusive is not None and value:  # the other flags of its group off
                    options.update(
                        {
                            other: False
                            for other, o in declared.items()
                            if o.exclusive == option.exclusive and other != name
                        }
                    )
                try:
                    spec.scheduler(**options)
                except ValueError:
                    continue
                for steps in (1, 2, 3, 10, 25):
                    check_parity(spec.case(Config(f"{name}={value!r}", options, first.schedule)), steps=steps)

    @configs("every", where=has_reference)
    def test_half_precision_parity(self, case: Case) -> None:
        """Sample and model output in bf16 (and fp16): the reference upcasts and casts back; so do we."""
        for dtype, situation in ((torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
            assert_stepwise_parity(case, dtype, dtype, situation)
            if case.exact(situation):
                result = parity_run(case, dtype=dtype)
                assert all(result.identical), f"{situation}: {result.first_difference()}"

    @configs("every", where=has_reference)
    def test_float32_latents_with_a_bf16_model(self, case: Case) -> None:
        """float32 latents, bf16 model output: ours returns the sample's dtype, the reference maybe the model's;
        ours cast to the reference's dtype equals it (or lies within one ulp where the spec says so)."""
        assert_stepwise_parity(case, torch.float32, torch.bfloat16, "mixed")

    @configs(where=has_reference)
    def test_result_layout_follows_the_reference(self, spec: Spec) -> None:
        """A channels-last model output (a conv model's), a channels-last sample, or both: every step's result has
        the reference's strides as well as its values (the next model call's numerics depend on its input's
        layout: an in-place shortcut that kept the model output's layout changed a pipeline's image)."""
        case = spec.case(spec.configs[0])
        for sample_last, output_last in ((False, True), (True, False), (True, True)):
            reference = case.reference()
            reference.set_timesteps(**case.reference_kwargs())
            begin_at(reference, 0)
            sched = case.scheduler()
            sample = _laid_out(latents(SHAPE, torch.float32, seed=5), sample_last)
            state = sched.init(sample=sample, **case.init_kwargs())
            g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
            ref_kwargs = generator_kwargs(reference, g_ref, sched.stochastic)
            ref_kwargs.update(case.reference_step_kwargs)
            for index, t in enumerate(loop_timesteps(reference)):
                model_output = _laid_out(toy_model(sample, t), output_last)
                ref = reference.step(model_output, t, sample, return_dict=False, **ref_kwargs)[0]
                noise = reference_noise(case, sched, state, sample, g_ours, model_output.dtype, reference)
                ours, state = sched.step(state, model_output, sample, noise=noise)
                where = f"sample channels-last {sample_last}, output {output_last}, step {index}"
                assert ours.stride() == ref.stride(), f"{where}: strides {ours.stride()}, reference {ref.stride()}"
                torch.testing.assert_close(ours, ref, rtol=0, atol=BOUND * ref.abs().max().item(), msg=where)
                sample = ref

    @configs("every")
    def test_float64_runs_close_to_float32(self, case: Case) -> None:
        """float64 samples get float64 plans (the reference would downcast them): the loop keeps float64 throughout
        and stays within 1e-4 of our float32 loop."""
        sched = case.scheduler()
        start = latents(SHAPE, torch.float64, 0)
        trajectories = {}
        for dtype in (torch.float64, torch.float32):
            sample = start.to(dtype)
            state = sched.init(sample=sample, **case.init_kwargs())
            assert state.plan.coefficients.dtype == dtype
            generator = torch.Generator().manual_seed(1)
            samples = []
            for _ in range(calls(sched, state)):
                output = toy_model(sched.scale_model_input(state, sample), sched.timestep(state))
                noise = step_noise(case, SHAPE, generator).to(dtype) if sched.stochastic else None
                sample, state = sched.step(state, output, sample, noise=noise)
                assert sample.dtype == dtype
                # Every float the step computes with; the timestep table keeps the reference's dtype.
                floats = [state.plan.sigmas, state.plan.coefficients]
                rows = [leaf for path, leaf in tensor_leaves(state) if "plan" not in path]
                floats += [leaf for leaf in rows if leaf.is_floating_point()]
                if dtype == torch.float64:
                    assert all(leaf.dtype == dtype for leaf in floats), "a float64 state holds another float dtype"
                samples.append(sample)
            trajectories[dtype] = samples
        for index, (wide, narrow) in enumerate(zip(*trajectories.values(), strict=True)):
            assert bool(torch.isfinite(wide).all())
            scale = wide.abs().max().item()
            assert (wide - narrow.double()).abs().max().item() <= 1e-4 * scale, f"step {index}"

    @configs("every", where=has_reference)
    def test_img2img_start(self, case: Case) -> None:
        """`init(begin_index=k)` and `add_noise` against the reference's `set_begin_index(k)` and its noising at
        timesteps[k] (`add_noise`, or `scale_noise` for flow matching), then the rest of the loop; and rows at
        different steps noised as the reference noises each row at its own timestep (training-style)."""
        steps = max(case.steps, 4)
        begin = steps // 2
        reference = case.reference()
        reference.set_timesteps(**case.reference_kwargs(steps))
        sched = case.scheduler()
        image, noise = latents(SHAPE, torch.float32, 3), latents(SHAPE, torch.float32, 4)
        state = sched.init(sample=image, begin_index=begin, **case.init_kwargs(steps))
        noises = hasattr(reference, "add_noise") or hasattr(reference, "scale_noise")  # IPNDM's, DDIMInverse's: neither
        noises = noises and case.spec.reference_noises_as_it_steps
        if not has_repeated_timesteps(reference):  # the reference finds each row's index by its timestep
            rows = state.replace(step_index=torch.tensor([0, steps - 1]))
            timesteps = reference.timesteps[[0, steps - 1]]
            assert torch.equal(sched.timestep(rows), timesteps)
            if noises:
                assert torch.equal(sched.add_noise(rows, image, noise), noised(reference, image, noise, timesteps))
        begin_at(reference, begin)
        timestep = reference.timesteps[begin : begin + 1].repeat(SHAPE[0])
        assert torch.equal(sched.timestep(state), timestep)
        if noises:
            assert torch.equal(sched.add_noise(state, image, noise), noised(reference, image, noise, timestep))
        result = parity_run(case, steps=steps, begin_index=begin)
        assert_parity(result, exact=case.exact(), steps=len(result.ref_timesteps) - begin)


def noised(reference: Any, image: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The reference's noising of a clean sample: diffusers' `add_noise`, or `scale_noise` for flow matching."""
    if hasattr(reference, "add_noise"):
        return reference.add_noise(image, noise, timesteps)
    return reference.scale_noise(image, timesteps, noise)


def _laid_out(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
