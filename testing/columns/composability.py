"""Composability: a sampling loop (`functional_sched.denoise`) is a function of its inputs under every transform and
tensor mode that research and serving code run it in: `torch.func.vmap`, `grad`, `vjp` and `jvp`, gradient
checkpointing, `inference_mode` and `no_grad`, FakeTensorMode and the meta device, `torch.export` (strict and not).
And none of them leaves anything behind: afterwards, a plain eager loop is bit for bit the one a fresh interpreter
runs (`testing.plain_loop`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo.testing
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensorMode

import functional_sched as fs
from functional_sched import batching

from .. import plain_loop
from ..selection import configs
from ..spec import Case, Spec

SLOW = pytest.mark.slow  # a parameter of a default-run test that only the slow run takes

REQUESTS = 3  # the mapped dim of the vmap tests
FINITE_DIFFERENCE = 1e-6  # the central difference's step, in float64


def loop(case: Case, sched: Any, sample: torch.Tensor, noise: torch.Tensor | None, **kwargs: Any) -> Any:
    """The config's whole loop from a fresh state, with the column's model (or `model=`)."""
    model = kwargs.pop("model", plain_loop.model)
    return fs.denoise(sched, model, sample, noise=noise, **case.init_kwargs(), **kwargs)


def calls(case: Case, sched: Any) -> int:
    """The calls of the config's whole loop, one noise draw each: its step count, or more where the scheduler repeats
    timesteps (Heun and KDPM2 take two calls per interval)."""
    return sched.steps_left(sched.init(sample=torch.zeros(plain_loop.SHAPE), **case.init_kwargs()))


def requests(case: Case, sched: Any, dtype: torch.dtype = torch.float32) -> list[dict[str, Any]]:
    """Inputs of `REQUESTS` requests of the config's schedule: their latents, noise and fresh states."""
    out = []
    for seed in range(REQUESTS):
        made = plain_loop.inputs(sched, calls(case, sched), dtype, seed=seed)
        made["state"] = sched.init(sample=made["sample"], **case.init_kwargs())
        out.append(made)
    return out


def stacked(values: list[Any]) -> Any:
    """Values of one structure stacked leaf by leaf along a new leading dim (what vmap maps over)."""
    return None if values[0] is None else pytree.tree_map(lambda *leaves: torch.stack(leaves), *values)


