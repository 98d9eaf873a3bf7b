"""The drop-in inside more diffusers image and edit pipelines (ControlNet, PAG, inpainting and edit variants, and a
few newer image pipelines), extending `test_pipeline_matrix_image`: each pipeline is built offline from tiny random
components (`_tiny_image_matrix_more`), run once with diffusers' scheduler and once with `as_diffusers(...)` of it
from the same seed, and the outputs (latents; pixels for PRX-Pixel; decoded layers for Qwen-Image-Layered, whose
latent output is broken) and the final `scheduler.timesteps` must be bit-equal. Every case is slow (`-m slow` or
`-m ""` runs them); pipelines the module does not build are listed, with the reason, as skipped cases.
"""

from __future__ import annotations

import _tiny_image_matrix_more as more
import diffusers
import pytest
import torch
from test_pipeline_matrix_image import _assert_same, _run

from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import as_diffusers

diffusers.utils.logging.set_verbosity_error()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(more.BUILDERS))
def test_drop_in_output_bit_equal(name: str) -> None:
    factory, call, scheduler = more.BUILDERS[name]()
    ours = as_diffusers(scheduler)  # reads the config only; made first, before the reference run touches `scheduler`
    assert drop_in.is_drop_in(ours) and isinstance(ours, type(scheduler))

    reference, reference_timesteps = _run(factory, scheduler, call)
    result, timesteps = _run(factory, ours, call)
    if isinstance(reference, list):  # one tensor per image (Qwen-Image-Layered)
        assert isinstance(result, list) and len(result) == len(reference)
        reference, result = torch.stack(reference), torch.stack(result)

    assert scheduler.step_index is not None and ours.step_index == scheduler.step_index  # the drop-in really stepped
    _assert_same(reference_timesteps, timesteps)
    _assert_same(reference, result)


@pytest.mark.slow
def test_what_is_not_run_names_a_real_pipeline_and_why() -> None:
    """Each pipeline recorded as not run is a diffusers pipeline, with the reason it is not."""
    for name, reason in more.CANNOT_RUN_OFFLINE.items():
        assert hasattr(diffusers, name) and reason.strip(), name


@pytest.mark.slow
def test_matrix_more_extends_the_matrix() -> None:
    import _tiny_image_matrix as matrix

    pipelines = {name.split(" ")[0] for name in more.BUILDERS}
    assert not pipelines & {name.split(" ")[0] for name in matrix.BUILDERS}  # only pipelines not yet covered
    assert not pipelines & set(more.CANNOT_RUN_OFFLINE)
    assert all(hasattr(diffusers, name) for name in pipelines)
