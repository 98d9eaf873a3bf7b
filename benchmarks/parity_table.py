"""Parity per class over its whole conformance table: every config's full float32 loop against diffusers, side by side.

For each class of `functional_sched.SCHEDULERS`, each config of its table (`tests/specs/`) runs the suite's parity
driver (`functional_sched.testing.parity_run`: the reference's loop and ours from the same latents, the toy model,
noise drawn as the reference draws it) at its own step count, and at 25 steps; printed: configs, steps compared,
bit-identical steps, the worst step's error relative to the trajectory's max-abs, and whether every timestep table
equalled diffusers'.

    python benchmarks/parity_table.py            # every class
    python benchmarks/parity_table.py EulerDiscrete DDIM
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import diffusers
import torch

import functional_sched as fs
from functional_sched.testing import Case, loop_parity_run, parity_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from specs import SPECS


def main(argv: list[str]) -> int:
    diffusers.utils.logging.set_verbosity_error()
    warnings.simplefilter("ignore")  # diffusers' deprecations, torchsde's clamped queries: not the figures
    wanted = set(argv) or {cls.__name__ for cls in fs.SCHEDULERS}
    print("| class | configs | steps compared | bit-identical | worst error / max-abs | tables equal |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for cls in fs.SCHEDULERS:
        if cls.__name__ not in wanted:
            continue
        spec = SPECS[cls]
        if spec.reference is None and spec.reference_loop is None:
            no_reference = "no runnable reference: order on the analytic model |  |  |"
            print(f"| {cls.__name__} | {len(spec.configs)} | {no_reference} |")
            continue
        run = loop_parity_run if spec.reference is None else parity_run
        steps = identical = 0
        worst, tables = 0.0, True
        for config in spec.configs:
            case = spec.case(config)
            for count in {case.steps, 25}:
                if count != case.steps and _refuses(case, count):
                    continue  # a step count the config cannot take (LCM's 20 original steps): both sides refuse it
                result = run(case, steps=count)
                steps += result.steps
                identical += sum(result.identical)
                worst = max(worst, result.max_error)
                tables &= result.ours_timesteps.dtype == result.ref_timesteps.dtype and bool(
                    (result.ours_timesteps == result.ref_timesteps).all()
                )
        print(
            f"| {cls.__name__} | {len(spec.configs)} | {steps} | {identical} | {worst:.1e} | "
            f"{'yes' if tables else 'NO'} |"
        )
    return 0


def _refuses(case: Case, steps: int) -> bool:
    """Whether ours refuses `steps` steps (the suite's refusal columns hold the reference to breaking down there: at
    `set_timesteps`, or later in its loop, as sglang's consistency Euler does past its PCM grid); a reference that
    refuses them at `set_timesteps` while ours takes them is an error."""
    try:
        case.scheduler().init(sample=torch.zeros(1, 4, 8, 8), **case.init_kwargs(steps))
    except ValueError:
        return True
    if case.spec.reference is None:  # a whole-loop reference takes any table ours takes
        return False
    try:
        case.reference().set_timesteps(**case.reference_kwargs(steps))
    except (ValueError, IndexError):
        raise AssertionError(f"{case.id}: the reference refuses {steps} steps, ours takes them") from None
    return False


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
