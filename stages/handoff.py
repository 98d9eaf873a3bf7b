"""Handing a request to another worker mid-loop: to bytes and back (`dumps`, `loads`), or over `torch.distributed`.

    handoff.send(req, scheduler, dst=1, key=KEY)     # rank 0, after k steps
    req = handoff.recv(scheduler, src=0, key=KEY)    # rank 1: Denoise(model, scheduler).forward(req) finishes it
    req = handoff.loads(data, video, extra_schedulers={AUDIO_STATE: audio})  # a scheduler state in extras

The receiver finishes as the sender would have: the state carries the solver's history and counters, stochastic
steps draw their noise from (seed, step) (`denoise.step_noise`), and the receiver rebuilds each state's plan from its
own scheduler and the schedules in the payload, checks the payload's tables against it and steps with its own
(`functional_sched.serialize`): bit-identical between identical builds on identical machines, within an ulp of the
tables elsewhere. The payload is a safetensors file, never pickle, so loading one cannot run code. Tensors: the
scheduler state under "state.", "latents", "prompt_embeds", "negative_prompt_embeds", a tensor "output", tensor
extras under "extras.<name>", and extras that are scheduler states under "extras.<name>.state.". Metadata (JSON,
under the "functional_sched" key of the safetensors header): the format's name and version, the scheduler's class
and config, the request's scalar fields (its device is not carried: `loads` puts the tensors on the device it is
given), the extras (JSON values, tensor names, and each state extra's metadata), the state's metadata, a SHA-256 over
the rest of the metadata and every tensor's key, dtype, shape and bytes, and, made with a shared `key`, an
HMAC-SHA256 of that digest.

Nothing in a payload is trusted. Before anything is allocated, `loads` bounds the payload (`max_bytes`), the header
(`max_header_bytes`) and the tensor count (`max_tensors`), and reads the safetensors header itself: every tensor's
dtype, shape and byte range must tile the data exactly (a truncated or extended payload says so). Then the format and
version, the MAC where the receiver has a key (a keyed receiver refuses unkeyed and wrongly keyed payloads; a SHA-256
alone detects corruption, not forgery), the checksum, the metadata's structure and values (finite numbers, bounded
step counts and shapes), each state against the scheduler that steps it (the receiving scheduler; for a state extra,
the one `extra_schedulers` names), finite latents and embeddings, and the request's schedule fields against the
schedules its states carry. Anything that does not fit raises a ValueError (TypeError for an argument of the wrong
type) saying what is wrong. Tensor extras are the stages' own: they are carried as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from functional_sched import serialize
from functional_sched.machinery.plan import Plan
from functional_sched.machinery.schedule import MAX_INFERENCE_STEPS, Schedule

from .request import Req

__all__ = [
    "FORMAT",
    "MAX_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "VERSION",
    "dumps",
    "load",
    "loads",
    "recv",
    "save",
    "send",
]

FORMAT = "functional_sched.request"
# 2 added scheduler states to extras (a version 1 payload loads as one without them); 3: states carry their schedules
# (serialize's format 2), and a payload may carry an HMAC
VERSION = 3
_READABLE = (1, 2, 3)  # 1 and 2 only without scheduler states: theirs carry no schedule to verify their plans by

#: Default limits of `loads`, `load` and `recv`: the payload's bytes (a request of 1 GiB is far beyond any latents a
#: handoff carries), its safetensors header (tens of bytes per tensor, the JSON metadata with any custom schedules;
#: safetensors itself allows 100 MB), and its tensors (a state has a dozen; extras add theirs).
MAX_BYTES = 1 << 30
MAX_HEADER_BYTES = 64 << 20
MAX_TENSORS = 4096
_MAC = "hmac"  # the metadata entry of the HMAC-SHA256 of the digest, where the payload was made with a key
# safetensors' dtype names and their sizes in bytes (sub-byte types are refused: handoffs carry none)
_ITEM_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_HEADER_KEY = "functional_sched"  # the safetensors metadata entry that holds the JSON
_TENSOR_FIELDS = ("latents", "prompt_embeds", "negative_prompt_embeds", "output")
_STATE, _EXTRAS = "state.", "extras."
_JSON_SCALARS = (bool, int, float, str, type(None))


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as error:
        raise ImportError("functional_sched.stages.handoff needs safetensors: pip install safetensors") from error
    return safetensors.torch


def _corrupt(problem: str) -> ValueError:
    return ValueError(f"handoff: the payload is corrupt or not a functional-sched request ({problem}).")


def _json_value(value: Any) -> bool:
    """Whether an extra is JSON (scalars, strings, lists of them); a tuple would come back a list, so it is refused.
    Walked without recursion: a payload may nest lists deeper than Python's recursion limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, _JSON_SCALARS):
            return False
    return True


