"""diffusers' Helios drop-ins (`HeliosScheduler`, `HeliosDMDScheduler`) against diffusers' own objects, driven as
Helios' pipelines drive them: the base pipeline's one stage (custom sigmas, dynamic shift), the pyramid pipeline's
stages (`set_timesteps(n, stage_index, device, mu, is_amplify_first_chunk)`, one object across stages) and
Helios-Distilled's DMD steps (`cur_sampling_step`, `dmd_noisy_tensor`, the scheduler's own tables).

The conformance suite's drop-in columns hold the drop-ins to the libraries' classes in every spec config, each config
one stage set as the pipelines set it (tests/specs/helios.py: API, config, loops, read-outs); held here is what they
cannot express: one object across a pyramid's stages, bfloat16 latents, sglang's config rewritten after construction
(`init_sigmas_for_each_stage`), every output, the whole `step` return and every attribute a pipeline reads after every
step, and the DMD step's refusal of another scheduler's tables.
"""

from __future__ import annotations

from typing import Any

import diffusers
import pytest
import torch

from functional_sched.adapters import drop_in, from_diffusers, from_sglang
from functional_sched.testing.parity import latents, toy_model

MU = 1.919  # the base pipeline's mu for 384x640 (tests/specs/helios.py)
UNIPC_ATTRIBUTES = ("model_outputs", "timestep_list", "lower_order_nums", "last_sample", "this_order", "step_index")
READ = ("timesteps", "sigmas", "ori_start_sigmas", "timesteps_per_stage", "sigmas_per_stage", "num_inference_steps")


def same(theirs: Any, mine: Any, what: str) -> None:
    if isinstance(theirs, torch.Tensor):
        assert isinstance(mine, torch.Tensor) and mine.dtype == theirs.dtype, what
        assert mine.device == theirs.device and torch.equal(mine, theirs), what
    elif isinstance(theirs, dict):
        assert mine.keys() == theirs.keys(), what
        for key in theirs:
            same(theirs[key], mine[key], f"{what}[{key}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(mine) == len(theirs), what
        for index, (a, b) in enumerate(zip(theirs, mine, strict=True)):
            same(a, b, f"{what}[{index}]")
    else:
        assert mine == theirs, f"{what}: {mine!r} vs {theirs!r}"


def attributes(reference: Any, ours: Any, names: tuple[str, ...], when: str) -> None:
    for name in names:
        assert hasattr(ours, name) == hasattr(reference, name), f"{when}: {name}"
        if hasattr(reference, name):
            same(getattr(reference, name), getattr(ours, name), f"{when}: {name}")


UNIPC_RUNS = [
    # (options, set_timesteps calls): the pyramid pipeline's three stages on one object, Euler's, a corner no spec
    # config has (the base pipeline's one stage and the others: the suite's columns).
    ({"use_dynamic_shifting": True}, [{"num_inference_steps": 8, "stage_index": i, "mu": MU} for i in range(3)]),
    ({"scheduler_type": "euler"}, [{"num_inference_steps": 6, "stage_index": i} for i in range(3)]),
    ({"lower_order_final": False, "disable_corrector": [0, 2]}, [{"num_inference_steps": 6, "stage_index": 1}]),
]
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)]


@pytest.mark.parametrize(("options", "calls"), UNIPC_RUNS, ids=["pyramid", "euler", "no-lof"])
@pytest.mark.parametrize(("sample_dtype", "model_dtype"), DTYPES)
def test_helios_drop_in_steps_as_diffusers(
    options: dict[str, Any], calls: list[dict[str, Any]], sample_dtype: torch.dtype, model_dtype: torch.dtype
) -> None:
    reference = diffusers.HeliosScheduler(**options)
    ours = drop_in.DROP_INS["HeliosScheduler"](**options)
    attributes(reference, ours, READ + UNIPC_ATTRIBUTES, "constructed")
    x = latents((1, 4, 2, 6, 6), sample_dtype)
    y = x.clone()
    for call in calls:
        for scheduler in (reference, ours):
            scheduler.set_timesteps(**call)
        attributes(reference, ours, READ + UNIPC_ATTRIBUTES, f"{call}")
        for index, t in enumerate(reference.timesteps):
            output = toy_model(x, t).to(model_dtype)
            return_dict = index % 2 == 0
            a = reference.step(output, t, x, generator=torch.Generator().manual_seed(0), return_dict=return_dict)
            b = ours.step(output, t, y, generator=torch.Generator().manual_seed(0), return_dict=return_dict)
            assert type(b) is type(a)
            if return_dict:
                same(a.to_tuple(), b.to_tuple(), f"step {index}")
                x, y = a.prev_sample, b.prev_sample
            else:
                same(a, b, f"step {index}")
                x, y = a[0], b[0]
            attributes(reference, ours, UNIPC_ATTRIBUTES, f"{call} step {index}")


