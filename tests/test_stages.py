"""`functional_sched.stages`: the request record and the denoising stage, one request at a time or many at once."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch
from specs import CASES, representative

from functional_sched.stages import Denoise, Req
from functional_sched.stages.denoise import step_noise
from functional_sched.testing import Case, conditioned_model, latents
from functional_sched.testing.columns.handoff import same_req

SHAPE = (2, 4, 4)  # per-row latent shape
EMBED = (2, 4, 4)


def make_req(case: Case, index: int, steps: int, rows: int = 1, guided: bool = True, **settings: Any) -> Req:
    sample = latents((rows, *SHAPE), torch.float32, seed=50 + index)
    return Req(
        latents=sample,
        state=case.scheduler().init(sample=sample, **case.init_kwargs(steps)),
        prompt_embeds=latents((rows, *EMBED), torch.float32, seed=60 + index),
        negative_prompt_embeds=latents((rows, *EMBED), torch.float32, seed=70 + index) if guided else None,
        guidance_scale=settings.get("guidance_scale", 4.0 + index),
        guidance_rescale=settings.get("guidance_rescale", 0.0),
        seed=index,
    )


def test_req_is_immutable() -> None:
    case = CASES["FlowMatchEulerDiscrete-sd3"]
    req = make_req(case, 0, 4)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        req.latents = torch.zeros(1)  # type: ignore[misc]
    other = req.evolve(guidance_scale=2.0)
    assert other.guidance_scale == 2.0 and req.guidance_scale == 4.0 and other.latents is req.latents


@pytest.mark.parametrize("case", representative(), ids=lambda case: case.id)
def test_step_is_scale_model_guidance_step(case: Case) -> None:
    """`step` of one request equals the loop written out by hand (stochastic configs: noise from the request)."""
    sched = case.scheduler()
    stage = Denoise(model=conditioned_model, scheduler=sched)
    req = make_req(case, 1, case.steps, rows=2, guidance_rescale=0.7)
    latents_, state = req.latents, req.state
    for _ in range(3):
        x = sched.scale_model_input(state, latents_)
        t = sched.timestep(state)
        uncond = conditioned_model(x, t, req.negative_prompt_embeds)
        cond = conditioned_model(x, t, req.prompt_embeds)
        guided = uncond + req.guidance_scale * (cond - uncond)
        dims = list(range(1, cond.dim()))
        rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        output = req.guidance_rescale * rescaled + (1 - req.guidance_rescale) * guided
        noise = None
        if sched.stochastic:
            noise = step_noise(sched, req.evolve(latents=latents_, state=state))
        latents_, state = sched.step(state, output, latents_, noise=noise)
        req = stage.step(req)
        assert torch.equal(req.latents, latents_)
        assert torch.equal(req.state.step_index, state.step_index)


@pytest.mark.parametrize("guided", [True, False], ids=["cfg", "no-cfg"])
@pytest.mark.parametrize("case", representative(), ids=lambda case: case.id)
def test_step_many_equals_each_alone(case: Case, guided: bool) -> None:
    """Requests with different step counts, at different steps, with their own guidance, stepped together in one
    model call (different step counts share it): every result equals the request stepped alone, bit for bit, to
    the end of every request."""
    model_calls = []

    def model(*inputs: torch.Tensor) -> torch.Tensor:
        model_calls.append(inputs[0].shape[0])
        return conditioned_model(*inputs)

    stage = Denoise(model=model, scheduler=case.scheduler())
    counts = [case.steps, case.steps + 2, case.steps - 2]
    reqs = [
        make_req(case, i, count, rows=rows, guided=guided, guidance_rescale=rescale)
        for i, (count, rows, rescale) in enumerate(zip(counts, [1, 2, 1], [0.0, 0.5, 0.0], strict=True))
    ]
    calls_each = [int(req.state.plan.num_steps[0]) for req in reqs]  # more than the step count where timesteps repeat
    reqs[1] = stage.step(stage.step(reqs[1]))  # at different steps
    alone = list(reqs)
    calls = 0
    while reqs:
        model_calls.clear()
        reqs = stage.step_many(reqs)
        assert model_calls == [sum(req.rows for req in reqs) * (2 if guided else 1)], "one model call for all"
        alone = [stage.step(req) for req in alone]
        calls += 1
        for ours, ref in zip(reqs, alone, strict=True):
            assert same_req(ours, ref)
        done = [int(req.state.step_index.max()) >= int(req.state.plan.num_steps[0]) for req in reqs]
        reqs = [req for req, finished in zip(reqs, done, strict=True) if not finished]
        alone = [req for req, finished in zip(alone, done, strict=True) if not finished]
    assert calls == max(calls_each[0], calls_each[1] - 2, calls_each[2])


def test_forward_runs_to_the_end() -> None:
    case = CASES["DPMSolverMultistep-sd1.5-dpm-2m"]
    stage = Denoise(model=conditioned_model, scheduler=case.scheduler())
    req = make_req(case, 0, 5)
    done = stage.forward(req)
    assert int(done.state.step_index[0]) == 5
    manual = req
    for _ in range(5):
        manual = stage.step(manual)
    assert same_req(done, manual)
    with pytest.raises(IndexError, match="already took all 5 steps"):
        stage.step(done)
    assert stage.step_many([]) == []


def test_step_many_groups_what_cannot_share_a_batch() -> None:
    """Guided and unguided requests, two scheduler configs (the request's own), two latent shapes: one call to
    `step_many`, every request equal to its run alone and in its place."""
    flow, dpm = CASES["FlowMatchEulerDiscrete-sd3"], CASES["DPMSolverMultistep-sd1.5-dpm-2m"]
    stage = Denoise(model=conditioned_model, scheduler=flow.scheduler())
    reqs = [
        make_req(flow, 0, 5),
        make_req(dpm, 1, 6, guided=False).evolve(scheduler=dpm.scheduler()),
        make_req(flow, 2, 4, guided=False),
        make_req(dpm, 3, 5).evolve(scheduler=dpm.scheduler()),
    ]
    wide, wide_embeds = latents((1, 2, 4, 6), torch.float32, seed=99), latents((1, 2, 4, 6), torch.float32, seed=98)
    wide_req = make_req(flow, 4, 5, guided=False)
    reqs.append(wide_req.evolve(latents=wide, state=flow.scheduler().init(5, sample=wide), prompt_embeds=wide_embeds))
    alone = list(reqs)
    for _ in range(4):
        reqs = stage.step_many(reqs)
        alone = [stage.step(req) for req in alone]
        for ours, ref in zip(reqs, alone, strict=True):
            assert same_req(ours, ref)
    assert [req.seed for req in reqs] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="no scheduler state or no latents yet"):
        stage.step(reqs[0].evolve(state=None))
    with pytest.raises(ValueError, match="no scheduler; give the stage one"):
        Denoise(model=conditioned_model).step(make_req(flow, 0, 5))
