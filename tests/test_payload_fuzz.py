"""Payload fuzz for `stages.handoff` and `serialize`: truncations, bit flips, forged fields with recomputed checksums,
non-finite tables and history, huge declared sizes and step counts, garbage `recv` length words.

Every mutated payload must either raise a ValueError or TypeError whose message says where it comes from, or load
and finish the loop. Where the receiver can verify what was changed (any byte, as the checksum covers them all; the
state's metadata and plan tables, which it rebuilds), a payload that loads finishes equal to the unmutated run. A
forger who recomputes the checksum can still change what no receiver can rebuild: a counter, the history or latents
(such payloads must finish finite), or a request field such as guidance (such payloads must finish exactly as the
same request does without a handoff: the handoff adds nothing). A shared key (HMAC) is what refuses them all.

The fuzz runs in a subprocess under a memory limit (`RLIMIT_AS`: what the process maps after its warm-up plus
1.5 GiB), so an attempt to allocate from a forged size fails the test instead of the machine. Loops are seeded:
every run tries the same payloads.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import functional_sched as fs
from functional_sched import batching
from functional_sched.stages import Denoise, Req, handoff
from functional_sched.testing.parity import conditioned_model, latents

HEADROOM = 3 << 29  # 1.5 GiB above the warmed-up process
ROW_SHAPE = (2, 4, 4)
REFUSED = (ValueError, TypeError)
Edit = Callable[[dict[str, torch.Tensor], dict[str, Any]], None]


# -------------------------------------------------------------------------------------------------------- payloads
class Payload:
    """One request mid-loop, its payload, and how its undisturbed run ends."""

    def __init__(self, name: str, scheduler: Any, req: Req, key: bytes | None = None) -> None:
        self.name, self.scheduler, self.key = name, scheduler, key
        self.stage = Denoise(model=conditioned_model, scheduler=scheduler)
        self.req, self.data = req, handoff.dumps(req, scheduler, key=key)
        self.expected = self.finish(req)

    def finish(self, req: Req) -> torch.Tensor:
        """The latents once the first of its rows ends its schedule (stacked rows of other lengths then split)."""
        while int((req.state.plan.num_steps - req.state.step_index).min()) > 0:
            req = self.stage.step(req)
        return req.latents

    def parts(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        size = int.from_bytes(self.data[:8], "little")
        header = json.loads(self.data[8 : 8 + size])
        return safetensors.torch.load(self.data), json.loads(header["__metadata__"]["functional_sched"])

    def forged(self, edit: Edit, mac_key: Any = "own") -> bytes:
        """The payload edited, with a recomputed checksum, and a MAC made with `mac_key` (default: the payload's
        key, where it has one; None: no MAC, as a forger without the key sends)."""
        tensors, metadata = self.parts()
        edit(tensors, metadata)
        tensors = {key: value.contiguous() for key, value in tensors.items()}
        metadata["sha256"] = handoff._digest(metadata, tensors)
        metadata.pop("hmac", None)
        mac_key = self.key if mac_key == "own" else mac_key
        if mac_key is not None:
            metadata["hmac"] = handoff._mac(mac_key, metadata["sha256"])
        return safetensors.torch.save(tensors, metadata={"functional_sched": json.dumps(metadata)})

    def attempt(self, data: bytes) -> tuple[Req | None, torch.Tensor | None, str]:
        """(the loaded request or None, its finished latents or None, the refusal's message or "")."""
        try:
            req = handoff.loads(data, self.scheduler, key=self.key)
        except REFUSED as error:
            return None, None, str(error)
        return (req, *self.finished(req))

    def finished(self, req: Req) -> tuple[torch.Tensor | None, str]:
        """The finished latents, or the message of a stage that refuses to step the request."""
        try:
            return self.finish(req), ""
        except REFUSED as error:
            return None, str(error)

    def local(self, loaded: Req) -> Req:
        """The sender's own request with the loaded request's scalar fields and extras: what a forged field of the
        request means without any handoff."""
        return self.req.evolve(**{name: getattr(loaded, name) for name in _SCALARS}, extras=loaded.extras)


_SCALARS = ("guidance_scale", "guidance_rescale", "seed", "num_inference_steps", "timesteps", "sigmas", "mu")
_SCALARS += ("latent_shape", "dtype")


def _request(scheduler: Any, steps: int, seed: int, **schedule: Any) -> Req:
    sample = latents((2, *ROW_SHAPE), torch.float32, seed=seed)
    init = {"num_inference_steps": steps} if "sigmas" not in schedule else {}
    return Req(
        latents=sample,
        state=scheduler.init(sample=sample, **init, **schedule),
        prompt_embeds=latents((2, *ROW_SHAPE), torch.float32, seed=seed + 1),
        negative_prompt_embeds=latents((2, *ROW_SHAPE), torch.float32, seed=seed + 2),
        guidance_scale=4.0,
        seed=seed,
        **init,
        **schedule,
    )


def payloads(key: bytes | None = None) -> dict[str, Payload]:
    """A multistep solver with history and warm-up, a stochastic flow schedule of custom sigmas and mu (the request
    carries them too), and two stacked requests of different step counts (a padded plan, one schedule per row)."""
    dpm = fs.DPMSolverMultistep(solver_order=2)
    stage = Denoise(model=conditioned_model, scheduler=dpm)
    dpm_req = stage.step(stage.step(_request(dpm, 8, seed=1)))
    flow = fs.FlowMatchEulerDiscrete(use_dynamic_shifting=True, stochastic_sampling=True)
    flow_req = Denoise(model=conditioned_model, scheduler=flow).step(
        _request(flow, 5, seed=4, sigmas=(1.0, 0.8, 0.6, 0.4, 0.2), mu=0.7)
    )
    unipc = fs.UniPCMultistep()
    parts = [_request(unipc, steps, seed=7 + steps) for steps in (6, 8)]
    stacked = Req(
        latents=torch.cat([part.latents for part in parts]),
        state=batching.stack([part.state for part in parts]),
        prompt_embeds=torch.cat([part.prompt_embeds for part in parts]),
        guidance_scale=1.0,
        seed=11,
    )
    stacked = Denoise(model=conditioned_model, scheduler=unipc).step(stacked)
    return {
        "dpm": Payload("dpm", dpm, dpm_req, key),
        "flow": Payload("flow", flow, flow_req, key),
        "stacked": Payload("stacked", unipc, stacked, key),
    }


# ---------------------------------------------------------------------------------------------------- the checks
class Failures(list):
    """What went wrong, collected so one run reports every failing case."""

    def check(self, payload: Payload, label: str, data: bytes, expect: str, match: str | None = None) -> str:
        """Try `data`; returns "refused" or "loaded". `expect`:
        "refused": it must raise a clear error (matching `match`);
        "equal": it must load and finish equal to the undisturbed run;
        "either-equal": refused, or equal (a change the receiver can verify: any byte, its plan, its schedules);
        "either-finite": refused (by loads, or by a stage stepping it), or finishes finite (a forged counter,
        history or latents, which no receiver can verify);
        "transparent": refused, or finishes as the sender's own request with the same forged fields would without
        a handoff, NaN for NaN (a forged request field: the handoff adds nothing a local request would not do)."""
        name = f"{payload.name}/{label}"
        try:
            loaded, result, message = payload.attempt(data)
            local = payload.finished(payload.local(loaded)) if expect == "transparent" and loaded else None
        except Exception as error:  # anything but a clear ValueError/TypeError is a failure to report
            self.append(f"{name}: {type(error).__name__}: {error}")
            return "crashed"
        if loaded is None or result is None:
            if expect == "equal" or (loaded is not None and expect not in ("either-finite", "transparent")):
                self.append(f"{name}: refused, expected to load and finish: {message}")
            elif not _clear(payload, message):
                self.append(f"{name}: unclear message {message!r}")
            elif match is not None and not re.search(match, message):
                self.append(f"{name}: message {message!r} does not match {match!r}")
            elif local is not None and local[0] is not None:
                self.append(f"{name}: refused, but the same request finishes without a handoff: {message}")
            return "refused"
        if expect == "refused":
            self.append(f"{name}: loaded, expected a refusal")
        elif local is not None:
            if local[0] is None or not _same(result, local[0]):
                self.append(f"{name}: finished unlike the same request without a handoff")
        elif not bool(torch.isfinite(result).all()):
            self.append(f"{name}: finished with NaN or inf")
        elif expect in ("equal", "either-equal") and not _same(result, payload.expected):
            self.append(f"{name}: finished unlike the undisturbed run")
        return "loaded"


def _same(result: torch.Tensor, expected: torch.Tensor) -> bool:
    """Bit for bit, NaN where the other has NaN."""
    try:
        torch.testing.assert_close(result, expected, rtol=0, atol=0, equal_nan=True)
    except AssertionError:
        return False
    return True


def _clear(payload: Payload, message: str) -> bool:
    """A message that says where it comes from (handoff, or the scheduler's state payload) and what is wrong."""
    return len(message) > 30 and ("handoff" in message or payload.scheduler.name in message)


# ------------------------------------------------------------------------------------------------------ mutations
def truncations(payload: Payload, count: int | None) -> Iterator[tuple[str, bytes]]:
    """Cuts at every offset (`count` None), or at the header's edges and `count` offsets spread over the payload."""
    data = payload.data
    end_of_header = 8 + int.from_bytes(data[:8], "little")
    if count is None:
        offsets = range(len(data))
    else:
        edges = {*range(0, 12), *range(end_of_header - 3, end_of_header + 3), len(data) - 1}
        offsets = sorted(edges | {len(data) * index // count for index in range(count)})
    for cut in offsets:
        yield f"truncated-at-{cut}", data[:cut]
    yield "extended", data + b"\0" * 8


def bit_flips(payload: Payload, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    generator = random.Random(seed)
    for _ in range(count):
        offset, bit = generator.randrange(len(payload.data)), generator.randrange(8)
        flipped = bytearray(payload.data)
        flipped[offset] ^= 1 << bit
        yield f"bit-{bit}-at-{offset}", bytes(flipped)


def _at(path: tuple[Any, ...], value: Any) -> Edit:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        node: Any = metadata
        for part in path[:-1]:
            node = node[part]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


_DELETE = object()


def _tensor(key: str, index: tuple[int, ...], value: Callable[[torch.Tensor], Any]) -> Edit:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        table = tensors[key].clone()
        table[index] = value(table[index])
        tensors[key] = table

    return edit


def _ulp_up(value: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(value, torch.tensor(math.inf, dtype=value.dtype))


NAN, INF = math.nan, math.inf
SCHEDULE = ("state", "schedules", 0)
# (payload, label, edit, expected outcome, message pattern)
FORGERIES: list[tuple[str, str, Edit, str, str | None]] = [
    (
        "dpm",
        "plan-nan-coefficient",
        _tensor("state.plan.coefficients", (0, 3, 1, 0), lambda v: NAN),
        "refused",
        r"plan.coefficients holds NaN or inf \(at index \[0, 3, 1, 0\]\)",
    ),
    ("dpm", "plan-inf-sigma", _tensor("state.plan.sigmas", (0, 2), lambda v: INF), "refused", "NaN or inf"),
    ("flow", "plan-nan-timestep", _tensor("state.plan.timesteps", (0, 1), lambda v: NAN), "refused", "NaN or inf"),
    (
        "dpm",
        "plan-coefficient-edited",
        _tensor("state.plan.coefficients", (0, 3, 1, 0), lambda v: v + 1e-3),
        "refused",
        r"plan.coefficients differs from this worker's own plan .* at schedule row 0, step 3",
    ),
    (
        "stacked",
        "plan-padding-edited",
        _tensor("state.plan.sigmas", (0, 8), lambda v: v + 1),
        "refused",
        r"plan.sigmas differs .* at schedule row 0, step 8",
    ),
    (
        "dpm",
        "plan-timestep-edited",
        _tensor("state.plan.timesteps", (0, 4), lambda v: v + 1),
        "refused",
        r"plan.timesteps differs .* step 4",
    ),
    (
        "dpm",
        "plan-num-steps-edited",
        _tensor("state.plan.num_steps", (0,), lambda v: v - 1),
        "refused",
        "plan.num_steps differs",
    ),
    ("dpm", "plan-coefficient-ulp", _tensor("state.plan.coefficients", (0, 3, 1, 0), _ulp_up), "equal", None),
    ("flow", "plan-sigma-ulp", _tensor("state.plan.sigmas", (0, 2), _ulp_up), "equal", None),
    (
        "dpm",
        "history-nan",
        _tensor("state.history.0", (1, 0, 0, 0), lambda v: NAN),
        "refused",
        r"history.0 holds NaN or inf \(at index \[1, 0, 0, 0\]\)",
    ),
    (
        "stacked",
        "last-sample-inf",
        _tensor("state.last_sample", (0, 1, 1, 1), lambda v: -INF),
        "refused",
        "last_sample holds NaN or inf",
    ),
    ("dpm", "latents-nan", _tensor("latents", (0, 0, 0, 0), lambda v: NAN), "refused", "latents .* finite"),
    ("dpm", "prompt-inf", _tensor("prompt_embeds", (1, 1, 1, 1), lambda v: INF), "refused", "prompt_embeds"),
    ("dpm", "negative-nan", _tensor("negative_prompt_embeds", (0, 1, 2, 3), lambda v: NAN), "refused", "negative"),
    ("dpm", "schedule-steps-huge", _at((*SCHEDULE, "num_inference_steps"), 10**9), "refused", "num_inference_steps"),
    ("dpm", "schedule-steps-bigint", _at((*SCHEDULE, "num_inference_steps"), 10**400), "refused", None),
    (
        "dpm",
        "schedule-steps-other",
        _at((*SCHEDULE, "num_inference_steps"), 9),
        "refused",
        r"plan.timesteps is torch.int64 \(1, 8\), but this worker's plan .* \(1, 9\)",
    ),
    ("dpm", "schedule-steps-bool", _at((*SCHEDULE, "num_inference_steps"), True), "refused", None),
    ("dpm", "schedule-steps-negative", _at((*SCHEDULE, "num_inference_steps"), -1), "refused", None),
    ("flow", "schedule-mu-nan", _at((*SCHEDULE, "mu"), NAN), "refused", "mu"),
    ("flow", "schedule-mu-bigint", _at((*SCHEDULE, "mu"), 10**400), "refused", None),
    ("flow", "schedule-mu-huge", _at((*SCHEDULE, "mu"), 1e300), "refused", None),
    ("flow", "schedule-mu-other", _at((*SCHEDULE, "mu"), 0.8), "refused", "differs"),
    ("flow", "schedule-sigmas-long", _at((*SCHEDULE, "sigmas", "values"), [0.5] * 20_000), "refused", "sigmas"),
    (
        "flow",
        "schedule-sigmas-nan",
        _at((*SCHEDULE, "sigmas", "values"), [1.0, NAN, 0.6, 0.4, 0.2]),
        "refused",
        "sigmas",
    ),
    ("flow", "schedule-sigmas-nested", _at((*SCHEDULE, "sigmas", "values"), [[1.0]] * 5), "refused", "sigmas"),
    ("flow", "schedule-table-dtype", _at((*SCHEDULE, "sigmas", "dtype"), "complex64"), "refused", "sigmas"),
    ("flow", "schedule-table-int8", _at((*SCHEDULE, "sigmas", "dtype"), "int8"), "refused", None),
    ("dpm", "schedules-missing", _at(("state", "schedules"), _DELETE), "refused", "schedules"),
    (
        "dpm",
        "schedules-twice",
        lambda t, m: m["state"].update(schedules=m["state"]["schedules"] * 2),
        "refused",
        "schedules are not a list of 1",
    ),
    ("dpm", "schedule-not-mapping", _at(SCHEDULE, "eight"), "refused", "schedule must be a mapping"),
    ("stacked", "schedules-swapped", lambda t, m: m["state"]["schedules"].reverse(), "refused", "differs"),
    ("dpm", "step-index-huge", _tensor("state.step_index", (0,), lambda v: 2**62), "refused", "step_index"),
    ("dpm", "num-steps-huge", _tensor("state.plan.num_steps", (0,), lambda v: 2**40), "refused", "num_steps"),
    ("dpm", "request-steps-huge", _at(("request", "num_inference_steps"), 10**9), "refused", "num_inference_steps"),
    (
        "dpm",
        "request-steps-contradict",
        _at(("request", "num_inference_steps"), 30),
        "refused",
        "contradict every schedule",
    ),
    ("flow", "request-mu-contradict", _at(("request", "mu"), 0.5), "refused", "contradict every schedule"),
    ("dpm", "request-seed-huge", _at(("request", "seed"), 2**70), "refused", "seed"),
    ("dpm", "request-latent-shape-huge", _at(("request", "latent_shape"), [2**40] * 4), "refused", "latent_shape"),
    ("dpm", "request-latent-shape-zero", _at(("request", "latent_shape"), [0, 2]), "refused", "latent_shape"),
    ("dpm", "request-guidance-nan", _at(("request", "guidance_scale"), NAN), "refused", "guidance_scale"),
    ("dpm", "request-timesteps-long", _at(("request", "timesteps"), [1.0] * 20_000), "refused", "timesteps"),
    ("dpm", "request-dtype-int", _at(("request", "dtype"), "int64"), "refused", "dtype"),
    ("dpm", "extras-nan", _at(("extras", "values"), {"scale": NAN}), "refused", "extras"),
    (
        "dpm",
        "extras-deep",
        _at(("extras", "values"), {"deep": json.loads("[" * 600 + "]" * 600)}),
        "either-finite",
        None,
    ),
]


def _raw(header: Any, body: bytes = b"", length: int | None = None) -> bytes:
    """A hand-made safetensors file: its length word (the header's length unless given), header, body."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + body


def _metadata_header(payload: Payload, text: str) -> dict[str, Any]:
    return {"__metadata__": {"functional_sched": text}}


def raw_forgeries(payload: Payload) -> Iterator[tuple[str, bytes]]:
    """Huge declared sizes and malformed headers, made by hand (no recomputed checksum can make them consistent)."""
    data = payload.data
    size = int.from_bytes(data[:8], "little")
    for length in (2**63 - 1, 2**40, len(data), size + 1, size - 1):
        yield f"length-word-{length}", length.to_bytes(8, "little") + data[8:]
    entry = {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 2**64]}
    yield "huge-tensor", _raw({"x": entry}, b"\0" * 64)
    yield "huge-tensor-offsets", _raw({"x": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 2**40]}}, b"\0" * 8)
    yield "many-dims", _raw({"x": {"dtype": "U8", "shape": [1] * 100_000, "data_offsets": [0, 1]}}, b"\0")
    yield "bigint-dim", _raw(b'{"x": {"dtype": "U8", "shape": [' + b"9" * 4000 + b'], "data_offsets": [0, 1]}}')
    many = {f"t{index}": {"dtype": "U8", "shape": [1], "data_offsets": [index, index + 1]} for index in range(10_000)}
    yield "many-tensors", _raw(many, b"\0" * 10_000)
    yield "sub-byte-dtype", _raw({"x": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0")
    yield "overlapping", _raw({n: {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]} for n in ("a", "b")}, b"\0" * 4)
    yield (
        "duplicate-keys",
        _raw(
            b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
            b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}',
            b"\0\0",
        ),
    )
    yield "deep-header", _raw(b"[" * 100_000 + b"]" * 100_000)
    yield "deep-metadata", _raw(_metadata_header(payload, "[" * 100_000 + "]" * 100_000))
    yield "metadata-not-json", _raw(_metadata_header(payload, "{"))
    yield "metadata-not-map", _raw({"__metadata__": [1, 2]})
    yield "not-utf8", _raw(b'{"\xff": 1}')
    yield "huge-metadata", _raw(_metadata_header(payload, " " * (65 << 20)))


def random_forgeries(payload: Payload, count: int, seed: int) -> Iterator[tuple[str, bytes, str]]:
    """A random value at a random place of the metadata, or a random value in a random tensor, the checksum
    recomputed; the outcome expected (see `Failures.check`): "either-equal" where the receiver can verify the change
    (the state's metadata, the plan's tables, the scheduler section), "transparent" for the request's fields and
    extras, "either-finite" for the other tensors."""
    generator = random.Random(seed)
    tensors, metadata = payload.parts()
    paths = [path for path in _paths(metadata) if path[0] not in ("sha256", "hmac")]
    keys = sorted(tensors)
    values: list[Any] = [None, True, -1, 0, 1, 7, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e-308, NAN, INF, "", "x"]
    values += [[], {}, [0.5] * 3, {"values": [], "dtype": "float32"}, [[[]]]]
    floats, integers = [NAN, INF, -INF, 0.0, -1.0, 1e30, 2.0**62, 3.0], [0, -1, 1, 3, 2**62, -(2**62)]
    for index in range(count):
        if index % 2:
            path, value = generator.choice(paths), copy.deepcopy(generator.choice(values))
            # the receiver rebuilds or checks all of the state's metadata, and steps with its own scheduler config
            expect = "transparent" if path[0] in ("request", "extras") else "either-equal"
            yield f"metadata-{'.'.join(map(str, path))}={value!r}", payload.forged(_at(path, value)), expect
        else:
            key = generator.choice(keys)
            number = generator.choice(floats if tensors[key].is_floating_point() else integers)
            place = tuple(generator.randrange(size) for size in tensors[key].shape)
            expect = "either-equal" if key.startswith("state.plan.") else "either-finite"
            yield (
                f"tensor-{key}{list(place)}={number!r}",
                payload.forged(_tensor(key, place, lambda v, n=number: n)),
                expect,
            )


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value, its containers included."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node[:4])  # a table's first values stand for the rest
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


# ------------------------------------------------------------------------------------------------------------ recv
class FakeRecv:
    """`torch.distributed.recv` as a peer would answer it: first the length word `length`, then the payload."""

    def __init__(self, length: int, data: bytes) -> None:
        self.length, self.data, self.calls = length, data, 0

    def __call__(self, tensor: torch.Tensor, src: int, group: Any = None) -> None:
        self.calls += 1
        if self.calls == 1:
            tensor.fill_(self.length)
        else:
            tensor.copy_(torch.frombuffer(bytearray(self.data), dtype=torch.uint8))


def recv_lengths(payload: Payload, failures: Failures) -> None:
    """`recv` with a garbage length word: refused before the payload buffer is allocated; a sound one loads."""
    import torch.distributed as dist

    data = payload.data
    for length in (-1, 0, 7, handoff.MAX_BYTES + 1, 2**40, 2**63 - 1, len(data)):
        fake, original = FakeRecv(length, data), dist.recv
        dist.recv = fake
        try:
            req = handoff.recv(payload.scheduler, src=0, key=payload.key)
        except REFUSED as error:
            if length == len(data) or fake.calls != 1 or "announced a payload of" not in str(error):
                failures.append(f"recv/{length}: refused after {fake.calls} receives: {error}")
            continue
        except Exception as error:
            failures.append(f"recv/{length}: {type(error).__name__}: {error}")
            continue
        finally:
            dist.recv = original
        if length != len(data):
            failures.append(f"recv/{length}: a garbage length word was accepted")
        elif not _same(payload.finish(req), payload.expected):
            failures.append(f"recv/{length}: finished unlike the undisturbed run")


# ------------------------------------------------------------------------------------------------------ the driver
GROUPS = {
    # name: (truncation offsets per payload (None: every one), bit flips, random forgeries)
    "default": (120, 250, 150),
    "slow": (None, 4000, 3000),
}


def limit_memory() -> None:
    """Cap the address space at what the process maps now plus HEADROOM, and check that the cap bites."""
    mapped = next(
        int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines() if "VmSize" in line
    )
    resource.setrlimit(resource.RLIMIT_AS, (mapped + HEADROOM, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        torch.empty(2 * HEADROOM, dtype=torch.uint8)
    except (RuntimeError, MemoryError):
        return
    raise AssertionError("the memory limit does not hold: a 3 GiB allocation succeeded")


def main(group: str) -> None:
    """Run one group of the fuzz (see GROUPS) and exit 1 listing every failure."""
    torch.set_num_threads(1)  # no thread pool grows its stacks under the limit
    truncation_count, flips, forgeries = GROUPS[group]
    unkeyed, keyed = payloads(), payloads(key=b"cluster secret")
    for payload in [*unkeyed.values(), *keyed.values()]:  # warm up: plans cached, every code path imported
        payload.attempt(payload.data)
        payload.attempt(payload.data[:-1])
    limit_memory()
    failures = Failures()
    for payload in [*unkeyed.values(), keyed["dpm"]]:
        failures.check(payload, "unmutated", payload.data, "equal")
        for label, data in truncations(payload, truncation_count):
            failures.check(payload, label, data, "refused", "corrupt or not a functional-sched request")
        for label, data in bit_flips(payload, flips, seed=len(payload.name)):
            failures.check(payload, label, data, "either-equal")
        for label, data in raw_forgeries(payload):
            failures.check(payload, label, data, "refused")
        for label, data, expect in random_forgeries(payload, forgeries, seed=len(payload.name)):
            failures.check(payload, label, data, expect)
    for payload_name, label, edit, expect, match in FORGERIES:
        for payload in (unkeyed[payload_name], keyed[payload_name]):
            failures.check(payload, label, payload.forged(edit), expect, match)
    for payload in keyed.values():  # a keyed receiver refuses what was not made with its key, however sound
        unchanged: Edit = lambda tensors, metadata: None  # noqa: E731
        for label, data, match in (
            ("unkeyed", unkeyed[payload.name].data, "carries no MAC"),
            ("resigned-without-mac", payload.forged(unchanged, mac_key=None), "carries no MAC"),
            ("resigned-other-key", payload.forged(unchanged, mac_key=b"another secret"), "MAC mismatch"),
            ("edited-other-key", payload.forged(_at(("request", "seed"), 1), mac_key=b"x"), "MAC mismatch"),
        ):
            failures.check(payload, f"keyed-receiver-{label}", data, "refused", match)
    recv_lengths(unkeyed["dpm"], failures)
    if failures:
        print(f"{len(failures)} failures:", *failures[:60], sep="\n")
        sys.exit(1)


def _run(group: str, timeout: int) -> None:
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_payload_fuzz; "
    code += f"test_payload_fuzz.main({group!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]


needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")


@needs_linux
def test_payload_fuzz_under_a_memory_limit() -> None:
    _run("default", timeout=120)


@needs_linux
@pytest.mark.slow
def test_payload_fuzz_grid_under_a_memory_limit() -> None:
    """Every truncation offset, thousands of bit flips and random forgeries."""
    _run("slow", timeout=1200)
