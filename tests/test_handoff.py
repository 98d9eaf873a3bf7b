"""`functional_sched.serialize` and `stages.handoff`: the payload's layout and checks, scheduler states in a request's
extras (`PairedDenoise`, `ScheduleSwap`) handed over bit for bit, torch.distributed between two processes, and
payloads that do not fit (corrupt, edited, from another scheduler or version) refused with an error that says so; the
receiver steps with its own plan of the payload's schedules, keyed payloads (HMAC), and the limits `loads` and `recv`
check before they allocate. Every scheduler's requests resume bit for bit from any step: the conformance suite's
handoff column; `test_payload_fuzz` mutates payloads at random under a memory limit."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import safetensors.torch
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.utils._pytree as pytree
from specs import CASES
from test_patterns import (
    FLOW,
    PAIRS,
    REGULAR_SIGMAS,
    assert_same,
    joint_model,
    paired_request,
    swap_request,
    swap_stage,
)
from test_stages import SHAPE, conditioned_model, make_req, same_req

import functional_sched as fs
from functional_sched import batching, serialize
from functional_sched.stages import Denoise, Req, handoff
from functional_sched.stages.paired import AUDIO_LATENTS, AUDIO_SHAPE, AUDIO_STATE, PairedDenoise
from functional_sched.stages.swap import PARKED_STATE
from functional_sched.testing import latents
from functional_sched.testing.columns.handoff import make_req as scheduled_request
from functional_sched.testing.columns.handoff import trajectory
from functional_sched.testing.requests import same_state

CPU = torch.device("cpu")


def test_state_keys_metadata_and_shared_counters() -> None:
    """The documented keys and metadata; uniform counters come back as the host-known shared ones."""
    case = CASES["UniPCMultistep-sd1.5-unipc-bh2"]
    sched = case.scheduler()
    state = Denoise(model=conditioned_model, scheduler=sched).step(make_req(case, 0, 6, rows=3)).state
    tensors, metadata = serialize.state_to_tensors(state)
    assert list(tensors) == [
        "plan.timesteps",
        "plan.sigmas",
        "plan.num_steps",
        "plan.coefficients",
        "step_index",
        "lower_order_nums",
        "history.0",
        "history.1",
        "last_sample",
    ]
    assert metadata == {
        "format": "functional_sched.state",
        "version": 2,
        "state": "UniPCState",
        "fingerprint": sched.fingerprint,
        "fields": {
            "plan": "plan",
            "step_index": "tensor",
            "lower_order_nums": "tensor",
            "history": 2,
            "last_sample": "tensor",
            "fingerprint": "fingerprint",
        },
        "schedules": [{"num_inference_steps": 6, "timesteps": None, "sigmas": None, "mu": None}],
    }
    assert all(tensor.is_contiguous() for tensor in tensors.values())
    resumed = serialize.state_from_tensors(tensors, metadata, sched)
    assert same_state(resumed, state)
    assert resumed.cursor is not None and sched.steps_taken(resumed) == 1  # its rows at one step: the host path
    ours = [leaf.untyped_storage().data_ptr() for leaf in pytree.tree_leaves(resumed)]
    assert not {tensor.untyped_storage().data_ptr() for tensor in tensors.values()} & set(ours)  # copies, its own


def test_rows_are_checked_against_their_own_schedules() -> None:
    sched = CASES["DPMSolverMultistep-sd1.5-dpm-2m"].scheduler()
    states = [sched.init(n, sample=latents((1, *SHAPE), torch.float32, seed=n)) for n in (4, 8)]
    tensors, metadata = serialize.state_to_tensors(batching.stack(states))
    finished_row = {**tensors, "step_index": torch.tensor([4, 5])}
    assert serialize.state_from_tensors(finished_row, metadata, sched).step_index.tolist() == [4, 5]
    with pytest.raises(ValueError, match=r"step_index \[5, 5\] lies outside \[0, num_steps \[4, 8\]\]"):
        serialize.state_from_tensors({**tensors, "step_index": torch.tensor([5, 5])}, metadata, sched)
    three = {key: torch.cat([value[:1]] * 3) if key.startswith("plan.") else value for key, value in tensors.items()}
    with pytest.raises(ValueError, match="the plan has 3 schedules for 2 rows"):
        serialize.state_from_tensors(three, metadata, sched)


def test_views_and_shared_tensors_are_saved() -> None:
    """A state split from a stack holds views (its plan trimmed out of wider tables) and latents may be the state's
    own last sample: safetensors refuses both as they are; the handoff saves copies."""
    case = CASES["UniPCMultistep-sd1.5-unipc-bh2"]
    sched = case.scheduler()
    stage = Denoise(model=conditioned_model, scheduler=sched)
    reqs = [stage.step(make_req(case, i, steps)) for i, steps in enumerate([10, 6, 8])]
    state = batching.split(batching.stack([req.state for req in reqs]), [1, 2])[1]  # 2 schedules, trimmed to 8 steps
    assert not state.plan.timesteps.is_contiguous()
    with pytest.raises(ValueError, match="non contiguous tensor"):
        safetensors.torch.save({"timesteps": state.plan.timesteps})
    req = Req(latents=state.last_sample, state=state, prompt_embeds=torch.zeros(2, *SHAPE), seed=1)
    resumed = handoff.loads(handoff.dumps(req, sched), sched)
    assert same_req(resumed, req)
    assert same_req(stage.step(resumed), stage.step(req))


def test_request_fields_and_extras_round_trip(tmp_path: Path) -> None:
    case = CASES["FlowMatchEulerDiscrete-flux.1-dev-1024px"]
    sched = case.scheduler()
    req = scheduled_request(case, 1, case.steps).with_extras(
        audio=torch.arange(6, dtype=torch.bfloat16).view(2, 3),
        second_scale=2.5,
        tags=["a", 1, None, [True, 0.5]],
    )
    req = req.evolve(latent_shape=(2, *SHAPE), output=torch.ones(2), timesteps=None, dtype=torch.float16)
    handoff.save(req, sched, tmp_path / "req.safetensors")
    back = handoff.load(tmp_path / "req.safetensors", sched)
    for name in ("guidance_scale", "guidance_rescale", "seed", "num_inference_steps", "sigmas", "mu", "latent_shape"):
        assert getattr(back, name) == getattr(req, name), name
    assert back.dtype == torch.float16 and back.device == CPU and back.timesteps is None
    assert torch.equal(back.output, req.output) and same_req(back, req)
    assert back.extras["second_scale"] == 2.5 and back.extras["tags"] == ["a", 1, None, [True, 0.5]]
    assert back.extras["audio"].dtype == torch.bfloat16 and torch.equal(back.extras["audio"], req.extras["audio"])
    empty = handoff.loads(handoff.dumps(Req(latent_shape=(1, 4), seed=9), sched), sched)
    assert empty.state is None and empty.latents is None and empty.seed == 9 and empty.latent_shape == (1, 4)


# ------------------------------------------------------------------------------------ scheduler states in extras
def paired_trajectory(video_sched: Any, audio_sched: Any) -> tuple[PairedDenoise, list[Req]]:
    stage = PairedDenoise(joint_model, video_sched, audio_sched)
    req = stage.prepare(paired_request(video_sched, 2, steps=5, rows=2))
    req = req.with_extras(**{AUDIO_SHAPE: list(req.extras[AUDIO_SHAPE])})  # JSON has lists, not tuples
    return stage, trajectory(stage, req)


@pytest.mark.parametrize(("video_sched", "audio_sched"), PAIRS)
def test_paired_request_hands_off_bit_identically(video_sched: Any, audio_sched: Any) -> None:
    """The audio state travels in extras: handed off at every step, both latents and both states finish as the
    undisturbed run, bit for bit (multistep history and stochastic audio steps included)."""
    stage, undisturbed = paired_trajectory(video_sched, audio_sched)
    assert len(undisturbed) == 6
    for k in range(len(undisturbed)):
        audio = undisturbed[k].extras[AUDIO_STATE]
        resumed = handoff.loads(
            handoff.dumps(undisturbed[k], video_sched), video_sched, extra_schedulers={AUDIO_STATE: audio_sched}
        )
        assert_same(resumed, undisturbed[k])
        assert same_state(resumed.extras[AUDIO_STATE], audio)
        for expected in undisturbed[k + 1 :]:
            resumed = stage.step(resumed)
            assert_same(resumed, expected)  # video latents and state, audio latents and state (extras)


def test_schedule_swap_request_hands_off_bit_identically() -> None:
    """Before, inside (the distilled state in `state`, the regular one parked in extras) and after the distilled
    window: every handoff finishes as the undisturbed run."""
    stage = swap_stage()
    regular, distilled = stage.regular.scheduler, stage.distilled.scheduler
    undisturbed = trajectory(stage, swap_request(3, REGULAR_SIGMAS[0], rows=2))
    assert [PARKED_STATE in req.extras for req in undisturbed] == [False] * 3 + [True] * 2 + [False] * 4
    for k, req in enumerate(undisturbed):
        if PARKED_STATE in req.extras:
            data = handoff.dumps(req, distilled)
            resumed = handoff.loads(data, distilled, extra_schedulers={PARKED_STATE: regular})
        else:
            resumed = handoff.loads(handoff.dumps(req, regular), regular)
        assert_same(resumed, req)
        for expected in undisturbed[k + 1 :]:
            resumed = stage.step(resumed)
            assert_same(resumed, expected)
        assert stage.done(resumed)


def test_state_extras_payload_and_errors() -> None:
    """The layout, and what does not fit: no scheduler for a state extra, one for another extra, another class or
    other step options, a forged step index, a flipped byte; names whose tensors would mix."""
    video_sched, audio_sched = PAIRS[0].values
    _, undisturbed = paired_trajectory(video_sched, audio_sched)
    req = undisturbed[2]
    data = handoff.dumps(req, video_sched)
    tensors, metadata = _parts(data)
    state_class = type(req.extras[AUDIO_STATE]).__name__
    assert metadata["extras"]["states"][AUDIO_STATE]["state"] == state_class
    assert metadata["extras"]["tensors"] == [AUDIO_LATENTS] and AUDIO_STATE not in metadata["extras"]["values"]
    assert {"extras.audio_state.state.step_index", "extras.audio_state.state.plan.sigmas"} <= set(tensors)
    audio = {AUDIO_STATE: audio_sched}
    with pytest.raises(
        ValueError,
        match=rf"extras\['audio_state'\] is a scheduler state \({state_class}\); pass the scheduler that steps it: "
        r"loads\(\.\.\., extra_schedulers=\{'audio_state': <its scheduler>\}\)",
    ):
        handoff.loads(data, video_sched)
    with pytest.raises(ValueError, match=r"extra_schedulers names \['audio_latents'\], but .* are \['audio_state'\]"):
        handoff.loads(data, video_sched, extra_schedulers={**audio, AUDIO_LATENTS: audio_sched})
    with pytest.raises(ValueError, match=r"extra_schedulers names \['audio_state'\], but .* are \[\]"):
        handoff.loads(handoff.dumps(req.evolve(extras={}), video_sched), video_sched, extra_schedulers=audio)
    with pytest.raises(ValueError, match=r"extras\['audio_state'\]: UniPCMultistep: .* another scheduler class"):
        handoff.loads(data, video_sched, extra_schedulers={AUDIO_STATE: fs.UniPCMultistep()})
    with pytest.raises(ValueError, match=r"extras\['audio_state'\]: FlowMatchEulerDiscrete: .* other step options"):
        handoff.loads(data, video_sched, extra_schedulers={AUDIO_STATE: FLOW(shift=1.0)})  # not stochastic
    forged = _forged(data, _set("extras.audio_state.state.step_index", lambda t: t + 9))
    with pytest.raises(ValueError, match=r"extras\['audio_state'\]: .* step_index \[11, 11\] lies outside"):
        handoff.loads(forged, video_sched, extra_schedulers=audio)
    size = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8 : 8 + size])["extras.audio_state.state.plan.sigmas"]["data_offsets"]
    flipped = bytearray(data)
    flipped[8 + size + (begin + end) // 2] ^= 0x01
    with pytest.raises(ValueError, match="checksum mismatch"):
        handoff.loads(bytes(flipped), video_sched, extra_schedulers=audio)
    with pytest.raises(ValueError, match=r"extras \['audio_state.state'\] would lie under 'extras.audio_state.state.'"):
        handoff.dumps(req.with_extras(**{"audio_state.state": torch.zeros(1)}), video_sched)


def test_older_payloads_load_only_without_states() -> None:
    """Versions 1 (no state extras) and 2 carried no schedules: a payload without a scheduler state loads as before;
    one with a state is refused, since the receiver could not rebuild its plan to verify the one it is sent."""
    sched, data = _payload()

    def as_version(version: int) -> Callable[..., None]:
        def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
            if version == 1:
                del metadata["extras"]["states"]
            metadata["version"] = version
            metadata["state"]["version"] = 1
            del metadata["state"]["schedules"]

        return edit

    for version in (1, 2):
        with pytest.raises(ValueError, match=f"a version {version} payload's scheduler states carry no schedule"):
            handoff.loads(_forged(data, as_version(version)), sched)
    stateless = handoff.dumps(handoff.loads(data, sched).evolve(state=None), sched)

    def stateless_version_1(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        del metadata["extras"]["states"]
        metadata["version"] = 1

    old = handoff.loads(_forged(stateless, stateless_version_1), sched)
    assert old.state is None and dict(old.extras) == {}
    assert torch.equal(old.latents, handoff.loads(data, sched).latents)


def test_format_1_state_needs_its_schedules() -> None:
    """`serialize` reads a format 1 state (no schedules) only given `schedules=`, verified against its plan."""
    sched, data = _payload()
    tensors, metadata = _parts(data)
    state_tensors = {key.removeprefix("state."): value for key, value in tensors.items() if key.startswith("state.")}
    old = {**{key: value for key, value in metadata["state"].items() if key != "schedules"}, "version": 1}
    with pytest.raises(ValueError, match=r"a format 1 payload carries no schedule.*pass schedules="):
        serialize.state_from_tensors(state_tensors, old, sched)
    schedule = sched.schedule(CASES["DPMSolverMultistep-sd1.5-dpm-2m"].steps)
    state = serialize.state_from_tensors(state_tensors, old, sched, schedules=schedule)
    assert same_state(state, serialize.state_from_tensors(state_tensors, metadata["state"], sched))
    with pytest.raises(ValueError, match=r"plan.timesteps is torch.int64 \(1, 8\), but this worker's plan .* \(1, 9\)"):
        serialize.state_from_tensors(state_tensors, old, sched, schedules=sched.schedule(9))
    with pytest.raises(ValueError, match="schedules= differs from the schedules the payload carries"):
        serialize.state_from_tensors(state_tensors, metadata["state"], sched, schedules=sched.schedule(9))
    with pytest.raises(TypeError, match="schedules must be a Schedule"):
        serialize.state_from_tensors(state_tensors, old, sched, schedules=9)


# ---------------------------------------------------------------------------------------------------- bad payloads
def _payload() -> tuple[Any, bytes]:
    case = CASES["DPMSolverMultistep-sd1.5-dpm-2m"]
    sched = case.scheduler()
    stage = Denoise(model=conditioned_model, scheduler=sched)
    req = stage.step(stage.step(make_req(case, 3, case.steps, rows=2)))
    return sched, handoff.dumps(req, sched)


def _parts(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    return safetensors.torch.load(data), json.loads(header["__metadata__"]["functional_sched"])


def _forged(data: bytes, edit: Callable[[dict[str, torch.Tensor], dict[str, Any]], None]) -> bytes:
    """The payload edited, with a valid checksum: what only a deliberate forger (or a bug) could send."""
    tensors, metadata = _parts(data)
    edit(tensors, metadata)
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    metadata["sha256"] = handoff._digest(metadata, tensors)
    return safetensors.torch.save(tensors, metadata={"functional_sched": json.dumps(metadata)})


def test_payload_is_safetensors_with_versioned_json_header() -> None:
    _, data = _payload()
    size = int.from_bytes(data[:8], "little")
    assert data[8:9] == b"{" and len(data) > 8 + size
    tensors, metadata = _parts(data)
    assert metadata["format"] == "functional_sched.request" and metadata["version"] == 3
    assert metadata["extras"] == {"values": {}, "tensors": [], "states": {}}
    assert (
        metadata["scheduler"]["class"] == "DPMSolverMultistep" and metadata["scheduler"]["config"]["solver_order"] == 2
    )
    assert metadata["state"]["format"] == "functional_sched.state" and len(metadata["sha256"]) == 64
    assert set(metadata["request"]) == {
        "guidance_scale",
        "guidance_rescale",
        "seed",
        "num_inference_steps",
        "timesteps",
        "sigmas",
        "mu",
        "latent_shape",
        "dtype",
    }
    assert set(tensors) == {
        "latents",
        "prompt_embeds",
        "negative_prompt_embeds",
        *(f"state.{key}" for key in ("step_index", "lower_order_nums", "history.0", "history.1")),
        *(f"state.plan.{table}" for table in ("timesteps", "sigmas", "num_steps", "coefficients")),
    }


class _Trap:
    """Unpickling this creates a file: proof that a loader ran code from the payload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