# ----------------------------------------------------------------------------------------- each transform, once
def vmapped_requests(case: Case) -> None:
    """Requests as vmap's mapped dim (states, latents and noise) run as one stacked state of their rows does."""
    sched = case.scheduler()
    reqs = requests(case, sched)
    steps = sched.steps_left(reqs[0]["state"])

    def one(state: Any, sample: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return fs.denoise(sched, plain_loop.model, sample, state=state, steps=steps, noise=noise)

    noise = stacked([req["noise"] for req in reqs])
    mapped = torch.func.vmap(one, in_dims=(0, 0, None if noise is None else 0))
    got = mapped(stacked([req["state"] for req in reqs]), stacked([req["sample"] for req in reqs]), noise)
    together = fs.denoise(
        sched,
        plain_loop.model,
        torch.cat([req["sample"] for req in reqs]),
        state=batching.stack([req["state"] for req in reqs]),
        noise=None if noise is None else torch.cat([req["noise"] for req in reqs], dim=1),
    )
    assert torch.equal(got.flatten(0, 1), together), "vmap over requests differs from their stacked call"


def vmapped_seeds(case: Case) -> None:
    """Seeds as vmap's mapped dim (one state, several latents and noise draws) run as each alone."""
    sched = case.scheduler()
    reqs = requests(case, sched)
    state = reqs[0]["state"]
    noise = stacked([req["noise"] for req in reqs])

    def one(sample: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return fs.denoise(sched, plain_loop.model, sample, state=state, noise=noise)

    got = torch.func.vmap(one, in_dims=(0, None if noise is None else 0))(
        stacked([req["sample"] for req in reqs]), noise
    )
    for index, req in enumerate(reqs):
        alone = fs.denoise(sched, plain_loop.model, req["sample"], state=state, noise=req["noise"])
        assert torch.equal(got[index], alone), f"seed {index} under vmap differs from its run alone"


def gradients(case: Case) -> None:
    """grad, vjp and jvp through the whole float64 loop, with respect to the initial latents and to the model's
    parameters, against central finite differences (and against each other)."""
    sched = case.scheduler()
    made = plain_loop.inputs(sched, calls(case, sched), torch.float64, seed=3)
    sample, noise = made["sample"], made["noise"]
    generator = torch.Generator().manual_seed(4)
    weights = torch.randn(sample.shape, generator=generator, dtype=torch.float64)
    direction = torch.randn(sample.shape, generator=generator, dtype=torch.float64)
    params = torch.tensor([1.0, 0.2], dtype=torch.float64)

    def run(sample: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return params[0] * plain_loop.model(x, t) + params[1] * x

        return loop(case, sched, sample, noise, model=model)

    def loss(sample: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return (run(sample, params) * weights).sum()

    def central(along: Callable[[float], torch.Tensor]) -> float:
        """The derivative at 0 by central differences, Richardson-extrapolated (error of order h^4): a stiff
        schedule (sigmas from 2e4 down) amplifies a plain central difference's h^2 error past the tolerance."""

        def difference(h: float) -> float:
            return ((along(h) - along(-h)) / (2 * h)).item()

        return (4 * difference(FINITE_DIFFERENCE / 2) - difference(FINITE_DIFFERENCE)) / 3

    grad_sample, grad_params = torch.func.grad(loss, argnums=(0, 1))(sample, params)
    _, pullback = torch.func.vjp(lambda x: run(x, params), sample)
    _, tangent = torch.func.jvp(lambda x: loss(x, params), (sample,), (direction,))
    along_sample = central(lambda h: loss(sample + h * direction, params))
    assert _close(tangent.item(), along_sample, 1e-6), f"jvp {tangent.item()} vs finite difference {along_sample}"
    assert _close((grad_sample * direction).sum().item(), tangent.item(), 1e-9), "grad and jvp disagree"
    torch.testing.assert_close(pullback(weights)[0], grad_sample, rtol=1e-12, atol=1e-12)
    for index in range(len(params)):
        unit = torch.nn.functional.one_hot(torch.tensor(index), len(params)).to(torch.float64)
        along_param = central(lambda h, unit=unit: loss(sample, params + h * unit))
        assert _close(grad_params[index].item(), along_param, 1e-6), f"parameter {index}: grad vs finite difference"


def checkpointed(case: Case) -> None:
    """A loop checkpointed every 2 steps (autograd) gives the plain loop's gradients bit for bit, and keeps fewer
    bytes for backward: the runs' inputs, not every step's."""
    sched = case.scheduler()
    made = plain_loop.inputs(sched, calls(case, sched), seed=5)
    results = []
    for every in (None, 2):
        sample = made["sample"].clone().requires_grad_()
        params = torch.tensor([1.0, 0.2], requires_grad=True)
        kept: dict[int, int] = {}  # the bytes of each storage that backward keeps alive

        def keep(tensor: torch.Tensor, kept: dict[int, int] = kept) -> torch.Tensor:
            storage = tensor.untyped_storage()
            kept[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            out = loop(
                case,
                sched,
                sample,
                made["noise"],
                model=lambda x, t, params=params: params[0] * plain_loop.model(x, t) + params[1] * x,
                checkpoint=every,
            )
        out.square().sum().backward()
        results.append((out.detach(), sample.grad, params.grad, sum(kept.values())))
    (plain, *plain_grads, plain_bytes), (ours, *our_grads, our_bytes) = results
    assert torch.equal(plain, ours)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, our_grads, strict=True)), "checkpointing changed grads"
    assert our_bytes < plain_bytes, f"checkpointed loop saved {our_bytes} bytes, the plain one {plain_bytes}"


def grad_modes(case: Case) -> None:
    """Loops under `inference_mode` and `no_grad` (how serving engines run), a state made under one stepped
    outside it: bit for bit the plain loop."""
    sched = case.scheduler()
    made = plain_loop.inputs(sched, calls(case, sched), seed=6)
    plain = loop(case, sched, made["sample"], made["noise"])
    for mode in (torch.inference_mode, torch.no_grad):
        with mode():
            inside = loop(case, sched, made["sample"], made["noise"])
            state = sched.init(sample=made["sample"], **case.init_kwargs())
        assert torch.equal(inside, plain), f"a loop under {mode.__name__} differs"
        outside = fs.denoise(sched, plain_loop.model, made["sample"], state=state, noise=made["noise"])
        assert torch.equal(outside, plain), f"a state made under {mode.__name__} stepped outside it differs"


def shapes_only(case: Case) -> None:
    """Under FakeTensorMode and on the meta device (what export and memory planners run) a whole loop with its
    trajectory, x0 estimates and final state has the eager loop's shapes and dtypes, in float32 and bfloat16."""
    sched = case.scheduler()
    for dtype in (torch.float32, torch.bfloat16):
        made = plain_loop.inputs(sched, calls(case, sched), dtype, seed=7)
        kwargs = {"trajectory": True, "denoised": True, "return_state": True}
        eager = loop(case, sched, made["sample"], made["noise"], **kwargs)
        sample, noise = made["sample"], made["noise"]
        with FakeTensorMode() as mode:
            fake = loop(case, sched, mode.from_tensor(sample), _like(noise, mode.from_tensor), **kwargs)
        meta = loop(case, sched, sample.to("meta"), _like(noise, lambda tensor: tensor.to("meta")), **kwargs)
        for name, got in (("FakeTensorMode", fake), ("meta", meta)):
            assert pytree.tree_structure(got) == pytree.tree_structure(eager), name
            for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(eager), strict=True):
                assert (a.shape, a.dtype) == (b.shape, b.dtype), f"{name}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"


def exported(case: Case, strict: bool) -> None:
    """`torch.export` of a whole loop whose state is made outside: the exported program equals the eager loop, on
    the inputs it was exported with and on another request's."""
    sched = case.scheduler()
    reqs = requests(case, sched)
    steps = sched.steps_left(reqs[0]["state"])

    class Loop(torch.nn.Module):
        def forward(self, state: Any, sample: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
            return fs.denoise(sched, plain_loop.model, sample, state=state, steps=steps, noise=noise)

    def arguments(req: dict[str, Any]) -> tuple[Any, ...]:
        return req["state"], req["sample"], req["noise"]

    program = torch.export.export(Loop(), arguments(reqs[0]), strict=strict).module()
    for req in reqs[:2]:
        assert torch.equal(program(*arguments(req)), Loop()(*arguments(req))), f"export(strict={strict}) differs"


def compiled(case: Case) -> None:
    """A whole loop compiled (fullgraph) over a state made outside: one graph for two requests, equal to eager."""
    sched = case.scheduler()
    reqs = requests(case, sched)
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    run = torch.compile(fs.denoise, fullgraph=True, backend=counter)
    for req in reqs[:2]:
        got = run(sched, plain_loop.model, req["sample"], state=req["state"], noise=req["noise"])
        assert torch.equal(got, fs.denoise(sched, plain_loop.model, **req))
    assert counter.frame_count == 1, f"{counter.frame_count} graphs for one loop"


# ------------------------------------------------------------------------------------------------- the column
class Composability:
    """Every transform and tensor mode on a whole loop, and nothing left behind."""

    @configs("representative")
    def test_vmap_over_requests_equals_the_stacked_call(self, case: Case) -> None:
        vmapped_requests(case)

    @configs("representative")
    def test_vmap_over_seeds_equals_each_alone(self, case: Case) -> None:
        vmapped_seeds(case)

    @configs("representative")
    def test_grad_vjp_jvp_match_finite_differences(self, case: Case) -> None:
        gradients(case)

    @configs("representative", where=lambda case: case.spec.depends_on_model)
    def test_checkpointed_loop_keeps_gradients_and_saves_less(self, case: Case) -> None:
        checkpointed(case)

    @configs("representative")
    def test_inference_mode_and_no_grad_equal_the_plain_loop(self, case: Case) -> None:
        grad_modes(case)

    @configs("representative")
    def test_fake_tensor_and_meta_loops_have_eager_shapes(self, case: Case) -> None:
        shapes_only(case)

    @configs("representative", per_base=True)
    # Non-strict export of each class's first config runs in the fresh-process column; here with slow.
    @pytest.mark.parametrize("strict", [pytest.param(False, marks=SLOW), True], ids=["non-strict", "strict"])
    def test_export_of_a_loop_equals_eager(self, case: Case, strict: bool) -> None:
        torch._dynamo.reset()
        exported(case, strict)

    @configs("representative", per_base=True)
    def test_compiled_loop_is_one_graph(self, case: Case) -> None:
        torch._dynamo.reset()
        compiled(case)
        torch._dynamo.reset()

    @configs(per_base=True)
    def test_after_every_transform_a_plain_loop_equals_a_fresh_process(self, spec: Spec) -> None:
        """From cold caches, every transform and mode above runs on the class's first config and its first
        stochastic one; then a plain eager loop of each is bit for bit what a fresh interpreter computes."""
        cases = _fresh_process_cases(spec)
        runs = [(case.scheduler(), case.init_kwargs(), case.steps) for case in cases]
        fresh = _fresh_runs(tuple(self.specs))[spec.name]
        fs.clear_caches()
        torch._dynamo.reset()
        for case in cases:
            for transform in (vmapped_requests, vmapped_seeds, gradients, checkpointed, grad_modes, shapes_only):
                if transform is not checkpointed or spec.depends_on_model:
                    transform(case)
            exported(case, strict=False)
            compiled(case)
        torch._dynamo.reset()
        for (sched, init_kwargs, steps), expected in zip(runs, fresh, strict=True):
            assert torch.equal(plain_loop.run(sched, init_kwargs, steps), expected)


def _fresh_process_cases(spec: Spec) -> list[Case]:
    """The cases the fresh-process column runs: the class's first config and its first stochastic one."""
    cases = [spec.case(config) for config in spec.configs]
    return [cases[0], *[case for case in cases if case.stochastic][:1]]


#: Each suite's fresh-process results, by its specs' names (a test session runs each suite's interpreter once).
_FRESH: dict[tuple[str, ...], dict[str, list[torch.Tensor]]] = {}


def _fresh_runs(specs: tuple[Spec, ...]) -> dict[str, list[torch.Tensor]]:
    """Each spec's fresh-process loops, all in one new interpreter (one start-up, not one per class): nothing ran
    there before them but the plain loops of the specs listed earlier, each on its own scheduler."""
    key = tuple(spec.name for spec in specs)
    if key not in _FRESH:
        runs = {
            spec.name: [(case.scheduler(), case.init_kwargs(), case.steps) for case in _fresh_process_cases(spec)]
            for spec in specs
        }
        flat = iter(plain_loop.run_in_fresh_process([run for spec_runs in runs.values() for run in spec_runs]))
        _FRESH[key] = {name: [next(flat) for _ in spec_runs] for name, spec_runs in runs.items()}
    return _FRESH[key]


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def _like(value: torch.Tensor | None, convert: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
    return None if value is None else convert(value)
