"""Eager time of a stochastic step with its log-probability (RL fine-tuning): `functional_sched.step_log_prob`
against Flow-GRPO's `sde_step_with_logprob` (`FlowMatchSDE`) and DDPO's `ddim_step_with_logprob` (`DDIM`, eta 1).

Both passes of an iteration, each called as the reference's own scripts call it: sampling (no grad; the step draws
its noise from a generator, as both references do inside their function, so ours includes `fs.randn_tensor`; one
timestep for the batch, as their pipelines pass it) and the training pass's recompute for the recorded result (the
model output requiring grad, forward only; a timestep per row, as their training scripts pass them; `reduce="mean"`,
their convention). "ours, read off" is the same call through the generic path, the transition read off the step by
forward mode (`transition_by_jvp`), which every class without a closed form takes. Figures are medians over
interleaved rounds (each round runs every candidate once, so load from other processes falls on all alike), in
microseconds of the thread's CPU time on one thread (the default; wall time with `--threads N`), glibc's malloc
thresholds fixed as in eager_step.py; the last column is ours over the reference's.

The references are no packages: give checkouts of their repositories to time their functions as written.

    python benchmarks/logprob_step.py --flow-grpo ~/src/flow_grpo --ddpo ~/src/ddpo-pytorch
    python benchmarks/logprob_step.py                 # Flow-GRPO's from adapters/flow_grpo.py, no DDPO row

Without `--flow-grpo`, Flow-GRPO's function is the line-for-line transcription in adapters/flow_grpo.py; without
`--ddpo`, DDPO's rows are left out. DDPO's module imports `randn_tensor` from `diffusers.utils`, where diffusers
0.42.1 no longer has it: it is put there (diffusers' own `diffusers.utils.torch_utils.randn_tensor`) before loading.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import diffusers
import diffusers.utils.torch_utils
import torch

import functional_sched as fs
from functional_sched.adapters import flow_grpo
from functional_sched.machinery.logprob import log_density, transition_by_jvp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eager_step import steady_allocator

SHAPES = ((1, 16, 64, 64), (2, 16, 128, 128))
STEPS, AT = 10, 3  # a 10-step schedule, timed at its 4th step
SD15 = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def load(path: Path, name: str) -> ModuleType:
    """A module of a reference's checkout, by file."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: give the root of a checkout of the reference's repository")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flow_grpo_step(checkout: Path | None) -> tuple[Callable[..., Any], str]:
    if checkout is None:
        return flow_grpo.sde_step_with_logprob, "adapters/flow_grpo.py's transcription"
    module = load(checkout / "flow_grpo" / "diffusers_patch" / "sd3_sde_with_logprob.py", "flow_grpo_sde")
    return module.sde_step_with_logprob, f"{checkout}, as written"


def ddpo_step(checkout: Path | None) -> Callable[..., Any] | None:
    if checkout is None:
        return None
    if not hasattr(diffusers.utils, "randn_tensor"):  # DDPO's import, from before diffusers moved it
        diffusers.utils.randn_tensor = diffusers.utils.torch_utils.randn_tensor
    path = checkout / "ddpo_pytorch" / "diffusers_patch" / "ddim_with_logprob.py"
    return load(path, "ddpo_ddim").ddim_step_with_logprob


def read_off(sched: Any, state: Any, output: torch.Tensor, sample: torch.Tensor, **given: torch.Tensor) -> Any:
    """`step_log_prob` through the generic path: the step for the result and the state, the transition by jvp."""
    noise = given.get("noise", torch.zeros_like(sample))
    produced, new_state = sched.step(state, output, sample, noise=noise)[:2]
    mean, std = transition_by_jvp(sched, state, output, sample)
    return produced, new_state, log_density(given.get("next_sample", produced), mean, std, "mean")