def test_pickle_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    sched, _ = _payload()
    trap = tmp_path / "ran"
    for data in (pickle.dumps(_Trap(str(trap))), pickle.dumps({"latents": torch.zeros(2)})):
        with pytest.raises(ValueError, match="corrupt or not a functional-sched request"):
            handoff.loads(data, sched)
    assert not trap.exists()
    pickle.loads(pickle.dumps(_Trap(str(trap))))  # the trap works: unpickling it is what loads never does
    assert trap.exists()


@pytest.mark.parametrize("cut", [0, 7, 8, 100, -100, -1])
def test_truncated_payload(cut: int) -> None:
    sched, data = _payload()
    with pytest.raises(ValueError, match="corrupt or not a functional-sched request"):
        handoff.loads(data[:cut], sched)


def test_garbage_and_foreign_safetensors() -> None:
    sched, _ = _payload()
    garbage = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with pytest.raises(ValueError, match="corrupt or not a functional-sched request"):
        handoff.loads(garbage.numpy().tobytes(), sched)
    with pytest.raises(ValueError, match=r"without a functional_sched\.request header"):
        handoff.loads(safetensors.torch.save({"weight": torch.zeros(3)}), sched)
    with pytest.raises(TypeError, match="expected bytes"):
        handoff.loads("not bytes", sched)  # type: ignore[arg-type]


