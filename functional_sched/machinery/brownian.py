"""Brownian noise for the SDE samplers (DPM-Solver++ SDE): each step's increment of a Brownian motion, drawn from a
tree seeded per request, as diffusers' `BrownianTreeNoiseSampler` (k-diffusion's) draws it.

The step stays pure and takes this noise as its `noise=` argument; the state never holds a tree. A Brownian tree
(torchsde's `BrownianInterval` with `halfway_tree=True`) splits its interval at midpoints only, so the increment over
an interval is a function of (seed, the tree's range, the interval), whatever was queried before: a request's noise
at step i is the same whether it was queried at every step, or first at step i after a handoff. torchsde is an
optional extra (`pip install 'functional-sched[sde]'`), imported only when noise is drawn.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from . import checks


class Query(NamedTuple):
    """One row's query of its tree at this step: the tree's range (`low`, `high`: the schedule's smallest positive and
    largest sigma, as floats) and the interval (`start`, `end`: 0-d tensors, the sigmas diffusers passes)."""

    low: float
    high: float
    start: torch.Tensor
    end: torch.Tensor


#: The tree diffusers builds (`BatchedBrownianTree`): resolved to 1e-6 in time, 24 words of pooled entropy.
TOLERANCE, POOL_SIZE = 1e-6, 24


def brownian_noise(
    scheduler: Any, state: Any, like: torch.Tensor, seed: int | Sequence[int] | None = None
) -> torch.Tensor:
    """The `noise=` of the state's current step, shaped like `like` (its dtype and device, as diffusers' tree takes
    the sample's): the Brownian increment over the step's sigma interval divided by the square root of its length,
    from a tree over the schedule's sigma range.

    `seed`: an int for one tree over all rows (diffusers' tree for a batch, seeded by its `noise_sampler_seed`: a
    row's noise then depends on its place in the batch), or one int per row for a tree per row (what a request of
    one row gets from diffusers with that seed, whatever else shares the batch: rows may then be at different steps
    or schedules). None takes the scheduler's `noise_sampler_seed`. Rows whose step draws no noise (the last, into
    sigma 0) get zeros. Host code (it reads the step and drives torchsde): call it outside compiled code.
    """
    owner = "brownian_noise"
    queries_of = getattr(scheduler, "_brownian_queries", None)
    if queries_of is None:
        raise TypeError(f"{owner}: {checks.shown(scheduler)} draws no Brownian noise (no _brownian_queries).")
    if checks.tensor(owner, "like", like).dim() == 0:
        raise TypeError(f"{owner}: like must be a floating-point tensor with a leading rows dim.")
    queries = queries_of(state)
    if like.shape[0] != len(queries):
        raise ValueError(f"{owner}: like has {like.shape[0]} rows, but the state has {len(queries)}.")
    if seed is None:
        seed = getattr(scheduler, "noise_sampler_seed", None)
        if seed is None:
            raise ValueError(
                f"{owner}: give seed= (an int, or one per row), or set noise_sampler_seed on {scheduler.name}; the "
                "core draws nothing from a global generator."
            )
    if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        seeds = [_seed(owner, f"seed[{row}]", value) for row, value in enumerate(seed)]
        if len(seeds) != len(queries):
            raise ValueError(f"{owner}: {len(seeds)} seeds for {len(queries)} rows; give one per row, or one int.")
        rows = [_normalized(query, value, like.shape[1:], like) for query, value in zip(queries, seeds, strict=True)]
        return torch.stack(rows)
    seed = _seed(owner, "seed", seed)
    if any(not _same(query, queries[0]) for query in queries[1:]):
        raise ValueError(
            f"{owner}: the rows are at different steps or schedules; one tree serves rows stepped together. Give one "
            "seed per row (a tree each), or draw for each request apart."
        )
    return _normalized(queries[0], seed, like.shape, like)


def _seed(owner: str, name: str, value: Any) -> int:
    return checks.integer(owner, name, value, minimum=0)


def _same(query: Query | None, other: Query | None) -> bool:
    if query is None or other is None:
        return query is other
    return (query.low, query.high) == (other.low, other.high) and bool(
        torch.equal(query.start, other.start) and torch.equal(query.end, other.end)
    )


def _normalized(query: Query | None, seed: int, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """diffusers' `BrownianTreeNoiseSampler(x, low, high, seed)(start, end)` for an `x` of `shape`: the tree's
    increment over the interval (signed by the order of its ends) over the square root of its length."""
    if query is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    key = (query.low, query.high, tuple(shape), like.dtype, like.device, seed)
    with TREES.lock:
        tree = TREES.trees.pop(key, None)
        if tree is None:
            tree = _torchsde().BrownianInterval(
                t0=query.low,
                t1=query.high,
                size=tuple(shape),
                dtype=like.dtype,
                device=like.device,
                entropy=seed,
                tol=TOLERANCE,
                pool_size=POOL_SIZE,
                halfway_tree=True,
            )
        start, end = query.start, query.end
        tree_sign = 1.0 if query.low < query.high else -1.0
        low, high, sign = (start, end, 1.0) if start < end else (end, start, -1.0)
        # torchsde clamps a query to its (rounded) range, with a warning each time a float32 sigma lies a rounding
        # outside it (diffusers' run warns so every step): clamped here alike, without the warning.
        inside = lambda value: min(max(float(value), tree._start), tree._end)  # noqa: E731
        increment = tree(inside(low), inside(high))
        TREES.keep(key, tree)
    return increment * (tree_sign * sign) / (end - start).abs().sqrt()


class _Trees:
    """The last few trees queried, by (range, shape, dtype, device, seed): a tree's answer to a query does not depend
    on what it was asked before (it splits at midpoints only), so a request's next step reuses its tree instead of
    rebuilding it (diffusers keeps one per run). Process-wide, holding nothing a caller can reach (the increments
    returned are fresh tensors), bounded in count and bytes, behind a lock (a query updates a tree's own cache), and
    emptied by `functional_sched.clear_caches()`."""

    #: Trees kept, and the most bytes of one tree's shape kept (larger ones are rebuilt each query).
    MAX_TREES, MAX_SHAPE_BYTES = 8, 16 << 20

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trees: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()

    def keep(self, key: tuple[Any, ...], tree: Any) -> None:
        shape, dtype = key[2], key[3]
        if math.prod(shape) * torch.empty((), dtype=dtype).element_size() > self.MAX_SHAPE_BYTES:
            return
        self.trees[key] = tree
        while len(self.trees) > self.MAX_TREES:
            self.trees.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.trees.clear()


TREES = _Trees()


def _torchsde() -> Any:
    try:
        import torchsde
    except ImportError as error:
        raise ImportError(
            "functional_sched.brownian_noise draws from torchsde's Brownian trees, which is not installed: "
            "pip install 'functional-sched[sde]' (or pip install torchsde)."
        ) from error
    return torchsde
