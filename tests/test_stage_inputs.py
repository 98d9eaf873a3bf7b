"""Hostile and careless inputs to the stages: a bad `Req` field, a bad stage option, a bad request in a batch each
fail with a TypeError or ValueError that names the field (and, in a batch, the request's index) before any model is
called; integers and numbers as diffusers takes them (numpy, 0-d tensors) work and are stored as Python ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffusers
import numpy as np
import pytest
import torch

import functional_sched as fs
from functional_sched.stages import (
    BlockCausalDenoise,
    Decode,
    Denoise,
    DistilledDenoise,
    PairedDenoise,
    Pipeline,
    PrepareLatents,
    PrepareTimesteps,
    Req,
    ScheduleSwap,
    TwoExperts,
    calculate_shift,
)
from functional_sched.stages.block_causal import CHUNK
from functional_sched.stages.paired import AUDIO_LATENTS, AUDIO_SHAPE, AUDIO_STATE
from functional_sched.stages.swap import PARKED_STATE
from functional_sched.testing import latents

FLOW = fs.FlowMatchEulerDiscrete
ROW = (2, 4, 4)  # a latent row
EMBED = (3, 4)  # an embedding row


class Recording:
    """A model that counts its calls: `sample`-shaped outputs (a pair for the joint model)."""

    def __init__(self, joint: bool = False) -> None:
        self.calls = 0
        self.joint = joint

    def __call__(self, sample: torch.Tensor, *args: Any) -> Any:
        self.calls += 1
        if self.joint:
            return torch.tanh(sample), torch.tanh(args[0])
        return torch.tanh(sample) - 0.1 * sample


def req(rows: int = 1, guided: bool = True, seed: int = 0, **fields: Any) -> Req:
    """An unprepared request: seeded latents and embeddings, four steps."""
    settings: dict[str, Any] = {
        "latents": latents((rows, *ROW), seed=seed),
        "prompt_embeds": latents((rows, *EMBED), seed=seed + 1),
        "negative_prompt_embeds": latents((rows, *EMBED), seed=seed + 2) if guided else None,
        "guidance_scale": 3.0,
        "num_inference_steps": 4,
        "seed": seed,
    }
    return Req(**{**settings, **fields})


def prepared(scheduler: Any = None, **fields: Any) -> Req:
    return PrepareTimesteps(scheduler or FLOW()).forward(req(**fields))


# ------------------------------------------------------------------------------------------------ Req's fields
NAN, INF = float("nan"), float("inf")
BAD_FIELDS = [
    ("guidance_scale", NAN, ValueError),
    ("guidance_scale", -INF, ValueError),
    ("guidance_scale", "4", TypeError),
    ("guidance_scale", None, TypeError),
    ("guidance_scale", True, TypeError),
    ("guidance_scale", torch.ones(2), TypeError),
    ("guidance_rescale", -0.1, ValueError),
    ("guidance_rescale", 1.5, ValueError),
    ("guidance_rescale", NAN, ValueError),
    ("seed", 2**64, ValueError),
    ("seed", -(2**63) - 1, ValueError),
    ("seed", 1.0, TypeError),
    ("seed", "1", TypeError),
    ("seed", True, TypeError),
    ("seed", torch.tensor(1.0), TypeError),
    ("seed", None, TypeError),
    ("num_inference_steps", 0, ValueError),
    ("num_inference_steps", -3, ValueError),
    ("num_inference_steps", 4.0, TypeError),
    ("num_inference_steps", True, TypeError),
    ("num_inference_steps", torch.tensor([4]), TypeError),
    ("timesteps", torch.ones(2, 2), ValueError),
    ("timesteps", [[999.0, 500.0]], TypeError),
    ("timesteps", [999.0, None], TypeError),
    ("timesteps", "999", TypeError),
    ("timesteps", 999, TypeError),
    ("sigmas", torch.tensor(1.0), ValueError),
    ("sigmas", [1.0, "0.5"], TypeError),
    ("sigmas", {"a": 1.0}, TypeError),
    ("sigmas", [1.0, True], TypeError),
    ("mu", NAN, ValueError),
    ("mu", "0.5", TypeError),
    ("latent_shape", (1, -4, 4), ValueError),
    ("latent_shape", (1, 0), ValueError),
    ("latent_shape", (), ValueError),
    ("latent_shape", (1, 2.0), TypeError),
    ("latent_shape", "1x4", TypeError),
    ("latent_shape", 4, TypeError),
    ("latent_shape", torch.ones(2, 2, dtype=torch.long), ValueError),
    ("dtype", torch.int64, TypeError),
    ("dtype", "float32", TypeError),
    ("dtype", torch.complex64, TypeError),
    ("device", "nope", ValueError),
    ("device", 1.5, TypeError),
    ("scheduler", "euler", TypeError),
    ("scheduler", diffusers.FlowMatchEulerDiscreteScheduler(), TypeError),
    ("latents", [1.0], TypeError),
    ("latents", torch.ones(1, 2, dtype=torch.long), TypeError),
    ("latents", torch.tensor(1.0), ValueError),
    ("prompt_embeds", [[1.0]], TypeError),
    ("prompt_embeds", torch.tensor(1.0), ValueError),
    ("negative_prompt_embeds", np.ones((1, 3)), TypeError),
    ("extras", [("a", 1)], TypeError),
    ("extras", "a", TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD_FIELDS, ids=lambda v: str(v)[:24])
def test_a_bad_field_is_refused_by_name(name: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=rf"^Req: {name}\b"):
        Req(**{name: value})
    with pytest.raises(error, match=rf"^Req: {name}\b"):  # evolve checks what it replaces
        req().evolve(**{name: value})


ROW_MISMATCHES = [
    ({"latents": latents((1, *ROW)), "prompt_embeds": latents((2, *EMBED))}, "prompt_embeds has 2 rows but latents 1"),
    (
        {
            "latents": latents((2, *ROW)),
            "prompt_embeds": latents((2, *EMBED)),
            "negative_prompt_embeds": latents((1, 3)),
        },
        "negative_prompt_embeds has 1 rows but latents 2",
    ),
    ({"latent_shape": (2, *ROW), "prompt_embeds": latents((1, *EMBED))}, "prompt_embeds has 1 rows but latent_shape 2"),
    ({"latents": latents((1, *ROW)), "latent_shape": (2, *ROW)}, "latents have 1 rows but latent_shape"),
    (
        {"prompt_embeds": latents((2, *EMBED)), "negative_prompt_embeds": latents((1, *EMBED))},
        "negative_prompt_embeds has 1 rows but prompt_embeds 2",
    ),
    ({"negative_prompt_embeds": latents((1, *EMBED))}, "negative_prompt_embeds without prompt_embeds"),
]


@pytest.mark.parametrize(("fields", "match"), ROW_MISMATCHES)
def test_embeddings_need_a_row_per_latent_row(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Req(**fields)


def test_evolve_rechecks_the_rows() -> None:
    one = req(rows=1)
    with pytest.raises(ValueError, match="prompt_embeds has 1 rows but latents 2"):
        one.evolve(latents=latents((2, *ROW)))
    with pytest.raises(ValueError, match="negative_prompt_embeds without prompt_embeds"):
        one.evolve(prompt_embeds=None)
    two = one.evolve(
        latents=latents((2, *ROW)), prompt_embeds=latents((2, *EMBED)), negative_prompt_embeds=latents((2, *EMBED))
    )
    assert two.rows == 2


def test_numbers_as_diffusers_takes_them_are_stored_as_python_numbers() -> None:
    made = Req(
        seed=np.int64(7),
        num_inference_steps=torch.tensor(4),
        guidance_scale=np.float32(4.5),
        guidance_rescale=torch.tensor(0.5),
        mu=np.float64(0.7),
        latent_shape=(np.int32(1), torch.tensor(2), 4, 4),
        sigmas=torch.tensor([1.0, 0.5], dtype=torch.float64),
        timesteps=np.array([999, 500]),
        device=torch.device("cpu"),
    )
    assert (made.seed, made.num_inference_steps, made.guidance_scale, made.guidance_rescale) == (7, 4, 4.5, 0.5)
    assert made.latent_shape == (1, 2, 4, 4) and made.sigmas == (1.0, 0.5) and made.timesteps == (999.0, 500.0)
    values = (made.seed, made.num_inference_steps, made.guidance_scale, made.mu, *made.latent_shape, *made.sigmas)
    assert [type(value) for value in values] == [int, int, float, float, int, int, int, int, float, float]
    assert Req(device="cpu").device == torch.device("cpu")
    for seed in (-(2**63), -1, 2**64 - 1):  # the whole range of torch.Generator.manual_seed
        assert PrepareLatents().forward(Req(latent_shape=(1, 2), seed=seed)).latents.shape == (1, 2)


def test_numpy_and_tensor_integers_run_as_python_ints() -> None:
    """A numpy or 0-d tensor seed and step count (the request's and the stage's) give what Python ints give."""
    model = Recording()

    def pipeline(steps: Any) -> Pipeline:
        sched = fs.DPMSolverMultistep()
        return Pipeline([PrepareTimesteps(sched, steps), PrepareLatents(sched), Denoise(model, sched), Decode()])

    reference = pipeline(5).forward(Req(latent_shape=(1, *ROW), seed=11, num_inference_steps=4)).output
    for seed, steps in ((np.int64(11), np.int32(4)), (torch.tensor(11), torch.tensor(4)), (np.uint8(11), None)):
        fields = {} if steps is None else {"num_inference_steps": steps}
        out = pipeline(np.int64(4)).forward(Req(latent_shape=(1, *ROW), seed=seed, **fields))
        assert torch.equal(out.output, reference) and out.num_inference_steps == 4 and type(out.seed) is int


# ------------------------------------------------------------------------------------------------ stage options
def _swap(**changes: Any) -> ScheduleSwap:
    settings: dict[str, Any] = {
        "regular": Denoise(Recording(), FLOW()),
        "distilled": Denoise(Recording(), FLOW(stochastic_sampling=True)),
        "sigmas": (0.8, 0.55, 0.4),
        "swap_at": 2,
        "resume_at": 4,
    }
    return ScheduleSwap(**{**settings, **changes})


def _experts(**changes: Any) -> TwoExperts:
    settings: dict[str, Any] = {"low_noise_model": Recording(), "boundary_ratio": 0.9}
    return TwoExperts(Recording(), FLOW(), **{**settings, **changes})


BAD_OPTIONS: list[tuple[Callable[[], Any], type[Exception], str]] = [
    (lambda: Denoise(5), TypeError, "Denoise: model must be callable"),
    (lambda: Denoise(Recording(), "euler"), TypeError, "Denoise: scheduler must be a functional_sched scheduler"),
    (lambda: PrepareTimesteps(num_inference_steps=0), ValueError, "PrepareTimesteps: num_inference_steps must be"),
    (lambda: PrepareTimesteps(num_inference_steps=2.5), TypeError, "PrepareTimesteps: num_inference_steps must be"),
    (lambda: PrepareTimesteps(flux_sigmas=1), TypeError, "PrepareTimesteps: flux_sigmas must be True or False"),
    (lambda: PrepareTimesteps(image_seq_len=64), TypeError, "PrepareTimesteps: image_seq_len must be callable"),
    (lambda: PrepareLatents(FLOW(), pack=2), TypeError, "PrepareLatents: pack must be callable"),
    (lambda: PrepareLatents(diffusers.DDIMScheduler()), TypeError, "PrepareLatents: scheduler must be"),
    (lambda: Decode("vae"), TypeError, "Decode: decoder must be callable"),
    (lambda: Pipeline(5), TypeError, "Pipeline: stages must be a list"),
    (lambda: Pipeline([Decode(), object()]), TypeError, r"stage 1 \(object\) has none"),
    (lambda: _experts(low_noise_model=None), TypeError, "TwoExperts: low_noise_model must be callable"),
    (lambda: _experts(boundary_ratio="0.9"), TypeError, "TwoExperts: boundary_ratio must be a number"),
    (lambda: DistilledDenoise(Recording(), timesteps="1000"), TypeError, "DistilledDenoise: timesteps must be"),
    (lambda: DistilledDenoise(Recording(), timesteps=[1000, "x"]), TypeError, r"DistilledDenoise: timesteps\[1\]"),
    (lambda: BlockCausalDenoise(Recording(), chunk_frames=1.5), TypeError, "BlockCausalDenoise: chunk_frames must"),
    (
        lambda: BlockCausalDenoise(Recording(), chunk_frames=2, num_inference_steps=0),
        ValueError,
        "BlockCausalDenoise: num_inference_steps must be >= 1",
    ),
    (lambda: PairedDenoise(Recording(), FLOW(), None), TypeError, "PairedDenoise: audio_scheduler must be"),
    (lambda: PairedDenoise(None, FLOW(), FLOW()), TypeError, "PairedDenoise: model must be callable"),
    (lambda: _swap(regular=FLOW()), TypeError, "ScheduleSwap: regular must be a Denoise stage"),
    (lambda: _swap(swap_at=-1), ValueError, "ScheduleSwap: swap_at must be >= 0"),
    (lambda: _swap(resume_at=4.0), TypeError, "ScheduleSwap: resume_at must be an integer"),
    (lambda: _swap(sigmas=[[0.8, 0.4]]), TypeError, r"ScheduleSwap: sigmas\[0\] must be a real number"),
    (lambda: _swap(sigmas=(0.8, NAN, 0.4)), ValueError, "ScheduleSwap: .*sigmas"),
    (lambda: _swap(distilled_guidance="yes"), TypeError, "ScheduleSwap: distilled_guidance must be True or False"),
]


@pytest.mark.parametrize(("make", "error", "match"), BAD_OPTIONS)
def test_a_bad_stage_option_is_refused_by_name(make: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_stage_options_take_numpy_numbers() -> None:
    assert type(BlockCausalDenoise(Recording(), chunk_frames=np.int64(2)).chunk_frames) is int
    assert type(PrepareTimesteps(num_inference_steps=torch.tensor(3)).num_inference_steps) is int
    assert _swap(swap_at=np.int32(2), resume_at=torch.tensor(4)).resume_at == 4
    assert type(_experts(boundary_ratio=np.float32(0.5)).boundary_ratio) is float


# ------------------------------------------------------------------------------------------------ calculate_shift
def test_calculate_shift_refuses_what_diffusers_divides_by_zero_on() -> None:
    with pytest.raises(ValueError, match="base_seq_len and max_seq_len are both 256"):
        calculate_shift(1024, 256, 256)
    with pytest.raises(ValueError, match="calculate_shift: max_shift must be finite"):
        calculate_shift(1024, max_shift=NAN)
    with pytest.raises(TypeError, match="calculate_shift: image_seq_len must be a number"):
        calculate_shift("1024")
    assert calculate_shift(np.int64(256)) == pytest.approx(0.5)


def test_prepare_timesteps_names_what_the_shift_came_from() -> None:
    dynamic = FLOW(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match=r"scheduler's base_image_seq_len=256, .*packed_seq_len: latents of shape"):
        PrepareTimesteps(dynamic).forward(Req(latent_shape=(1,), num_inference_steps=4))
    with pytest.raises(ValueError, match="image_seq_len must be finite"):
        PrepareTimesteps(dynamic, image_seq_len=lambda shape: NAN).forward(req())
    assert PrepareTimesteps(dynamic).forward(req(mu=0.5)).mu == 0.5  # a request's own mu needs no shift


# ------------------------------------------------------------------------------------------------ the prepare stages
def test_prepare_stages_name_the_request_in_a_batch() -> None:
    good = Req(latent_shape=(1, *ROW), num_inference_steps=4)
    with pytest.raises(ValueError, match=r"^PrepareTimesteps.forward_many: request 1: .*sigmas"):
        PrepareTimesteps(FLOW()).forward_many([good, good.evolve(num_inference_steps=None, sigmas=[NAN, 0.5])])
    with pytest.raises(ValueError, match=r"^PrepareTimesteps.forward_many: request 1: no scheduler"):
        PrepareTimesteps().forward_many([good.evolve(scheduler=FLOW()), good])
    with pytest.raises(ValueError, match=r"^PrepareLatents.forward_many: request 1: the request needs a latent_shape"):
        PrepareLatents().forward_many([good, Req()])
    with pytest.raises(ValueError, match=r"^Decode.forward_many: request 1: the request has no latents"):
        Decode().forward_many([req(), good])
    with pytest.raises(TypeError, match=r"^Decode.forward_many: request 0: expected a request"):
        Decode().forward_many([{"latents": None}])
    with pytest.raises(TypeError, match=r"^PrepareLatents: expected a request"):
        PrepareLatents().forward(None)


def test_prepare_latents_checks_pack_and_the_state() -> None:
    shape_only = Req(latent_shape=(2, *ROW))
    with pytest.raises(ValueError, match=r"PrepareLatents: pack turned noise \(2, 2, 4, 4\) into \(4, 2, 4, 2\)"):
        PrepareLatents(pack=lambda noise: noise.reshape(4, 2, 4, 2)).forward(shape_only)
    with pytest.raises(TypeError, match="PrepareLatents: pack must return a floating-point tensor"):
        PrepareLatents(pack=lambda noise: noise.tolist()).forward(shape_only)
    state = fs.UniPCMultistep().init(4, sample=latents((2, *ROW)))
    with pytest.raises(TypeError, match=r"PrepareLatents: state is a UniPCState, but the scheduler .* FlowMatchEuler"):
        PrepareLatents(FLOW()).forward(shape_only.evolve(state=state))


# ------------------------------------------------------------------------------------------------ stepped stages
def _unipc_state(good: Req) -> Any:
    return fs.UniPCMultistep().init(4, sample=good.latents)


def denoise_cases() -> list[tuple[str, Callable[[Req], Any], type[Exception], str]]:
    """(id, the bad request made from a good prepared one, error, what the message names)."""
    return [
        ("unprepared", lambda good: good.evolve(state=None), ValueError, "no scheduler state or no latents yet"),
        ("no latents", lambda good: good.evolve(latents=None), ValueError, "no scheduler state or no latents yet"),
        ("other class", lambda good: good.evolve(state=_unipc_state(good)), TypeError, "state is a UniPCState"),
        ("not a state", lambda good: good.evolve(state="state"), TypeError, "state is a str"),
        (
            "state rows",
            lambda good: good.evolve(
                latents=latents((2, *ROW)), prompt_embeds=None, negative_prompt_embeds=None, latent_shape=None
            ),
            ValueError,
            "state has 1 rows but latents 2",
        ),
        ("not a Req", lambda good: {"latents": good.latents}, TypeError, "expected a request"),
    ]


def _assert_refused(stage: Any, bad: Any, error: type[Exception], match: str, models: list[Recording]) -> None:
    """`bad` as request 1 of `step_many` and of `forward_many` (after a good one), and alone in `step`: refused,
    named, and no model called."""
    good = prepared()
    name = type(stage).__name__
    with pytest.raises(error, match=rf"^{name}.step_many: request 1: .*{match}"):
        stage.step_many([good, bad])
    with pytest.raises(error, match=rf"^{name}.forward_many: request 1: .*{match}"):
        stage.forward_many([good, bad])
    with pytest.raises(error, match=rf"^{name}.step: .*{match}"):
        stage.step(bad)
    assert [model.calls for model in models] == [0] * len(models)


@pytest.mark.parametrize(
    ("make", "error", "match"), [case[1:] for case in denoise_cases()], ids=[case[0] for case in denoise_cases()]
)
def test_denoise_checks_each_request_before_the_model(make: Any, error: type[Exception], match: str) -> None:
    model = Recording()
    _assert_refused(Denoise(model, FLOW()), make(prepared()), error, match, [model])


def test_denoise_needs_a_scheduler_and_a_list() -> None:
    model = Recording()
    with pytest.raises(ValueError, match=r"^Denoise.step_many: request 1: no scheduler"):
        Denoise(model).step_many([prepared().evolve(scheduler=FLOW()), prepared()])
    with pytest.raises(TypeError, match=r"Denoise\.step_many: expected a list of requests, got a Req"):
        Denoise(model, FLOW()).step_many(prepared())
    with pytest.raises(TypeError, match=r"Denoise.done: the request's state is a str"):
        Denoise(model, FLOW()).done(prepared().evolve(state="state"))
    assert not Denoise(model, FLOW()).done(req())  # unprepared: not done, and step says why
    assert model.calls == 0


def test_the_core_refuses_before_the_model_too() -> None:
    """What the scheduler checks (a state of other step options, a finished request) also fails before the model."""
    model = Recording()
    stage = Denoise(model, FLOW())
    other_options = prepared(FLOW(shift=3.0, stochastic_sampling=True))
    with pytest.raises(ValueError, match=r"different step options|different fingerprints"):
        stage.step_many([prepared(), other_options])
    with pytest.raises(IndexError, match="already took all 4 steps"):
        stage.step(Denoise(Recording(), FLOW()).forward(prepared()))
    assert model.calls == 0


def test_two_experts_checks_the_second_guidance_scale() -> None:
    stage = _experts()
    models = [stage.model, stage.low_noise_model]
    for value, error in ((NAN, ValueError), ("2", TypeError)):
        bad = prepared().with_extras(guidance_scale_2=value)
        _assert_refused(stage, bad, error, r"extras\['guidance_scale_2'\]", models)
    _assert_refused(stage, prepared().evolve(state=None), ValueError, "no scheduler state", models)
    assert stage.step(prepared().with_extras(guidance_scale_2=None)).state is not None  # None: guidance_scale


def test_distilled_checks_each_request_before_the_model() -> None:
    model = Recording()
    stage = DistilledDenoise(model, FLOW(shift=5.0, stochastic_sampling=True))
    bad = [
        (req(scheduler=FLOW()), ValueError, r"FlowMatchEulerDiscrete\(stochastic_sampling=True\)"),
        (req(latents=None, prompt_embeds=None, negative_prompt_embeds=None), ValueError, "no latents yet"),
        (req(timesteps=(1000, 1200)), ValueError, "timesteps must decrease strictly"),
        (req().evolve(state=_unipc_state(req())), TypeError, "state is a UniPCState"),
    ]
    for request, error, match in bad:
        _assert_refused(stage, request, error, match, [model])
    with pytest.raises(ValueError, match=r"DistilledDenoise\.prepare: the request has no latents yet"):
        stage.prepare(Req(latent_shape=(1, *ROW)))


def video(chunks: int = 2, **fields: Any) -> Req:
    settings: dict[str, Any] = {"latents": latents((1, 2 * chunks, *ROW)), "sigmas": (1.0, 0.5)}
    return req(num_inference_steps=None, **{**settings, **fields})


def test_block_causal_checks_each_request_before_the_model() -> None:
    model = Recording()
    stage = BlockCausalDenoise(model, FLOW(stochastic_sampling=True), chunk_frames=2)
    good_state = BlockCausalDenoise(Recording(), stage.scheduler, chunk_frames=2).step(video()).state
    bad = [
        (req(latents=latents((1, 3, *ROW)), sigmas=(1.0, 0.5)), ValueError, "do not split into chunks of 2 frames"),
        (video(sigmas=None), ValueError, "no schedule"),
        (video(extras={CHUNK: -1}), ValueError, r"extras\['chunk'\] must be >= 0"),
        (video(extras={CHUNK: 3}), ValueError, r"extras\['chunk'\] must be >= 0 and <= 2"),
        (video(extras={CHUNK: "0"}), TypeError, r"extras\['chunk'\] must be an integer"),
        (video(extras={CHUNK: 1}), ValueError, "no scheduler state"),
        (video(extras={CHUNK: 0}, state=_unipc_state(req())), TypeError, "state is a UniPCState"),
    ]
    for request, error, match in bad:
        with pytest.raises(error, match=rf"^BlockCausalDenoise.step_many: request 1: .*{match}"):
            stage.step_many([video(), request])
        with pytest.raises(error, match=rf"^BlockCausalDenoise.forward_many: request 1: .*{match}"):
            stage.forward_many([video(), request])
    assert model.calls == 0
    for chunk in (np.int64(0), torch.tensor(0)):  # the chunk finishes, and the next one starts
        assert type(stage.step(video(extras={CHUNK: chunk}, state=good_state)).extras[CHUNK]) is int


def test_paired_checks_each_request_before_the_model() -> None:
    model = Recording(joint=True)
    video_sched, audio_sched = FLOW(shift=5.0), FLOW()
    stage = PairedDenoise(model, video_sched, audio_sched)

    def paired(**extras: Any) -> Req:
        return prepared(video_sched).with_extras(**{AUDIO_SHAPE: (1, 5, 3), **extras})

    audio = latents((1, 5, 3))
    bad = [
        (paired(**{AUDIO_SHAPE: (2, 5, 3)}), ValueError, r"extras\['audio_shape'\] has 2 rows but latents 1"),
        (paired(**{AUDIO_SHAPE: (1, -5)}), ValueError, r"extras\['audio_shape'\]\[1\] must be >= 1"),
        (paired(**{AUDIO_SHAPE: None}), ValueError, r"neither extras\['audio_latents'\] nor extras\['audio_shape'\]"),
        (paired(**{AUDIO_LATENTS: audio.long()}), TypeError, r"extras\['audio_latents'\] must be a floating-point"),
        (paired(**{AUDIO_LATENTS: latents((2, 5, 3))}), ValueError, r"extras\['audio_latents'\] has 2 rows"),
        (paired(**{AUDIO_STATE: _unipc_state(req())}), TypeError, r"extras\['audio_state'\] is a UniPCState"),
        (
            paired(**{AUDIO_LATENTS: audio, AUDIO_STATE: audio_sched.init(6, sample=audio)}),
            ValueError,
            "4 steps left and the audio schedule 6",
        ),
        (paired().evolve(scheduler=FLOW()), ValueError, r"leave Req\.scheduler None"),
        (paired().evolve(state=None), ValueError, "no video state or latents yet"),
        (paired().evolve(state=_unipc_state(req())), TypeError, "state is a UniPCState"),
    ]
    for request, error, match in bad:
        with pytest.raises(error, match=rf"^PairedDenoise.step_many: request 1: .*{match}"):
            stage.step_many([paired(), request])
        with pytest.raises(error, match=rf"^PairedDenoise.forward_many: request 1: .*{match}"):
            stage.forward_many([paired(), request])
    assert model.calls == 0


def test_swap_checks_each_request_before_the_model() -> None:
    stage = _swap()
    models = [stage.regular.model, stage.distilled.model]
    sigmas = (1.0, 0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1)
    good = prepared(sigmas=sigmas, num_inference_steps=None)
    bad = [
        (good.evolve(state=None), ValueError, "no scheduler state"),
        (
            good.evolve(scheduler=fs.DPMSolverMultistep()),
            ValueError,
            "regular scheduler must be FlowMatchEulerDiscrete",
        ),
        (good.with_extras(**{PARKED_STATE: None}), TypeError, r"extras\['swap_parked_state'\] is a NoneType"),
        (good.with_extras(**{PARKED_STATE: _unipc_state(good)}), TypeError, r"extras\['swap_parked_state'\] is a"),
        (good.evolve(state=_unipc_state(good)), TypeError, "state is a UniPCState"),
    ]
    for request, error, match in bad:
        with pytest.raises(error, match=rf"^ScheduleSwap.step_many: request 1: .*{match}"):
            stage.step_many([good, request])
        with pytest.raises(error, match=rf"^ScheduleSwap.forward_many: request 1: .*{match}"):
            stage.forward_many([good, request])
    assert [model.calls for model in models] == [0, 0]


def test_pipeline_calls_no_model_for_a_bad_request() -> None:
    model = Recording()
    sched = FLOW()
    pipeline = Pipeline([PrepareTimesteps(sched), PrepareLatents(sched), Denoise(model, sched), Decode()])
    good = Req(latent_shape=(1, *ROW), num_inference_steps=3)
    with pytest.raises(ValueError, match=r"^PrepareTimesteps.forward_many: request 2: .*timesteps"):
        pipeline.forward_many([good, good, good.evolve(num_inference_steps=None, timesteps=[5000, 900])])
    assert model.calls == 0
    assert len(pipeline.forward_many([good, good.evolve(seed=np.int64(3))])) == 2 and model.calls == 3