def _is_state(value: Any) -> bool:
    """Whether an extra is a scheduler state (a record with a plan and per-row step indices)."""
    return isinstance(getattr(value, "plan", None), Plan) and isinstance(
        getattr(value, "step_index", None), torch.Tensor
    )


def _state_prefix(name: str) -> str:
    """Where the tensors of the state extra `name` lie in the payload."""
    return f"{_EXTRAS}{name}.{_STATE}"


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy with memory of its own (safetensors refuses views and tensors that share storage)."""
    return tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def _config(scheduler: Any) -> dict[str, Any]:
    return json.loads(json.dumps(attrs.asdict(scheduler)))


def _digest(metadata: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata (less the digest and the MAC) and every tensor's key, dtype, shape and bytes."""
    signed = {key: value for key, value in metadata.items() if key not in ("sha256", _MAC)}
    hasher = hashlib.sha256(json.dumps(signed, sort_keys=True).encode())
    for key in sorted(tensors):
        tensor = tensors[key]
        hasher.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


def _mac(key: bytes, digest: str) -> str:
    """HMAC-SHA256 of the digest: only a holder of `key` can make it, so it proves where a payload was made."""
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def _checked_key(owner: str, key: Any) -> bytes | None:
    if key is None:
        return None
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(
            f"{owner}: key must be bytes (the secret the cluster's workers share), got {type(key).__name__}; encode "
            "a text key first."
        )
    if not key:
        raise ValueError(f"{owner}: key must not be empty; use the secret the cluster's workers share.")
    return bytes(key)


def _checked_limits(owner: str, max_bytes: Any, max_header_bytes: Any, max_tensors: Any) -> None:
    for name, value in (("max_bytes", max_bytes), ("max_header_bytes", max_header_bytes), ("max_tensors", max_tensors)):
        if not _is_int(value):
            raise TypeError(f"{owner}: {name} must be a positive int, got {value!r}.")
        if value < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value}.")


