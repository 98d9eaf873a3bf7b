"""The drop-ins inside every diffusers image pipeline whose default scheduler is FlowMatchEulerDiscrete,
DPMSolverMultistep or UniPCMultistep (and a few Stable Diffusion pipelines that take DPM-Solver or UniPC): each
pipeline is built offline from tiny random components (`_tiny_image_matrix`, prompt embeddings in place of text
encoders), run once with diffusers' scheduler and once with `as_diffusers(...)` of it, from the same seed, and the
outputs (latents) and the final `scheduler.timesteps` must be bit-equal. This proves that whatever a pipeline does
with its scheduler (custom `sigmas`/`timesteps`, `mu`, img2img `strength` and `set_begin_index`, `scale_noise`, its
`isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler/UniPCMultistepScheduler)` branches as in Bria and
HiDream, reading `order` or `config`) works the same with the drop-in, down to the last bit, on the CPU. The default
run checks four representative pipelines (one per scheduler family plus Bria's `isinstance` branch); `-m slow` or
`-m ""` runs the whole matrix. Pipelines the matrix cannot run are listed, with the reason, as skipped cases.
"""

from __future__ import annotations

import copy
from typing import Any

import _tiny_image_matrix as matrix
import diffusers
import numpy as np
import pytest
import torch

from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import as_diffusers

diffusers.utils.logging.set_verbosity_error()

#: The cases of the default run: the `isinstance(FlowMatchEuler...)` branch, UniPC flow, DPM-Solver flow, and UniPC
#: with img2img `strength` (a UNet pipeline).
FAST = frozenset(
    {
        "BriaPipeline (dynamic shifting)",
        "HiDreamImagePipeline (UniPC flow)",
        "SanaPipeline (DPMSolver flow)",
        "StableDiffusionXLImg2ImgPipeline (UniPC)",
    }
)


def _case(name: str) -> Any:
    return pytest.param(name, marks=[] if name in FAST else [pytest.mark.slow], id=name)


def _run(factory: matrix.PipelineFactory, scheduler: Any, call: dict[str, Any]) -> tuple[Any, torch.Tensor]:
    pipe = factory(scheduler)
    torch.manual_seed(matrix.SEED)  # for any pipeline (or model) that draws from the global RNG
    output = pipe(**copy.deepcopy(call), generator=torch.Generator().manual_seed(matrix.SEED))
    images = output.images if hasattr(output, "images") else output[0]
    assert pipe.scheduler is scheduler
    return images, scheduler.timesteps.clone()


def _assert_same(reference: Any, ours: Any) -> None:
    if isinstance(reference, np.ndarray):
        assert isinstance(ours, np.ndarray) and reference.dtype == ours.dtype and reference.shape == ours.shape
        assert np.array_equal(reference, ours), f"max |diff| {np.abs(reference - ours).max()}"
    else:
        assert isinstance(ours, torch.Tensor) and reference.dtype == ours.dtype and reference.shape == ours.shape
        assert torch.equal(reference, ours), f"max |diff| {(reference - ours).abs().max().item()}"


@pytest.mark.parametrize("name", [_case(name) for name in matrix.BUILDERS])
def test_drop_in_output_bit_equal(name: str) -> None:
    factory, call, scheduler = matrix.BUILDERS[name]()
    ours = as_diffusers(scheduler)  # reads the config only; made first, before the reference run touches `scheduler`
    assert drop_in.is_drop_in(ours) and isinstance(ours, type(scheduler))

    reference, reference_timesteps = _run(factory, scheduler, call)
    result, timesteps = _run(factory, ours, call)

    assert scheduler.step_index is not None and ours.step_index == scheduler.step_index  # the drop-in really stepped
    _assert_same(reference_timesteps, timesteps)
    _assert_same(reference, result)


def test_what_is_not_run_names_a_real_pipeline_and_why() -> None:
    """Each pipeline recorded as not run is a diffusers pipeline, with the reason it is not."""
    for name, reason in matrix.CANNOT_RUN_OFFLINE.items():
        assert hasattr(diffusers, name) and reason.strip(), name


def test_matrix_covers_the_required_pipelines() -> None:
    pipelines = {name.split(" ")[0] for name in matrix.BUILDERS}
    assert {"BriaPipeline", "HiDreamImagePipeline"} <= pipelines
    assert len(pipelines) >= 14
    assert set(matrix.BUILDERS) >= FAST
    assert not pipelines & set(matrix.CANNOT_RUN_OFFLINE)
