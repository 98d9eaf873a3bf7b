"""Handing a request to another worker mid-loop: to bytes and back (`dumps`, `loads`), or over `torch.distributed`.

    handoff.send(req, scheduler, dst=1)              # rank 0, after k steps
    req = handoff.recv(scheduler, src=0)             # rank 1: Denoise(model, scheduler).forward(req) finishes it
    req = handoff.loads(data, video, extra_schedulers={AUDIO_STATE: audio})  # a scheduler state in extras

The receiver finishes bit for bit as the sender would have: the state carries the solver's history and counters,
and stochastic steps draw their noise from (seed, step) (`denoise.step_noise`). The payload is a safetensors file,
never pickle, so loading one cannot run code. Tensors: the scheduler state under "state." (see
`functional_sched.serialize`), "latents", "prompt_embeds", "negative_prompt_embeds", a tensor "output", tensor
extras under "extras.<name>", and extras that are scheduler states under "extras.<name>.state.". Metadata (JSON,
under the "functional_sched" key of the safetensors header): the format's name and version, the scheduler's class
and config, the request's scalar fields (its device is not carried: `loads` puts the tensors on the device it is
given), the extras (JSON values, tensor names, and each state extra's metadata), the state's metadata, and a SHA-256
over the rest of the metadata and every tensor's key, dtype, shape and bytes. Loading checks the format, then the
checksum, then each state against the scheduler that will step it (the receiving scheduler; for a state extra, the
one `extra_schedulers` names); anything that does not fit raises a ValueError saying what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from functional_sched import serialize
from functional_sched.machinery.plan import Plan

from .request import Req

__all__ = ["FORMAT", "VERSION", "dumps", "load", "loads", "recv", "save", "send"]

FORMAT = "functional_sched.request"
VERSION = 2  # 2 added scheduler states to extras; a version 1 payload loads as one without them
_READABLE = (1, 2)
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
    """Whether an extra is JSON (scalars, strings, lists of them); a tuple would come back a list, so it is refused."""
    if isinstance(value, list):
        return all(_json_value(item) for item in value)
    return isinstance(value, _JSON_SCALARS)


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
    """SHA-256 of the metadata (less the digest itself) and every tensor's key, dtype, shape and bytes."""
    hasher = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(tensors):
        tensor = tensors[key]
        hasher.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


