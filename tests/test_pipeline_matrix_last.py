"""The last drop-ins inside diffusers' pipelines: tiny random components, one seed, bit-equal output.

The same check as `test_pipeline_matrix_video_more.py` (whose `_run` and `test_pipeline_matrix_video._assert_same` it
reuses) for the pipelines built in `_tiny_matrix_last`: Cosmos 3 Omni (UniPC, with diffusers' and its native flow
schedule), Kandinsky 6 SR (one `retrieve_timesteps` per tile) and TI2VA (audio latents stepped on a deep copy of the
scheduler), SANA-WM, DreamLite Mobile and the combined VisualCloze (generation, then SDEdit upsampling on the same
scheduler). Each case runs the pipeline once with diffusers' scheduler and once with `as_diffusers(...)` of the same
scheduler, both from `torch.Generator().manual_seed(0)`, and requires every output (video, audio) to be equal bit for
bit and both schedulers to end at the same step index. Pipelines that could not be run are reported as skips with the
reason; those named but without one of the three schedulers are checked to be so. Every case is `slow`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import _tiny_matrix_last as last
import diffusers
import pytest
import test_pipeline_matrix_video as first
import test_pipeline_matrix_video_more as video_more

from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import as_diffusers

diffusers.utils.logging.set_verbosity_error()

#: name -> (builder, extra marks). Every case is also `slow`.
CASES: dict[str, tuple[Callable[[], last.Case], list[Any]]] = {
    "Cosmos3OmniPipeline": (last.cosmos3_omni, []),
    "Cosmos3OmniPipeline (native flow schedule)": (lambda: last.cosmos3_omni(use_native_flow_schedule=True), []),
    "Kandinsky6SRPipeline": (last.kandinsky6_sr, []),
    "Kandinsky6TI2VAPipeline": (last.kandinsky6_ti2va, []),
    "SanaWMPipeline": (last.sana_wm, []),
    "DreamLiteMobilePipeline": (last.dreamlite_mobile, []),
    "VisualClozePipeline": (last.visualcloze, []),
}

_SCHEDULERS = (
    diffusers.FlowMatchEulerDiscreteScheduler,
    diffusers.DPMSolverMultistepScheduler,
    diffusers.UniPCMultistepScheduler,
)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=marks) for name, (_, marks) in CASES.items()])
def test_pipeline_bit_equal(name: str) -> None:
    case = CASES[name][0]()
    reference_scheduler = copy.deepcopy(case.scheduler)
    ours_scheduler = as_diffusers(copy.deepcopy(case.scheduler))
    assert drop_in.is_drop_in(ours_scheduler)
    assert type(ours_scheduler).__name__ == type(case.scheduler).__name__

    reference = video_more._run(case, reference_scheduler)
    ours = video_more._run(case, ours_scheduler)

    assert ours_scheduler.num_inference_steps is not None  # the pipeline planned on the drop-in
    assert ours_scheduler.step_index == reference_scheduler.step_index
    assert len(reference) == len(ours)
    for reference_output, our_output in zip(reference, ours, strict=True):  # Kandinsky 6 TI2VA: video and audio
        first._assert_same(reference_output, our_output)


@pytest.mark.slow
def test_what_is_not_run_names_a_real_pipeline_and_why() -> None:
    """Each pipeline recorded as not run is a diffusers pipeline, with the reason it is not."""
    for name, reason in last.CANNOT_RUN_OFFLINE.items():
        assert hasattr(diffusers, name) and reason.strip(), name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(last.OUT_OF_SCOPE))
def test_out_of_scope(name: str) -> None:
    """The pipelines recorded as out of scope really take none of the three schedulers."""
    hint = inspect.signature(getattr(diffusers, name).__init__).parameters["scheduler"].annotation
    hinted = set(getattr(hint, "__args__", (hint,)))
    assert not hinted & set(_SCHEDULERS), last.OUT_OF_SCOPE[name]