def candidates(shape: tuple[int, ...], grpo: Callable[..., Any], ddpo: Callable[..., Any] | None) -> list[Any]:
    """(reference, pass, {side: call}) for each row of the table at `shape`."""
    data = torch.Generator().manual_seed(0)
    sample, output = torch.randn(shape, generator=data), torch.randn(shape, generator=data)
    trained = output.clone().requires_grad_()  # the training pass's model output
    draws = torch.Generator().manual_seed(1)

    def passes(reference: str, sched: Any, theirs: Callable[..., Any], t: torch.Tensor, **options: Any) -> list[Any]:
        state = sched.init(STEPS, sample=sample, begin_index=AT)
        recorded = sched.step(state, output, sample, noise=torch.randn(shape, generator=data))[0]
        sampling = {
            "reference": lambda: theirs(output, t, sample, generator=draws, **options),
            "ours": lambda: fs.step_log_prob(
                sched, state, output, sample, noise=fs.randn_tensor(shape, generator=draws), reduce="mean"
            ),
            "read off": lambda: read_off(sched, state, output, sample, noise=fs.randn_tensor(shape, generator=draws)),
        }
        recompute = {
            "reference": lambda: theirs(trained, t.expand(shape[0]), sample, prev_sample=recorded, **options),
            "ours": lambda: fs.step_log_prob(sched, state, trained, sample, next_sample=recorded, reduce="mean"),
            "read off": lambda: read_off(sched, state, trained, sample, next_sample=recorded),
        }
        return [(reference, "sampling", sampling), (reference, "recompute", recompute)]

    flow = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow.set_timesteps(STEPS)
    # Flow-GRPO's pipeline passes `t.unsqueeze(0)` for the batch, its training script a timestep per row.
    table = passes(
        "Flow-GRPO", fs.FlowMatchSDE(shift=3.0), partial(grpo, flow), flow.timesteps[AT].unsqueeze(0), noise_level=0.7
    )
    if ddpo is not None:
        ddim = diffusers.DDIMScheduler(**SD15)
        ddim.set_timesteps(STEPS)
        # DDPO's pipeline passes the 0-d timestep, its training script a timestep per row.
        table += passes("DDPO", fs.DDIM(eta=1.0, **SD15), partial(ddpo, ddim), ddim.timesteps[AT], eta=1.0)
    return table


def medians(
    calls: dict[str, Callable[[], Any]], rounds: int, sampling: bool, clock: Callable[[], float]
) -> dict[str, float]:
    """Median microseconds of each call over `rounds` interleaved rounds (after a few warm-up calls)."""
    times: dict[str, list[float]] = {side: [] for side in calls}
    with torch.no_grad() if sampling else torch.enable_grad():
        for call in calls.values():
            for _ in range(5):
                call()
        for _ in range(rounds):
            for side, call in calls.items():
                start = clock()
                call()
                times[side].append(clock() - start)
    return {side: statistics.median(values) * 1e6 for side, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow-grpo", type=Path, metavar="DIR", help="a checkout of github.com/yifan123/flow_grpo")
    parser.add_argument("--ddpo", type=Path, metavar="DIR", help="a checkout of github.com/kvablack/ddpo-pytorch")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steady = steady_allocator()
    # One thread does all the work in this one: its CPU time leaves out the time other processes hold the core.
    clock, clock_name = (time.thread_time, "thread CPU time") if args.threads == 1 else (time.perf_counter, "wall")
    diffusers.utils.logging.set_verbosity_error()
    grpo, grpo_source = flow_grpo_step(args.flow_grpo)
    ddpo = ddpo_step(args.ddpo)
    print(
        f"- CPU, {torch.get_num_threads()} thread(s); torch {torch.__version__}, diffusers {diffusers.__version__}; "
        f"host allocator: {'thresholds fixed (steady_allocator)' if steady else 'as found'}; {args.rounds} rounds, "
        f"{clock_name}"
    )
    print(f"- Flow-GRPO: {grpo_source}; DDPO: {f'{args.ddpo}, as written' if ddpo else 'not given (--ddpo DIR)'}")
    print()
    print("| shape | reference | pass | reference's function, us | ours, us | ours, read off, us | ours / reference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape in SHAPES:
        for reference, phase, calls in candidates(shape, grpo, ddpo):
            time_of = medians(calls, args.rounds, phase == "sampling", clock)
            ratio = time_of["ours"] / time_of["reference"]
            print(
                f"| {'x'.join(map(str, shape))} | {reference} | {phase} | {time_of['reference']:.0f} | "
                f"{time_of['ours']:.0f} | {time_of['read off']:.0f} | {ratio:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