def dumps(req: Req, scheduler: Any) -> bytes:
    """The request as safetensors bytes; its state must come from `scheduler` (class and step options)."""
    save = _safetensors().save
    tensors: dict[str, torch.Tensor] = {}
    state_metadata = None
    if req.state is not None:
        state = req.state
        if type(state) is not scheduler.state_type or int(state.fingerprint) != scheduler.fingerprint:
            raise ValueError(
                f"handoff.dumps: the request's {type(state).__name__} was not built by this {scheduler.name} "
                "(another class or other step options); pass the scheduler that steps the request."
            )
        state_tensors, state_metadata = serialize.state_to_tensors(state)
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
    for key, value in req.extras.items():
        if not isinstance(key, str):
            raise TypeError(f"handoff.dumps: extras key {key!r} is a {type(key).__name__}; name extras with strings.")
        if isinstance(value, torch.Tensor):
            tensors[_EXTRAS + key] = _owned(value)
            tensor_extras.append(key)
        elif _is_state(value):
            extra_tensors, state_extras[key] = serialize.state_to_tensors(value)
            tensors.update({_state_prefix(key) + name: tensor.cpu() for name, tensor in extra_tensors.items()})
        elif _json_value(value):
            json_extras[key] = value
        else:
            raise TypeError(
                f"handoff.dumps: extras[{key!r}] is a {type(value).__name__}; extras travel as tensors, scheduler "
                "states or JSON (bool, int, float, str, None, and lists of them); convert it, or drop it before the "
                "handoff."
            )
    for key in state_extras:  # loads finds a state extra's tensors by their prefix: no other extra's may share it
        prefix = _state_prefix(key)
        clashes = [
            name for name in [*tensor_extras, *state_extras] if name != key and _state_prefix(name).startswith(prefix)
        ]
        if clashes:
            raise ValueError(
                f"handoff.dumps: the tensors of extras {clashes} would lie under {prefix!r}, where those "
                f"of the state extras[{key!r}] lie; rename them."
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
    return save(tensors, metadata={_HEADER_KEY: json.dumps(metadata)})


def _read(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the checked metadata (format, version, checksum, structure) of a payload."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"handoff.loads: expected bytes, got {type(data).__name__}.")
    data = bytes(data)
    try:
        tensors = _safetensors().load(data)
        size = int.from_bytes(data[:8], "little")
        text = json.loads(data[8 : 8 + size]).get("__metadata__", {}).get(_HEADER_KEY)
        metadata = json.loads(text) if text is not None else None
    except ImportError:
        raise
    except Exception as error:  # safetensors' parser errors are not one type
        raise _corrupt(f"not a safetensors file: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise _corrupt(f"a safetensors file without a {FORMAT} header")
    if type(metadata.get("version")) is not int or metadata["version"] not in _READABLE:
        raise ValueError(
            f"handoff.loads: request format version {metadata.get('version')!r}, but this functional-sched reads "
            f"version(s) {list(_READABLE)}; run the same functional-sched version on the sending and receiving worker."
        )
    if metadata.get("sha256") != _digest(metadata, tensors):
        raise ValueError(
            "handoff.loads: checksum mismatch: the payload's bytes changed after it was made (corrupted in transit "
            "or edited); send it again from the worker that made it."
        )
    _check_sections(metadata)
    return tensors, metadata


def _check_scheduler(metadata: Mapping[str, Any], scheduler: Any) -> None:
    sender = metadata["scheduler"]
    if sender["class"] != scheduler.name:
        raise ValueError(
            f"handoff.loads: the payload was made by a {sender['class']}, but this worker's scheduler is a "
            f"{scheduler.name}; load it with a {sender['class']} of the sender's config."
        )
    state = metadata["state"]
    if state is not None and state.get("fingerprint") != scheduler.fingerprint:
        ours = _config(scheduler)
        differ = [
            f"{option}={value!r} (here {ours.get(option)!r})"
            for option, value in sender["config"].items()
            if ours.get(option) != value
        ]
        raise ValueError(
            f"handoff.loads: the payload was made by a {scheduler.name} with other step options "
            f"({', '.join(differ) or 'equal configs: does the sender run another functional-sched version?'}); "
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


def _check_sections(metadata: Mapping[str, Any]) -> None:
    """The metadata's structure (a payload that passed the checksum yet was not made by `dumps`); a version 1
    payload's extras get version 2's "states", empty."""
    for key, kind in _SECTIONS.items():
        if not isinstance(metadata.get(key), kind):
            raise _corrupt(f"metadata {key!r} missing or malformed")
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
    listed = metadata["tensors"]
    if len(set(listed)) != len(listed) or not set(listed) <= set(_TENSOR_FIELDS):
        raise _corrupt(f"tensor fields {listed}, not distinct names among {list(_TENSOR_FIELDS)}")
    for name, check in _REQUEST_FIELDS.items():
        if name not in request or not check(request[name]):
            raise _corrupt(f"request field {name}={request.get(name)!r} missing or malformed")


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
    tensors; on the eager fast path where its rows stand at one step)."""
    state_tensors = {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}
    return serialize.state_from_tensors(state_tensors, metadata, scheduler, device=device)


def loads(
    data: bytes,
    scheduler: Any,
    *,
    device: torch.device | str | None = None,
    extra_schedulers: Mapping[str, Any] | None = None,
) -> Req:
    """The request that `dumps` wrote, checked against `scheduler`, its tensors on `device` (default: the CPU).

    `extra_schedulers` maps each extras name that holds a scheduler state to the scheduler that steps it (e.g.
    `{AUDIO_STATE: audio_scheduler}` for `PairedDenoise`); that state is checked against it as the request's own
    state is against `scheduler`."""
    tensors, metadata = _read(data)
    _check_scheduler(metadata, scheduler)
    device = torch.empty(0, device=device or "cpu").device  # "cuda" -> "cuda:0", as tensors report it
    extras = metadata["extras"]
    extra_schedulers = extra_schedulers or {}
    _check_extra_schedulers(extras["states"], extra_schedulers)
    listed = [*metadata["tensors"], *(_EXTRAS + key for key in extras["tensors"])]
    prefixes = (_STATE, *(_state_prefix(name) for name in extras["states"]))
    own = {key: value for key, value in tensors.items() if not key.startswith(prefixes)}
    missing, unexpected = [key for key in listed if key not in own], sorted(set(own) - set(listed))
    if missing or unexpected:
        raise _corrupt(f"tensors missing {missing}, unexpected {unexpected}")
    fields = {**metadata["request"], "dtype": getattr(torch, metadata["request"]["dtype"])}
    state = None
    if metadata["state"] is not None:
        state = _load_state(tensors, _STATE, metadata["state"], scheduler, device)
    states = {}
    for name, state_metadata in extras["states"].items():
        try:
            states[name] = _load_state(tensors, _state_prefix(name), state_metadata, extra_schedulers[name], device)
        except ValueError as error:
            raise ValueError(f"handoff.loads: extras[{name!r}]: {error}") from error
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
        **{key: own[_EXTRAS + key].to(device) for key in extras["tensors"]},
        **states,
    }
    return Req(**fields, **values, state=state, device=device, extras=extras_values)


def save(req: Req, scheduler: Any, path: str | Path) -> None:
    """Write `dumps(req, scheduler)` to `path` (a .safetensors file)."""
    Path(path).write_bytes(dumps(req, scheduler))


def load(
    path: str | Path,
    scheduler: Any,
    *,
    device: torch.device | str | None = None,
    extra_schedulers: Mapping[str, Any] | None = None,
) -> Req:
    """The request that `save` wrote to `path` (`extra_schedulers` as for `loads`)."""
    return loads(Path(path).read_bytes(), scheduler, device=device, extra_schedulers=extra_schedulers)


def send(req: Req, scheduler: Any, dst: int, *, group: Any = None, device: torch.device | str = "cpu") -> None:
    """Send the request to rank `dst`: its length (an int64 tensor), then its bytes (uint8), both on `device`
    ("cpu" for gloo, the rank's GPU for NCCL)."""
    import torch.distributed as dist

    payload = torch.frombuffer(bytearray(dumps(req, scheduler)), dtype=torch.uint8)
    dist.send(torch.tensor([payload.numel()], dtype=torch.int64, device=device), dst, group=group)
    dist.send(payload.to(device), dst, group=group)


def recv(
    scheduler: Any,
    src: int,
    *,
    group: Any = None,
    device: torch.device | str = "cpu",
    extra_schedulers: Mapping[str, Any] | None = None,
) -> Req:
    """Receive a request that rank `src` sent with `send`; its tensors land on `device` (`extra_schedulers` as for
    `loads`)."""
    import torch.distributed as dist

    length = torch.empty(1, dtype=torch.int64, device=device)
    dist.recv(length, src, group=group)
    size = int(length)
    if size < 8:
        raise _corrupt(f"a length of {size} bytes")
    payload = torch.empty(size, dtype=torch.uint8, device=device)
    dist.recv(payload, src, group=group)
    return loads(payload.cpu().numpy().tobytes(), scheduler, device=device, extra_schedulers=extra_schedulers)