def _finite_json(value: Any) -> bool:
    """Whether every number in a JSON value (nested lists and dicts) is finite (Python's JSON reads NaN and
    Infinity). Walked without recursion, as `_json_value`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def dumps(
    req: Req,
    scheduler: Any,
    *,
    key: bytes | None = None,
    schedules: Schedule | Sequence[Schedule] | None = None,
) -> bytes:
    """The request as safetensors bytes; its state must come from `scheduler` (class and step options).

    `key` (bytes shared by the cluster's workers) adds an HMAC-SHA256 that a receiver with the key checks.
    `schedules` is the state's schedule (`scheduler.schedule(...)`, one per plan row if stacked) where its plan
    lost it (a state returned by torch.compile or a torch.func transform); see `serialize.state_to_tensors`."""
    save = _safetensors().save
    key = _checked_key("handoff.dumps", key)
    tensors: dict[str, torch.Tensor] = {}
    state_metadata = None
    if req.state is not None:
        state = req.state
        if type(state) is not scheduler.state_type or int(state.fingerprint) != scheduler.fingerprint:
            raise ValueError(
                f"handoff.dumps: the request's {type(state).__name__} was not built by this {scheduler.name} "
                "(another class or other step options); pass the scheduler that steps the request."
            )
        state_tensors, state_metadata = serialize.state_to_tensors(state, schedules=schedules)
        tensors.update({_STATE + key: value.cpu() for key, value in state_tensors.items()})  # already copies
    present = []
    for name in _TENSOR_FIELDS:
        value = getattr(req, name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"handoff.dumps: Req.{name} is a {type(value).__name__}; only a tensor (or None) can be handed off."
            )
        tensors[name] = _owned(value)
        present.append(name)
    json_extras, tensor_extras, state_extras = {}, [], {}
    for name, value in req.extras.items():
        if not isinstance(name, str):
            raise TypeError(f"handoff.dumps: extras key {name!r} is a {type(name).__name__}; name extras with strings.")
        if isinstance(value, torch.Tensor):
            tensors[_EXTRAS + name] = _owned(value)
            tensor_extras.append(name)
        elif _is_state(value):
            try:
                extra_tensors, state_extras[name] = serialize.state_to_tensors(value)
            except ValueError as error:
                raise ValueError(f"handoff.dumps: extras[{name!r}]: {error}") from error
            tensors.update({_state_prefix(name) + part: tensor.cpu() for part, tensor in extra_tensors.items()})
        elif _json_value(value):
            if not _finite_json(value):
                raise ValueError(f"handoff.dumps: extras[{name!r}]={value!r} holds NaN or inf; extras must be finite.")
            json_extras[name] = value
        else:
            raise TypeError(
                f"handoff.dumps: extras[{name!r}] is a {type(value).__name__}; extras travel as tensors, scheduler "
                "states or JSON (bool, int, float, str, None, and lists of them); convert it, or drop it before the "
                "handoff."
            )
    for name in state_extras:  # loads finds a state extra's tensors by their prefix: no other extra's may share it
        prefix = _state_prefix(name)
        clashes = [
            other
            for other in [*tensor_extras, *state_extras]
            if other != name and _state_prefix(other).startswith(prefix)
        ]
        if clashes:
            raise ValueError(
                f"handoff.dumps: the tensors of extras {clashes} would lie under {prefix!r}, where those "
                f"of the state extras[{name!r}] lie; rename them."
            )
    request = {name: getattr(req, name) for name in _REQUEST_FIELDS}
    request.update(
        {name: list(request[name]) for name in ("timesteps", "sigmas", "latent_shape") if request[name] is not None}
    )
    request["dtype"] = str(req.dtype).removeprefix("torch.")
    for name, check in _REQUEST_FIELDS.items():
        if not check(request[name]):
            raise TypeError(
                f"handoff.dumps: Req.{name}={request[name]!r} ({type(request[name]).__name__}) does not travel as "
                "JSON; use a Python int or float (or None where the field allows it)."
            )
    _check_request_values(request, lambda problem: ValueError(f"handoff.dumps: Req.{problem}."))
    _check_schedule_fields("handoff.dumps", request, [state_metadata, *state_extras.values()])
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "scheduler": {"class": scheduler.name, "config": _config(scheduler)},
        "request": request,
        "tensors": present,
        "extras": {"values": json_extras, "tensors": tensor_extras, "states": state_extras},
        "state": state_metadata,
    }
    metadata["sha256"] = _digest(metadata, tensors)
    if key is not None:
        metadata[_MAC] = _mac(key, metadata["sha256"])
    return save(tensors, metadata={_HEADER_KEY: json.dumps(metadata)})


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [name for name, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys {sorted({name for name in keys if keys.count(name) > 1})}")
    return dict(pairs)


_MAX_DIMS, _MAX_DIM = 64, 1 << 62  # a tensor's dims, and each dim's size, as torch could hold them


def _header(data: bytes, max_header_bytes: int, max_tensors: int) -> dict[str, str]:
    """The safetensors header's metadata, after checking the header before safetensors reads it: the length word
    within `max_header_bytes` and the data, the JSON, at most `max_tensors` tensors, and every tensor's dtype, shape
    and byte range consistent with the data (they tile it exactly), so nothing is allocated from a declared size."""
    if len(data) < 8:
        raise _corrupt(f"truncated: {len(data)} bytes, fewer than the 8 of the header's length word")
    size = int.from_bytes(data[:8], "little")
    if size > max_header_bytes:
        raise _corrupt(
            f"its header's length word says {size} bytes, more than max_header_bytes={max_header_bytes}; raise "
            "max_header_bytes= only if the sender's requests carry that much metadata"
        )
    if 8 + size > len(data):
        raise _corrupt(f"truncated: its header declares {size} bytes, but {len(data) - 8} follow the length word")
    try:
        header = json.loads(data[8 : 8 + size], object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _corrupt(f"not a safetensors file: its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise _corrupt("not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise _corrupt("the safetensors header's __metadata__ is not a map of strings")
    if len(header) > max_tensors:
        raise _corrupt(
            f"it holds {len(header)} tensors, more than max_tensors={max_tensors}; raise max_tensors= only if the "
            "sender's requests carry that many extras"
        )
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _corrupt(f"tensor {name!r}: its header entry is not a dtype, a shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ITEM_SIZES:
            raise _corrupt(f"tensor {name!r} has dtype {dtype!r}, not one of {sorted(_ITEM_SIZES)}")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_DIMS
            or not all(_is_int(dim) and 0 <= dim <= _MAX_DIM for dim in shape)
        ):
            raise _corrupt(f"tensor {name!r} has shape {shape!r}, not a list of at most {_MAX_DIMS} sizes")
        if (
            not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(at) for at in offsets))
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _corrupt(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] byte offsets")
        needed = math.prod(shape) * _ITEM_SIZES[dtype]
        if needed != offsets[1] - offsets[0]:
            raise _corrupt(
                f"tensor {name!r}: a {dtype} tensor of shape {shape} needs {needed} bytes, its data_offsets span "
                f"{offsets[1] - offsets[0]}"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise _corrupt(f"tensor {name!r} starts at byte {begin} of the data, not {end}: the tensors must tile it")
        end = stop
    held = len(data) - 8 - size
    if end > held:
        raise _corrupt(f"truncated: its tensors need {end} bytes of data, {held} follow the header")
    if end < held:
        raise _corrupt(f"{held - end} bytes follow its last tensor")
    return metadata


def _read(
    data: Any, key: bytes | None, max_bytes: int, max_header_bytes: int, max_tensors: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the checked metadata (bounds, format, version, MAC, checksum, structure) of a payload."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"handoff.loads: expected bytes, got {type(data).__name__}.")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:
        raise ValueError(
            f"handoff.loads: the payload is {size} bytes, more than max_bytes={max_bytes}; raise max_bytes= if the "
            "sender's requests are that large."
        )
    data = bytes(data)
    text = _header(data, max_header_bytes, max_tensors).get(_HEADER_KEY)
    if text is None:
        raise _corrupt(f"a safetensors file without a {FORMAT} header")
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _corrupt(f"its {FORMAT} header is not JSON ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise _corrupt(f"a safetensors file without a {FORMAT} header")
    if type(metadata.get("version")) is not int or metadata["version"] not in _READABLE:
        raise ValueError(
            f"handoff.loads: request format version {metadata.get('version')!r}, but this functional-sched reads "
            f"version(s) {list(_READABLE)}; run the same functional-sched version on the sending and receiving worker."
        )
    try:
        tensors = _safetensors().load(data)
    except ImportError:
        raise
    except Exception as error:  # safetensors' parser errors are not one type
        raise _corrupt(f"not a safetensors file: {error}") from error
    try:
        digest = _digest(metadata, tensors)
    except (ValueError, RecursionError) as error:  # metadata nested too deep to encode again
        raise _corrupt(f"its metadata cannot be checked ({error!r})") from None
    if key is not None:
        _check_mac(metadata, key, digest)
    if metadata.get("sha256") != digest:
        raise ValueError(
            "handoff.loads: checksum mismatch: the payload's bytes changed after it was made (corrupted in transit "
            "or edited); send it again from the worker that made it."
        )
    _check_sections(metadata)
    return tensors, metadata


def _check_mac(metadata: Mapping[str, Any], key: bytes, digest: str) -> None:
    found = metadata.get(_MAC)
    if found is None:
        raise ValueError(
            "handoff.loads: the payload carries no MAC, but this worker has a key and takes only payloads made with "
            "it: make them with dumps(..., key=...) (send(..., key=...), save(..., key=...)) on the sending worker."
        )
    if not isinstance(found, str) or not hmac.compare_digest(
        found.encode("utf-8", "replace"), _mac(key, digest).encode()
    ):
        raise ValueError(
            "handoff.loads: MAC mismatch: the payload was made with another key, or changed after it was made; it "
            "does not come from a worker of this cluster (or was tampered with): refuse it."
        )


def _config_differences(metadata: Mapping[str, Any], scheduler: Any) -> str:
    """The options where the sender's config differs from `scheduler`'s, as `name=value (here value)`."""
    ours = _config(scheduler)
    return ", ".join(
        f"{option}={value!r} (here {ours.get(option)!r})"
        for option, value in metadata["scheduler"]["config"].items()
        if ours.get(option) != value
    )


def _check_scheduler(metadata: Mapping[str, Any], scheduler: Any) -> None:
    sender = metadata["scheduler"]
    if sender["class"] != scheduler.name:
        raise ValueError(
            f"handoff.loads: the payload was made by a {sender['class']}, but this worker's scheduler is a "
            f"{scheduler.name}; load it with a {sender['class']} of the sender's config."
        )
    state = metadata["state"]
    if state is not None and state.get("fingerprint") != scheduler.fingerprint:
        differ = _config_differences(metadata, scheduler)
        raise ValueError(
            f"handoff.loads: the payload was made by a {scheduler.name} with other step options "
            f"({differ or 'equal configs: does the sender run another functional-sched version?'}); "
            "load it with a scheduler of the sender's config."
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_list(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or (isinstance(value, list) and all(check(item) for item in value))


_REQUEST_FIELDS: dict[str, Callable[[Any], bool]] = {
    "guidance_scale": _is_number,
    "guidance_rescale": _is_number,
    "seed": _is_int,
    "num_inference_steps": lambda value: value is None or _is_int(value),
    "timesteps": _optional_list(_is_number),
    "sigmas": _optional_list(_is_number),
    "mu": lambda value: value is None or _is_number(value),
    "latent_shape": _optional_list(_is_int),
    "dtype": lambda value: isinstance(getattr(torch, str(value), None), torch.dtype),
}
_SECTIONS = {"scheduler": dict, "request": dict, "tensors": list, "extras": dict, "state": (dict, type(None))}
_EXTRAS_PARTS = {"values": dict, "tensors": list, "states": dict}
_SEEDS = (-(1 << 63), 1 << 64)  # what torch.Generator.manual_seed takes: [low, high)
_SCHEDULE_FIELDS = ("num_inference_steps", "timesteps", "sigmas", "mu")


def _check_request_values(request: Mapping[str, Any], fail: Callable[[str], Exception]) -> None:
    """The request's scalar fields (types checked) hold values a stage can use: finite numbers, a seed a generator
    takes, step counts and custom tables within `MAX_INFERENCE_STEPS`, a positive latent shape, a float dtype."""
    for name in ("guidance_scale", "guidance_rescale", "mu"):
        if request[name] is not None and not math.isfinite(request[name]):
            raise fail(f"{name}={request[name]!r} must be finite")
    if not _SEEDS[0] <= request["seed"] < _SEEDS[1]:
        raise fail(f"seed={request['seed']} must lie in [-2**63, 2**64), what a torch.Generator takes")
    steps = request["num_inference_steps"]
    if steps is not None and not 1 <= steps <= MAX_INFERENCE_STEPS:
        raise fail(f"num_inference_steps={steps} must lie in [1, {MAX_INFERENCE_STEPS}]")
    for name in ("timesteps", "sigmas"):
        table = request[name]
        if table is not None and (not 1 <= len(table) <= MAX_INFERENCE_STEPS or not _finite_json(table)):
            raise fail(f"{name} must hold 1 to {MAX_INFERENCE_STEPS} finite values, got {len(table)} of them")
    shape = request["latent_shape"]
    if shape is not None and (not shape or len(shape) > _MAX_DIMS or not all(1 <= size <= _MAX_DIM for size in shape)):
        raise fail(f"latent_shape={shape} must be 1 to {_MAX_DIMS} positive sizes")
    if not getattr(torch, request["dtype"]).is_floating_point:
        raise fail(f"dtype={request['dtype']!r} must be a floating-point dtype (the latents')")


def _check_sections(metadata: Mapping[str, Any]) -> None:
    """The metadata's structure and values (a payload that passed the checksum yet was not made by `dumps`); a
    version 1 payload's extras get version 2's "states", empty."""
    for name, kind in _SECTIONS.items():
        if not isinstance(metadata.get(name), kind):
            raise _corrupt(f"metadata {name!r} missing or malformed")
    scheduler, extras, request = metadata["scheduler"], metadata["extras"], metadata["request"]
    if not isinstance(scheduler.get("class"), str) or not isinstance(scheduler.get("config"), dict):
        raise _corrupt("metadata 'scheduler' needs a class name and a config")
    if metadata["version"] == 1:  # version 1 carried no state extras
        extras["states"] = {}
    if not all(isinstance(extras.get(part), kind) for part, kind in _EXTRAS_PARTS.items()) or not all(
        isinstance(state, dict) for state in extras["states"].values()
    ):
        raise _corrupt("metadata 'extras' needs values, tensors and states (a state's metadata each)")
    names = [*extras["values"], *extras["tensors"], *extras["states"]]
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise _corrupt(f"extras names {names}, not distinct strings")
    if not all(_json_value(value) and _finite_json(value) for value in extras["values"].values()):
        raise _corrupt("extras values must be finite JSON scalars or lists of them")
    listed = metadata["tensors"]
    if not all(name in _TENSOR_FIELDS for name in listed) or len(set(listed)) != len(listed):
        raise _corrupt(f"tensor fields {listed}, not distinct names among {list(_TENSOR_FIELDS)}")
    for name, check in _REQUEST_FIELDS.items():
        if name not in request or not check(request[name]):
            raise _corrupt(f"request field {name}={request.get(name)!r} missing or malformed")
    _check_request_values(request, lambda problem: _corrupt(f"request field {problem}"))
    if metadata["version"] < 3 and (metadata["state"] is not None or extras["states"]):
        raise ValueError(
            f"handoff.loads: a version {metadata['version']} payload's scheduler states carry no schedule, so this "
            "worker cannot rebuild their plans to verify the ones it is sent; send it again from a worker running "
            f"this functional-sched version (format {VERSION})."
        )


def _contradictions(request: Mapping[str, Any], schedule: Mapping[str, Any]) -> list[str]:
    """The request's schedule fields that contradict `schedule` (a `Schedule.to_json`): set on both, unequal."""
    found = []
    for name in _SCHEDULE_FIELDS:
        mine, theirs = request[name], schedule[name]
        if isinstance(theirs, Mapping):  # a custom table: its values, as a list (JSON's or to_json's tuple)
            theirs, mine = list(theirs["values"]), None if mine is None else list(mine)
        if mine is not None and theirs is not None and mine != theirs:
            found.append(f"{name}={mine!r} (the schedule's {theirs!r})")
    return found


def _check_schedule_fields(owner: str, request: Mapping[str, Any], states: Sequence[Any]) -> None:
    """The request's schedule fields (where set) describe one of the schedules its states carry (`states`: each a
    state's metadata, or None): receivers step those schedules, and a stage reading the fields must see them. A
    request may carry several (a parked regular state beside a distilled one, audio beside video), so one that its
    fields do not contradict suffices."""
    schedules = [schedule for state in states if state is not None for schedule in state["schedules"]]
    if not schedules or all(request[name] is None for name in _SCHEDULE_FIELDS):
        return
    problems = [_contradictions(request, schedule) for schedule in schedules]
    if all(problems):
        raise ValueError(
            f"{owner}: the request's schedule fields contradict every schedule its states carry "
            f"({'; '.join(sorted({', '.join(problem) for problem in problems}))}); the states step their own "
            "schedules: make the request's fields describe them (or None)."
        )


def _check_extra_schedulers(states: Mapping[str, Any], extra_schedulers: Mapping[str, Any]) -> None:
    """A scheduler for every state extra, and for nothing else."""
    for name, state in states.items():
        if name not in extra_schedulers:
            raise ValueError(
                f"handoff.loads: extras[{name!r}] is a scheduler state ({state.get('state')}); pass the scheduler "
                f"that steps it: loads(..., extra_schedulers={{{name!r}: <its scheduler>}})."
            )
    unknown = sorted(set(extra_schedulers) - set(states))
    if unknown:
        raise ValueError(
            f"handoff.loads: extra_schedulers names {unknown}, but the payload's scheduler-state extras are "
            f"{sorted(states)}; pass a scheduler for those only."
        )


def _load_state(
    tensors: Mapping[str, torch.Tensor],
    prefix: str,
    metadata: Mapping[str, Any],
    scheduler: Any,
    device: torch.device,
) -> Any:
    """The state whose tensors lie under `prefix`, rebuilt and checked by `serialize` for `scheduler` (its own
    tensors and plan; on the eager fast path where its rows stand at one step)."""
    state_tensors = {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}
    return serialize.state_from_tensors(state_tensors, metadata, scheduler, device=device)


_CONDITIONING = ("latents", "prompt_embeds", "negative_prompt_embeds")  # what the model reads: finite floats only


def loads(
    data: bytes,
    scheduler: Any,
    *,
    device: torch.device | str | None = None,
    extra_schedulers: Mapping[str, Any] | None = None,
    key: bytes | None = None,
    max_bytes: int = MAX_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_tensors: int = MAX_TENSORS,
) -> Req:
    """The request that `dumps` wrote, checked against `scheduler`, its tensors on `device` (default: the CPU).

    `extra_schedulers` maps each extras name that holds a scheduler state to the scheduler that steps it (e.g.
    `{AUDIO_STATE: audio_scheduler}` for `PairedDenoise`); that state is checked against it as the request's own
    state is against `scheduler`. With `key` (the cluster's shared bytes) only payloads made with it load. The limits
    bound the payload, its header and its tensor count before anything is allocated (see the module's docstring)."""
    key = _checked_key("handoff.loads", key)
    _checked_limits("handoff.loads", max_bytes, max_header_bytes, max_tensors)
    tensors, metadata = _read(data, key, max_bytes, max_header_bytes, max_tensors)
    _check_scheduler(metadata, scheduler)
    device = torch.empty(0, device=device or "cpu").device  # "cuda" -> "cuda:0", as tensors report it
    extras = metadata["extras"]
    extra_schedulers = extra_schedulers or {}
    _check_extra_schedulers(extras["states"], extra_schedulers)
    listed = [*metadata["tensors"], *(_EXTRAS + name for name in extras["tensors"])]
    states_at = [_STATE] if metadata["state"] is not None else []  # a state's tensors, where metadata says one is
    prefixes = (*states_at, *(_state_prefix(name) for name in extras["states"]))
    own = {name: value for name, value in tensors.items() if not name.startswith(prefixes)}
    missing, unexpected = [name for name in listed if name not in own], sorted(set(own) - set(listed))
    if missing or unexpected:
        raise _corrupt(f"tensors missing {missing}, unexpected {unexpected}")
    shape = metadata["request"]["latent_shape"]
    if shape is not None and math.prod(shape) * getattr(torch, metadata["request"]["dtype"]).itemsize > max_bytes:
        raise _corrupt(f"request field latent_shape={shape} makes latents larger than max_bytes={max_bytes}")
    for name in _CONDITIONING:
        value = own.get(name)
        if value is not None and (not value.is_floating_point() or not bool(torch.isfinite(value).all())):
            raise _corrupt(
                f"{name} is {value.dtype} and must hold finite floats (NaN or inf would spread to the result)"
            )
    fields = {**metadata["request"], "dtype": getattr(torch, metadata["request"]["dtype"])}
    state = None
    if metadata["state"] is not None:
        try:
            state = _load_state(tensors, _STATE, metadata["state"], scheduler, device)
        except ValueError as error:
            differ = _config_differences(metadata, scheduler)
            if not differ:
                raise
            raise ValueError(f"{error} (The sender's config differs: {differ}.)") from error
    states = {}
    for name, state_metadata in extras["states"].items():
        try:
            states[name] = _load_state(tensors, _state_prefix(name), state_metadata, extra_schedulers[name], device)
        except ValueError as error:
            raise ValueError(f"handoff.loads: extras[{name!r}]: {error}") from error
    _check_schedule_fields("handoff.loads", metadata["request"], [metadata["state"], *extras["states"].values()])
    values = {name: own[name].to(device) for name in metadata["tensors"]}
    latents = values.get("latents")
    if (
        state is not None
        and latents is not None
        and (latents.dim() == 0 or latents.shape[0] != state.step_index.shape[0])
    ):
        raise _corrupt(f"latents {tuple(latents.shape)} for a state of {state.step_index.shape[0]} rows")
    extras_values = {
        **extras["values"],
        **{name: own[_EXTRAS + name].to(device) for name in extras["tensors"]},
        **states,
    }
    try:
        return Req(**fields, **values, state=state, device=device, extras=extras_values)
    except (TypeError, ValueError) as error:  # what `Req` itself refuses (ranges, rows of embeddings vs latents)
        raise _corrupt(f"the request it holds is not a valid Req: {error}") from error


def save(
    req: Req,
    scheduler: Any,
    path: str | Path,
    *,
    key: bytes | None = None,
    schedules: Schedule | Sequence[Schedule] | None = None,
) -> None:
    """Write `dumps(req, scheduler, key=key, schedules=schedules)` to `path` (a .safetensors file)."""
    Path(path).write_bytes(dumps(req, scheduler, key=key, schedules=schedules))


def load(
    path: str | Path,
    scheduler: Any,
    *,
    device: torch.device | str | None = None,
    extra_schedulers: Mapping[str, Any] | None = None,
    key: bytes | None = None,
    max_bytes: int = MAX_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_tensors: int = MAX_TENSORS,
) -> Req:
    """The request that `save` wrote to `path` (the other arguments as for `loads`); a file larger than `max_bytes`
    is refused before it is read."""
    _checked_limits("handoff.load", max_bytes, max_header_bytes, max_tensors)
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"handoff.load: {path} is {size} bytes, more than max_bytes={max_bytes}; raise max_bytes= if the "
            "sender's requests are that large."
        )
    return loads(
        Path(path).read_bytes(),
        scheduler,
        device=device,
        extra_schedulers=extra_schedulers,
        key=key,
        max_bytes=max_bytes,
        max_header_bytes=max_header_bytes,
        max_tensors=max_tensors,
    )


