"""What the stepped stages share: running requests to their end (`Stepped`), stepping them in batches of requests
that can share one (`step_grouped`), the seeds of a request's noise streams (`stream_seed`), which
`denoise.step_noise` draws from, and the converter of their float-list config (`float_tuple`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .request import Req


class Stepped:
    """`step`, `forward` and `forward_many` of a stage that defines `done(req)` and `step_many(reqs)`."""

    __slots__ = ()

    def done(self, req: Req) -> bool:
        raise NotImplementedError

    def step_many(self, reqs: Sequence[Req]) -> list[Req]:
        raise NotImplementedError

    def step(self, req: Req) -> Req:
        """One step (one model call) of one request."""
        return self.step_many([req])[0]

    def forward(self, req: Req) -> Req:
        """The request stepped to its end."""
        while not self.done(req):
            req = self.step(req)
        return req

    def forward_many(self, reqs: Sequence[Req]) -> list[Req]:
        """Every request to its end, the unfinished ones stepped together each round (`step_many`)."""
        reqs = list(reqs)
        while True:
            active = [index for index, req in enumerate(reqs) if not self.done(req)]
            if not active:
                return reqs
            for index, req in zip(active, self.step_many([reqs[index] for index in active]), strict=True):
                reqs[index] = req


def step_grouped(
    reqs: Sequence[Req], key: Callable[[Req], Hashable], step_batch: Callable[[Any, list[Req]], list[Req]]
) -> list[Req]:
    """Each request stepped once and kept in its place: the requests with equal `key(req)` in one
    `step_batch(key, requests)` call."""
    groups: dict[Hashable, list[int]] = {}
    for index, req in enumerate(reqs):
        groups.setdefault(key(req), []).append(index)
    stepped = list(reqs)
    for group, members in groups.items():
        for index, req in zip(members, step_batch(group, [reqs[index] for index in members]), strict=True):
            stepped[index] = req
    return stepped


def float_tuple(values: Sequence[float]) -> tuple[float, ...]:
    """`values` as a tuple of floats, the form a stage's timestep or sigma list is kept in (hashable, exact)."""
    return tuple(float(value) for value in values)


def stream_seed(seed: int, stream: int) -> int:
    """The seed of a request's noise stream `stream`: the request's `seed` for stream 0 (its main latents), else a
    63-bit hash of (seed, stream), so the streams of a request, and of different requests, draw from different
    generators (but for a hash collision)."""
    if stream == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