def test_flipped_bytes_fail_the_checksum() -> None:
    sched, data = _payload()
    start = 8 + int.from_bytes(data[:8], "little")
    for offset in (start, (start + len(data)) // 2, len(data) - 1):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        with pytest.raises(ValueError, match="checksum mismatch"):
            handoff.loads(bytes(flipped), sched)
    edited = data.replace(b'\\"seed\\": 3', b'\\"seed\\": 4')  # a metadata value; the header stays valid JSON
    assert edited != data and len(edited) == len(data)
    with pytest.raises(ValueError, match="checksum mismatch"):
        handoff.loads(edited, sched)


def test_other_scheduler_class_or_step_options() -> None:
    sched, data = _payload()
    with pytest.raises(ValueError, match="made by a DPMSolverMultistep, but this worker's scheduler is a UniPC"):
        handoff.loads(data, fs.UniPCMultistep())
    with pytest.raises(ValueError, match=r"other step options \(solver_order=2 \(here 3\)\)"):
        handoff.loads(data, attrs.evolve(sched, solver_order=3))
    plan_only = attrs.evolve(sched, beta_end=0.015)  # shapes the plan, not the step: the receiver's plan differs
    with pytest.raises(
        ValueError, match=r"plan.sigmas differs from this worker's own plan .* \(The sender's config differs: beta_end"
    ):
        handoff.loads(data, plan_only)
    tensors, metadata = _parts(data)
    state_tensors = {key.removeprefix("state."): value for key, value in tensors.items() if key.startswith("state.")}
    with pytest.raises(ValueError, match="another scheduler class"):
        serialize.state_from_tensors(state_tensors, metadata["state"], fs.UniPCMultistep())
    with pytest.raises(ValueError, match="other step options"):
        serialize.state_from_tensors(state_tensors, metadata["state"], fs.DPMSolverMultistep(prediction_type="sample"))
    with pytest.raises(ValueError, match=r"handoff\.dumps: .* was not built by this UniPCMultistep"):
        handoff.dumps(handoff.loads(data, sched), fs.UniPCMultistep())


def _set(key: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., None]:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        tensors[key] = value(tensors[key])

    return edit


def _meta(path: tuple[str, ...], value: Any) -> Callable[..., None]:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        node = metadata
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _drop(key: str) -> Callable[..., None]:
    return lambda tensors, metadata: tensors.pop(key)


def _add(key: str) -> Callable[..., None]:
    return lambda tensors, metadata: tensors.__setitem__(key, torch.zeros(2))


FORGERIES = [
    ("version", _meta(("version",), 4), "request format version 4, but this functional-sched reads"),
    ("version-true", _meta(("version",), True), "request format version True"),
    ("state-version", _meta(("state", "version"), 3), "format version 3, but this functional-sched reads"),
    ("state-class", _meta(("state", "state"), "UniPCState"), "another scheduler class"),
    ("layout", _meta(("state", "fields", "history"), 3), "laid out as"),
    ("missing-history", _drop("state.history.1"), r"missing \['history.1'\]"),
    ("extra-state-key", _add("state.bogus"), r"unexpected \['bogus'\]"),
    ("missing-latents", _drop("latents"), r"tensors missing \['latents'\]"),
    ("extra-key", _add("weights"), r"unexpected \['weights'\]"),
    (
        "step-index-dtype",
        _set("state.step_index", lambda t: t.float()),
        r"step_index is torch.float32 \(2,\), not int64",
    ),
    (
        "history-dtype",
        _set("state.history.0", lambda t: t.double()),
        r"history.1 is torch.float32 .*, unlike history.0 \(torch.float64",
    ),
    ("plan-dtype", _set("state.plan.sigmas", lambda t: t.double()), "sigmas and coefficients are torch.float64"),
    (
        "history-shape",
        _set("state.history.1", lambda t: t[..., :2]),
        r"history.1 is .* \(2, 2, 4, 2\), unlike history.0",
    ),
    ("history-rows", _set("state.history.1", lambda t: t[:1]), "not a float tensor of 2 rows"),
    ("counter-rows", _set("state.lower_order_nums", lambda t: t[:1]), "lower_order_nums has 1 rows"),
    ("sigmas-length", _set("state.plan.sigmas", lambda t: t[:, :-1]), r"plan.sigmas has shape .*, but timesteps"),
    ("schedules", _set("state.plan.num_steps", lambda t: t.repeat(3)), r"plan.num_steps has shape \(3,\)"),
    ("step-index-range", _set("state.step_index", lambda t: t + 7), r"step_index \[9, 9\] lies outside \[0, num_steps"),
    ("negative-step", _set("state.step_index", lambda t: t - 3), r"step_index \[-1, -1\] lies outside"),
    ("warmup-range", _set("state.lower_order_nums", lambda t: t + 1), r"lower_order_nums \[3, 3\] lies outside"),
    ("num-steps-range", _set("state.plan.num_steps", lambda t: t + 1), r"num_steps \[9\] lie outside \[1, 8\]"),
    (
        "plan-columns",  # a plan of another layout (another version): its columns would mean other coefficients
        _set("state.plan.coefficients", lambda t: t[..., :-1]),
        r"its plan holds 11 coefficients per step, this scheduler's plans 12",
    ),
    ("latent-rows", _set("latents", lambda t: t[:1]), "latents .* for a state of 2 rows"),
    ("request-field", _meta(("request", "seed"), "three"), "request field seed='three' missing or malformed"),
    ("dtype-field", _meta(("request", "dtype"), "Tensor"), "request field dtype='Tensor'"),
    ("section", _meta(("extras",), None), "metadata 'extras' missing or malformed"),
    ("extras-states", _meta(("extras", "states"), {"x": 1}), "metadata 'extras' needs values, tensors and states"),
    (
        "extras-twice",
        lambda tensors, metadata: metadata["extras"].update(values={"x": 1}, states={"x": {}}),
        r"extras names \['x', 'x'\], not distinct",
    ),
]


@pytest.mark.parametrize(("edit", "match"), [pytest.param(e, m, id=i) for i, e, m in FORGERIES])
def test_forged_payloads_are_refused(edit: Callable[..., None], match: str) -> None:
    """Payloads with a valid checksum that do not fit: each refused with a message naming the problem."""
    sched, data = _payload()
    handoff.loads(_forged(data, lambda tensors, metadata: None), sched)  # the forger itself is sound
    with pytest.raises(ValueError, match=match):
        handoff.loads(_forged(data, edit), sched)


def test_what_cannot_be_handed_off() -> None:
    sched, data = _payload()
    req = handoff.loads(data, sched)
    with pytest.raises(TypeError, match=r"extras\['shape'\] is a tuple; extras travel as tensors, scheduler states"):
        handoff.dumps(req.with_extras(shape=(1, 2)), sched)
    with pytest.raises(TypeError, match=r"extras\['fn'\] is a builtin_function_or_method"):
        handoff.dumps(req.with_extras(fn=print), sched)
    with pytest.raises(TypeError, match="extras key 1 is a int; name extras with strings"):
        handoff.dumps(req.evolve(extras={1: 2.0}), sched)
    unconverted = req.evolve()
    object.__setattr__(unconverted, "guidance_scale", torch.tensor(4.0))  # past Req's converter, as a subclass might
    with pytest.raises(TypeError, match=r"Req\.guidance_scale=tensor\(4\.\) \(Tensor\) does not travel as JSON"):
        handoff.dumps(unconverted, sched)
    with pytest.raises(TypeError, match=r"Req\.output is a str; only a tensor"):
        handoff.dumps(req.evolve(output="image"), sched)
    with pytest.raises(TypeError, match="expected a scheduler state"):
        serialize.state_to_tensors(object())
    tensors, metadata = serialize.state_to_tensors(req.state)
    with pytest.raises(TypeError, match=r"'step_index' is a list, not a torch\.Tensor"):
        serialize.state_from_tensors({**tensors, "step_index": [2, 2]}, metadata, sched)
    with pytest.raises(ValueError, match=r"not a functional_sched\.state header"):
        serialize.state_from_tensors(tensors, {"format": "npz"}, sched)


# ------------------------------------------------------------------------------------------ what the receiver trusts
def _undisturbed(data: bytes, sched: Any) -> torch.Tensor:
    return Denoise(model=conditioned_model, scheduler=sched).forward(handoff.loads(data, sched)).latents


def test_receiver_steps_with_its_own_plan() -> None:
    """A plan table off by an ulp (float rounding between hosts) loads, but the state holds the receiver's own plan
    (equal to `sched.plan`) and finishes bit for bit; a NaN, or a change beyond rounding, is refused by name."""
    sched, data = _payload()
    expected = _undisturbed(data, sched)
    ulp = _forged(data, _set("state.plan.coefficients", lambda t: torch.nextafter(t, t + 1)))
    resumed = handoff.loads(ulp, sched)
    own = sched.plan(CASES["DPMSolverMultistep-sd1.5-dpm-2m"].steps)
    for table in ("timesteps", "sigmas", "num_steps", "coefficients"):
        torch.testing.assert_close(getattr(resumed.state.plan, table), getattr(own, table), rtol=0, atol=0)
    assert resumed.state.cursor is not None and resumed.state.cursor.owned.host is sched._host_plan(
        sched.schedule(8), torch.float32
    ), "the cursor is the receiver's cached host plan's"
    torch.testing.assert_close(
        Denoise(model=conditioned_model, scheduler=sched).forward(resumed).latents, expected, rtol=0, atol=0
    )
    nan = _forged(data, _set("state.plan.coefficients", lambda t: t.index_fill(1, torch.tensor([5]), float("nan"))))
    with pytest.raises(ValueError, match=r"plan.coefficients holds NaN or inf \(at index \[0, 5, 0, 0\]\)"):
        handoff.loads(nan, sched)
    with pytest.raises(ValueError, match=r"history.1 holds NaN or inf"):
        handoff.loads(_forged(data, _set("state.history.1", lambda t: t / 0)), sched)
    edited = _forged(data, _set("state.plan.sigmas", lambda t: t * 1.001))
    with pytest.raises(
        ValueError, match=r"plan.sigmas differs from this worker's own plan .* at schedule row 0, step 0"
    ):
        handoff.loads(edited, sched)


def test_state_whose_plan_lost_its_schedules() -> None:
    """A state that went through a pytree round trip (as torch.compile and torch.func return it) has no schedules:
    the sender is told to pass them, and with them the state hands off and finishes as the undisturbed run."""
    sched, data = _payload()
    req = handoff.loads(data, sched)
    leaves, spec = pytree.tree_flatten(req.state)
    flattened = req.evolve(state=pytree.tree_unflatten(leaves, spec))
    assert flattened.state.plan.schedules is None
    with pytest.raises(ValueError, match=r"does not know its schedule .* pass schedules=scheduler.schedule"):
        handoff.dumps(flattened, sched)
    resumed = handoff.loads(handoff.dumps(flattened, sched, schedules=sched.schedule(8)), sched)
    assert same_req(resumed, req)
    torch.testing.assert_close(
        Denoise(model=conditioned_model, scheduler=sched).forward(resumed).latents,
        _undisturbed(data, sched),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match=r"plan.timesteps is torch.int64 \(1, 8\), but this worker's plan"):
        handoff.loads(handoff.dumps(flattened, sched, schedules=sched.schedule(9)), sched)
    with pytest.raises(ValueError, match="schedules= differs from the schedules the state's plan was made from"):
        handoff.dumps(req, sched, schedules=sched.schedule(9))
    with pytest.raises(ValueError, match="schedules holds 2 schedules, but the plan has 1 rows"):
        handoff.dumps(flattened, sched, schedules=[sched.schedule(8)] * 2)
    with pytest.raises(TypeError, match=r"schedules must hold Schedules \(scheduler.schedule"):
        handoff.dumps(flattened, sched, schedules=[8])


def test_request_schedule_fields_must_describe_a_state_schedule() -> None:
    """The request's num_inference_steps, timesteps, sigmas and mu, where set, may not contradict every schedule its
    states carry: the sender is told; fields the schedule leaves open (custom sigmas for training timesteps, as
    DistilledDenoise keeps them) pass."""
    sched, data = _payload()
    req = handoff.loads(data, sched)
    with pytest.raises(
        ValueError,
        match=r"handoff.dumps: .* contradict every schedule .*\(num_inference_steps=30 \(the schedule's 8\)\)",
    ):
        handoff.dumps(req.evolve(num_inference_steps=30), sched)
    assert handoff.loads(handoff.dumps(req.evolve(num_inference_steps=8), sched), sched).num_inference_steps == 8
    flow = fs.FlowMatchEulerDiscrete(stochastic_sampling=True)
    sample = latents((1, *SHAPE), torch.float32, seed=3)
    distilled = Req(latents=sample, state=flow.init(sample=sample, sigmas=[1.0, 0.75, 0.5]), timesteps=(1000, 750, 500))
    assert handoff.loads(handoff.dumps(distilled, flow), flow).timesteps == (1000.0, 750.0, 500.0)
    with pytest.raises(
        ValueError, match=r"contradict every schedule .*\(sigmas=\[1.0, 0.5\] \(the schedule's \[1.0, 0.75, 0.5\]\)"
    ):
        handoff.dumps(distilled.evolve(sigmas=(1.0, 0.5)), flow)


KEY = b"shared by the cluster"


def test_keyed_payloads() -> None:
    """With a key, dumps adds an HMAC-SHA256 of the digest: the right key loads; a wrong key, no MAC, or a payload
    forged with a recomputed checksum is refused by a keyed receiver; an unkeyed receiver still loads it."""
    sched, data = _payload()
    req = handoff.loads(data, sched)
    keyed = handoff.dumps(req, sched, key=KEY)
    assert _parts(keyed)[1]["hmac"] != _parts(keyed)[1]["sha256"] and "hmac" not in _parts(data)[1]
    assert same_req(handoff.loads(keyed, sched, key=KEY), req)
    assert same_req(handoff.loads(keyed, sched), req)  # an unkeyed receiver ignores the MAC
    with pytest.raises(ValueError, match="MAC mismatch: the payload was made with another key"):
        handoff.loads(keyed, sched, key=b"another key")
    with pytest.raises(ValueError, match=r"carries no MAC, but this worker has a key .* dumps\(\.\.\., key=\.\.\.\)"):
        handoff.loads(data, sched, key=KEY)
    forged = _forged(keyed, _meta(("request", "guidance_scale"), 9.0))  # checksum recomputed, MAC kept
    assert handoff.loads(forged, sched).guidance_scale == 9.0  # the checksum alone cannot tell
    with pytest.raises(ValueError, match="MAC mismatch"):
        handoff.loads(forged, sched, key=KEY)
    with pytest.raises(TypeError, match=r"key must be bytes .* encode a text key first"):
        handoff.dumps(req, sched, key="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must not be empty"):
        handoff.loads(keyed, sched, key=b"")


def test_keyed_save_and_load(tmp_path: Path) -> None:
    sched, data = _payload()
    req = handoff.loads(data, sched)
    handoff.save(req, sched, tmp_path / "req.safetensors", key=KEY)
    assert same_req(handoff.load(tmp_path / "req.safetensors", sched, key=KEY), req)
    with pytest.raises(ValueError, match="MAC mismatch"):
        handoff.load(tmp_path / "req.safetensors", sched, key=b"other")
    with pytest.raises(ValueError, match=r"is \d+ bytes, more than max_bytes=100"):
        handoff.load(tmp_path / "req.safetensors", sched, max_bytes=100)


def test_limits_are_checked_before_anything_is_allocated() -> None:
    sched, data = _payload()
    count = len(_parts(data)[0])
    assert handoff.MAX_BYTES == 1 << 30 and same_req(
        handoff.loads(data, sched, max_tensors=count), handoff.loads(data, sched)
    )
    with pytest.raises(ValueError, match=rf"the payload is {len(data)} bytes, more than max_bytes={len(data) - 1}"):
        handoff.loads(data, sched, max_bytes=len(data) - 1)
    with pytest.raises(ValueError, match=rf"it holds {count} tensors, more than max_tensors={count - 1}"):
        handoff.loads(data, sched, max_tensors=count - 1)
    with pytest.raises(ValueError, match=r"header's length word says \d+ bytes, more than max_header_bytes=64"):
        handoff.loads(data, sched, max_header_bytes=64)
    with pytest.raises(TypeError, match="max_bytes must be a positive int"):
        handoff.loads(data, sched, max_bytes=1.5)  # type: ignore[arg-type]
    huge = (2**40).to_bytes(8, "little") + data[8:]
    with pytest.raises(ValueError, match="more than max_header_bytes"):
        handoff.loads(huge, sched)
    with pytest.raises(ValueError, match=r"truncated: its header declares \d+ bytes, but \d+ follow"):
        handoff.loads(huge, sched, max_header_bytes=2**41)
    with pytest.raises(ValueError, match=r"\b8 bytes follow its last tensor"):
        handoff.loads(data + bytes(8), sched)
    with pytest.raises(ValueError, match=r"latent_shape=\[1024, 1024, 1024\] makes latents larger than max_bytes"):
        handoff.loads(_forged(data, _meta(("request", "latent_shape"), [1024, 1024, 1024])), sched)


@pytest.mark.parametrize("length", [-1, 0, 7, (1 << 30) + 1, 2**62])
def test_recv_refuses_a_garbage_length_word(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    """The peer's length word is checked before the payload buffer is allocated (a fake recv stands for the peer)."""
    received: list[torch.Tensor] = []

    def fake_recv(tensor: torch.Tensor, src: int, group: Any = None) -> None:
        received.append(tensor)
        tensor.fill_(length)

    monkeypatch.setattr(dist, "recv", fake_recv)
    with pytest.raises(ValueError, match=rf"rank 0 announced a payload of {length} bytes, outside \[8, max_bytes="):
        handoff.recv(fs.DPMSolverMultistep(), src=0)
    assert len(received) == 1  # no buffer for the payload


# -------------------------------------------------------------------------------------------- torch.distributed
DISTRIBUTED_CASES = (
    "DPMSolverMultistep-sd1.5-dpm-2m-sde",
    "UniPCMultistep-bh1-3-karras",
    "FlowMatchEulerDiscrete-stochastic-karras",
)
DISTRIBUTED_STEPS = 3  # taken on rank 0 before the handoff


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _distributed_worker(rank: int, port: int, out_dir: str) -> None:
    """Rank 0 denoises each request a few steps and sends it; rank 1 receives, finishes and saves the latents."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        for index, case_id in enumerate(DISTRIBUTED_CASES):
            case = CASES[case_id]
            sched = case.scheduler()
            stage = Denoise(model=conditioned_model, scheduler=sched)
            if rank == 0:
                req = make_req(case, index, case.steps, rows=2)
                for _ in range(DISTRIBUTED_STEPS):
                    req = stage.step(req)
                handoff.send(req, sched, dst=1)
            else:
                req = stage.forward(handoff.recv(sched, src=0))
                safetensors.torch.save_file({"latents": req.latents}, os.path.join(out_dir, f"{case_id}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_send_recv_between_two_processes(tmp_path: Path) -> None:
    """gloo between two spawned processes (the same code runs over NCCL with device="cuda"): rank 1's results
    equal an undisturbed run in this process, bit for bit."""
    context = mp.start_processes(
        _distributed_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=90)
    try:
        while not context.join(timeout=1):
            if datetime.datetime.now() > deadline:
                pytest.fail("the two handoff processes did not finish within 90 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    for index, case_id in enumerate(DISTRIBUTED_CASES):
        case = CASES[case_id]
        expected = Denoise(model=conditioned_model, scheduler=case.scheduler()).forward(
            make_req(case, index, case.steps, 2)
        )
        got = safetensors.torch.load_file(str(tmp_path / f"{case_id}.safetensors"))["latents"]
        assert torch.equal(got, expected.latents), case_id