def send(
    req: Req,
    scheduler: Any,
    dst: int,
    *,
    group: Any = None,
    device: torch.device | str = "cpu",
    key: bytes | None = None,
    schedules: Schedule | Sequence[Schedule] | None = None,
) -> int:
    """Send the request to rank `dst`: its length (an int64 tensor), then its bytes (uint8), both on `device`
    ("cpu" for gloo, the rank's GPU for NCCL); `key` and `schedules` as for `dumps`. Returns the payload's bytes."""
    import torch.distributed as dist

    payload = torch.frombuffer(bytearray(dumps(req, scheduler, key=key, schedules=schedules)), dtype=torch.uint8)
    dist.send(torch.tensor([payload.numel()], dtype=torch.int64, device=device), dst, group=group)
    dist.send(payload.to(device), dst, group=group)
    return payload.numel()


def _checked_length(size: int, src: int, max_bytes: int) -> int:
    """The payload length that rank `src` announced, if a payload can have it (8 bytes or more, at most
    `max_bytes`): checked before the receive buffer is allocated."""
    if not 8 <= size <= max_bytes:
        raise ValueError(
            f"handoff.recv: rank {src} announced a payload of {size} bytes, outside [8, max_bytes={max_bytes}]: its "
            "length word is garbage (the ranks are out of step: re-create the process group), or its requests are "
            "larger than this worker takes (raise max_bytes=)."
        )
    return size


