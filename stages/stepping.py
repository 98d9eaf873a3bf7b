"""What the stages share: running requests to their end (`Stepped`), stepping them in batches of requests that can
share one (`step_grouped`), the checks of what they are given (`request`, `requests`) and of their config (the
attrs validators and converters below), and the seeds of a request's noise streams (`stream_seed`), which
`denoise.step_noise` draws from."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import attrs

from functional_sched.machinery import checks
from functional_sched.machinery.scheduler import Scheduler

from .request import Req, float_list, scheduler_error


def request(label: str, req: Any) -> Req:
    """`req` if it is a `Req`, else a TypeError that `label` (the stage and call, e.g. "Denoise.step") begins."""
    if not isinstance(req, Req):
        raise TypeError(f"{label}: expected a request (functional_sched.stages.Req), got {checks.shown(req)}.")
    return req


def requests(owner: str, reqs: Any) -> tuple[list[Req], list[str]]:
    """`reqs` (any iterable of `Req`) as a list, and each request's label for errors: "{owner}: request {index}"."""
    if isinstance(reqs, Req) or not isinstance(reqs, Iterable) or isinstance(reqs, (str, bytes)):
        raise TypeError(f"{owner}: expected a list of requests, got {checks.shown(reqs)}; for one request, use step.")
    reqs = list(reqs)
    labels = [f"{owner}: request {index}" for index in range(len(reqs))]
    for req, label in zip(reqs, labels, strict=True):
        request(label, req)
    return reqs, labels


def labelled(label: str, call: Callable[[], Any]) -> Any:
    """`call()`, with `label` (the stage and the request) before the message of a ValueError or TypeError it raises
    (a scheduler's refusal of the request's schedule)."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        kind = ValueError if isinstance(error, ValueError) else TypeError
        raise kind(f"{label}: {error}") from error


class Stepped:
    """`step`, `step_many`, `forward` and `forward_many` of a stage that defines `done(req)`, `check(label, req)`
    and `_step(reqs, labels)`.

    `check` raises (ValueError or TypeError, `label` first) for a request the stage cannot step, before any model
    runs; `_step` steps each request once, checking each first, and names a request by its label in any error (the
    request's index in the caller's list, however the stage groups them).
    """

    __slots__ = ()

    def done(self, req: Req) -> bool:
        raise NotImplementedError

    def check(self, label: str, req: Req) -> None:
        raise NotImplementedError

    def _step(self, reqs: list[Req], labels: list[str]) -> list[Req]:
        raise NotImplementedError

    def step(self, req: Req) -> Req:
        """One step (one model call) of one request."""
        label = f"{type(self).__name__}.step"
        return self._step([request(label, req)], [label])[0]

    def step_many(self, reqs: Sequence[Req]) -> list[Req]:
        """One step of each request, in order (see the stage's `_step`)."""
        reqs, labels = requests(f"{type(self).__name__}.step_many", reqs)
        return self._step(reqs, labels) if reqs else []

    def forward(self, req: Req) -> Req:
        """The request stepped to its end."""
        label = f"{type(self).__name__}.forward"
        self.check(label, request(label, req))
        while not self.done(req):
            req = self._step([req], [label])[0]
        return req

    def forward_many(self, reqs: Sequence[Req]) -> list[Req]:
        """Every request to its end, the unfinished ones stepped together each round."""
        reqs, labels = requests(f"{type(self).__name__}.forward_many", reqs)
        for req, label in zip(reqs, labels, strict=True):
            self.check(label, req)
        while True:
            active = [index for index, req in enumerate(reqs) if not self.done(req)]
            if not active:
                return reqs
            stepped = self._step([reqs[index] for index in active], [labels[index] for index in active])
            for index, req in zip(active, stepped, strict=True):
                reqs[index] = req


def step_grouped(
    reqs: Sequence[Req],
    labels: Sequence[str],
    key: Callable[[Req], Hashable],
    step_batch: Callable[[Any, list[Req], list[str]], list[Req]],
) -> list[Req]:
    """Each request stepped once and kept in its place: the requests with equal `key(req)` in one
    `step_batch(key, requests, their labels)` call."""
    groups: dict[Hashable, list[int]] = {}
    for index, req in enumerate(reqs):
        groups.setdefault(key(req), []).append(index)
    stepped = list(reqs)
    for group, members in groups.items():
        batch = step_batch(group, [reqs[index] for index in members], [labels[index] for index in members])
        for index, req in zip(members, batch, strict=True):
            stepped[index] = req
    return stepped


# ------------------------------------------------------------------------------------------ stage config checks
def float_tuple(owner: str, name: str) -> Callable[[Any], tuple[float, ...]]:
    """The converter of a stage's timestep or sigma list: a tuple of floats (hashable, exact); errors name it."""
    return lambda values: tuple(float_list(owner, name, values))


def integer_option(owner: str, name: str, minimum: int, optional: bool = False) -> Callable[[Any], int | None]:
    """The converter of an integer option (a Python or numpy integer, a 0-d integer tensor) >= `minimum`, as an int."""
    return lambda value: None if optional and value is None else checks.integer(owner, name, value, minimum=minimum)


def is_callable(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: a model, decoder or function."""
    if not callable(value):
        raise TypeError(f"{type(instance).__name__}: {attribute.name} must be callable, got {checks.shown(value)}.")


def is_optional_callable(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        is_callable(instance, attribute, value)


def is_flag(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(
            f"{type(instance).__name__}: {attribute.name} must be True or False, got {checks.shown(value)}."
        )


def is_scheduler(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: a functional_sched scheduler."""
    if not isinstance(value, Scheduler):
        raise scheduler_error(type(instance).__name__, attribute.name, value)


def is_optional_scheduler(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        is_scheduler(instance, attribute, value)


def stream_seed(seed: int, stream: int) -> int:
    """The seed of a request's noise stream `stream`: the request's `seed` for stream 0 (its main latents), else a
    63-bit hash of (seed, stream), so the streams of a request, and of different requests, draw from different
    generators (but for a hash collision)."""
    if stream == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