DMD_RUNS = [
    # Helios-Distilled: linear shift, the first chunk amplified in stage 0; then a dynamic shift; three stages each.
    (
        {"time_shift_type": "linear"},
        [{"num_inference_steps": 3, "stage_index": i, "is_amplify_first_chunk": i == 0} for i in range(3)],
    ),
    ({"use_dynamic_shifting": True}, [{"num_inference_steps": 3, "stage_index": i, "mu": 1.0} for i in range(3)]),
]


@pytest.mark.parametrize(("options", "calls"), DMD_RUNS, ids=["distilled", "dynamic"])
@pytest.mark.parametrize(("sample_dtype", "model_dtype"), DTYPES)
def test_helios_dmd_drop_in_steps_as_diffusers(
    options: dict[str, Any], calls: list[dict[str, Any]], sample_dtype: torch.dtype, model_dtype: torch.dtype
) -> None:
    """Helios-Distilled's loop: each stage renoises toward its start point (`dmd_noisy_tensor`), the last step
    returns x0; the tables passed are the scheduler's own, `cur_sampling_step` the step count."""
    reference = diffusers.HeliosDMDScheduler(**options)
    ours = drop_in.DROP_INS["HeliosDMDScheduler"](**options)
    x = latents((1, 4, 2, 6, 6), sample_dtype)
    y = x.clone()
    for call in calls:
        for scheduler in (reference, ours):
            scheduler.set_timesteps(**call)
        attributes(reference, ours, (*READ, *UNIPC_ATTRIBUTES), f"{call}")
        start = x.clone()
        for index, t in enumerate(reference.timesteps):
            output = toy_model(x, t).to(model_dtype)
            outs = []
            for scheduler, sample in ((reference, x), (ours, y)):
                outs.append(
                    scheduler.step(
                        output,
                        t,
                        sample,
                        return_dict=index % 2 == 1,
                        cur_sampling_step=index,
                        dmd_noisy_tensor=start,
                        dmd_sigmas=scheduler.sigmas,
                        dmd_timesteps=scheduler.timesteps,
                        all_timesteps=scheduler.timesteps,
                    )
                )
            assert type(outs[1]) is type(outs[0])
            outs = [out.to_tuple() if index % 2 == 1 else out for out in outs]
            same(outs[0], outs[1], f"{call} step {index}")
            x, y = outs[0][0], outs[1][0]
            attributes(reference, ours, UNIPC_ATTRIBUTES, f"{call} step {index}")


def test_helios_drop_ins_api() -> None:
    """What the classes lack (Helios has no add_noise); `from_diffusers` of a drop-in maps as of diffusers' object;
    another table than its own in a DMD step is refused by name."""
    for name in ("HeliosScheduler", "HeliosDMDScheduler"):
        reference_class, ours_class = getattr(diffusers, name), drop_in.DROP_INS[name]
        reference, ours = (
            reference_class(stages=2, stage_range=[0, 0.5, 1], gamma=0.5),
            ours_class(stages=2, stage_range=[0, 0.5, 1], gamma=0.5),
        )
        assert from_diffusers(ours) == from_diffusers(reference)
        for attribute in ("add_noise", "init_noise_sigma"):
            assert hasattr(ours, attribute) == hasattr(reference, attribute), (name, attribute)
    ours = drop_in.DROP_INS["HeliosDMDScheduler"]()
    ours.set_timesteps(3, 0)
    x = torch.ones(1, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="dmd_sigmas"):
        ours.step(x, ours.timesteps[0], x, dmd_noisy_tensor=x, dmd_sigmas=ours.sigmas * 2, dmd_timesteps=ours.timesteps)