def recv(
    scheduler: Any,
    src: int,
    *,
    group: Any = None,
    device: torch.device | str = "cpu",
    to: torch.device | str | None = None,
    extra_schedulers: Mapping[str, Any] | None = None,
    key: bytes | None = None,
    max_bytes: int = MAX_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_tensors: int = MAX_TENSORS,
) -> Req:
    """Receive a request that rank `src` sent with `send` over `device` (as `send`'s); its tensors land on `to`
    (default: `device`; a GPU rank that talks gloo receives on "cpu" and computes on `to="cuda"`). The other arguments
    as for `loads`; the announced length is checked against `max_bytes` before the buffer is allocated."""
    import torch.distributed as dist

    key = _checked_key("handoff.recv", key)
    _checked_limits("handoff.recv", max_bytes, max_header_bytes, max_tensors)
    length = torch.empty(1, dtype=torch.int64, device=device)
    dist.recv(length, src, group=group)
    size = _checked_length(int(length), src, max_bytes)
    payload = torch.empty(size, dtype=torch.uint8, device=device)
    dist.recv(payload, src, group=group)
    return loads(
        payload.cpu().numpy().tobytes(),
        scheduler,
        device=device if to is None else to,
        extra_schedulers=extra_schedulers,
        key=key,
        max_bytes=max_bytes,
        max_header_bytes=max_header_bytes,
        max_tensors=max_tensors,
    )