# ---------------------------------------------------------------------------------------------------- sglang's
def sglang_pair(options: dict[str, Any], rewrite: dict[str, Any] | None) -> tuple[Any, Any]:
    """sglang's `HeliosScheduler` and the drop-in, built from a checkpoint's config and, for the pyramid pipelines,
    rewritten as sglang's `HeliosPipeline.initialize_pipeline` does (`stages`, `scheduler_type`, `gamma`, then
    `init_sigmas_for_each_stage()`)."""
    from functional_sched.adapters import sglang as sglang_adapter

    reference = sglang_adapter.sglang_class("HeliosScheduler")(**options)
    ours = drop_in.SGLANG_DROP_INS["HeliosScheduler"](**options)
    if rewrite is not None:
        for scheduler in (reference, ours):
            for key, value in rewrite.items():
                setattr(scheduler.config, key, value)
            scheduler.init_sigmas_for_each_stage()
    return reference, ours


DYNAMIC = {"use_dynamic_shifting": True, "time_shift_type": "exponential"}
SGLANG_RUNS = [
    # Helios-Mid (three UniPC stages), Helios-Distilled (three DMD stages, the first chunk amplified), and Euler stages,
    # each with the config rewritten as sglang's pipeline rewrites it (Helios-Base's one stage: the suite's columns).
    (
        DYNAMIC,
        {"stages": 3, "scheduler_type": "unipc", "gamma": 1 / 3},
        [{"num_inference_steps": 6, "stage_index": i, "mu": MU} for i in range(3)],
    ),
    (
        {"time_shift_type": "linear"},
        {"stages": 3, "scheduler_type": "dmd", "gamma": 1 / 3},
        [{"num_inference_steps": 3, "stage_index": i, "is_amplify_first_chunk": i == 0} for i in range(3)],
    ),
    ({}, {"stages": 3, "scheduler_type": "euler", "gamma": 1 / 3}, [{"num_inference_steps": 5, "stage_index": 1}]),
]


@pytest.mark.skipif(not drop_in.SGLANG_DROP_INS, reason="sglang's wheel is not installed")
@pytest.mark.parametrize(("options", "rewrite", "calls"), SGLANG_RUNS, ids=["mid", "distilled", "euler"])
@pytest.mark.parametrize(("sample_dtype", "model_dtype"), DTYPES)
def test_sglang_helios_drop_in_runs_sglangs_pipelines(
    options: dict[str, Any],
    rewrite: dict[str, Any] | None,
    calls: list[dict[str, Any]],
    sample_dtype: torch.dtype,
    model_dtype: torch.dtype,
) -> None:
    """sglang's Helios stages on both objects: every table the stages read, every step's output (and `step`'s
    return), and the solver history after each step, bit for bit."""
    reference, ours = sglang_pair(options, rewrite)
    stage_tables = ("ori_start_sigmas", "timesteps_per_stage", "sigmas_per_stage")
    attributes(reference, ours, ("timesteps", "sigmas", "num_inference_steps", *stage_tables), "constructed")
    assert from_sglang(ours) == from_sglang(reference)
    dmd = reference.config.scheduler_type == "dmd"
    x = latents((1, 4, 2, 6, 6), sample_dtype)
    y = x.clone()
    for call in calls:
        for scheduler in (reference, ours):
            scheduler.set_timesteps(**call)
        attributes(reference, ours, ("timesteps", "sigmas", "num_inference_steps", *UNIPC_ATTRIBUTES), f"{call}")
        start = x.clone()
        for index, t in enumerate(reference.timesteps):
            output = toy_model(x, t).to(model_dtype)
            outs = []
            for scheduler, sample in ((reference, x), (ours, y)):
                extra = {}
                if dmd:
                    extra = {
                        "cur_sampling_step": index,
                        "dmd_noisy_tensor": start,
                        "dmd_sigmas": scheduler.sigmas,
                        "dmd_timesteps": scheduler.timesteps,
                        "all_timesteps": scheduler.timesteps,
                    }
                outs.append(scheduler.step(output, t, sample, return_dict=index % 2 == 1, **extra))
            assert type(outs[1]) is type(outs[0])
            outs = [(out.prev_sample,) if index % 2 == 1 else out for out in outs]
            same(outs[0], outs[1], f"{call} step {index}")
            x, y = outs[0][0], outs[1][0]
            attributes(reference, ours, UNIPC_ATTRIBUTES, f"{call} step {index}")
