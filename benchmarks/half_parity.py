"""Half-precision parity with diffusers, step by step: bf16 and fp16 latents and model outputs, eager, 25 steps.

For flow-match Euler, DPM-Solver++ (2M, 3M, v-prediction Karras, flow) and UniPC (bh2, bh1, flow): how many steps
equal diffusers' bit for bit, and the worst step's error relative to the sample's norm.

    python benchmarks/half_parity.py --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import diffusers
import torch

from functional_sched.adapters import from_diffusers

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
FLOW = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}
CASES = {
    "flow Euler shift 3": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", SD),
    "DPM++ 3M": ("DPMSolverMultistepScheduler", {**SD, "solver_order": 3}),
    "DPM++ 2M v Karras": (
        "DPMSolverMultistepScheduler",
        {**SD, "prediction_type": "v_prediction", "use_karras_sigmas": True},
    ),
    "DPM++ flow": ("DPMSolverMultistepScheduler", FLOW),
    "UniPC bh2": ("UniPCMultistepScheduler", SD),
    "UniPC bh1": ("UniPCMultistepScheduler", {**SD, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    "UniPC flow": ("UniPCMultistepScheduler", FLOW),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args(argv)
    diffusers.utils.logging.set_verbosity_error()
    print("| dtype | config | identical steps | worst step error / norm |\n| --- | --- | ---: | ---: |")
    for dtype in (torch.bfloat16, torch.float16):
        for label, (name, config) in CASES.items():
            reference = getattr(diffusers, name)(**config)
            reference.set_timesteps(args.steps, device=args.device)
            sched = from_diffusers(reference)
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(1, 4, 64, 64, generator=generator).to(args.device, dtype)
            v = (0.5 * torch.randn(1, 4, 64, 64, generator=generator)).to(args.device, dtype)
            state, theirs, ours, same, worst = sched.init(args.steps, sample=x), x, x, 0, 0.0
            for t in reference.timesteps:
                theirs = reference.step(v, t, theirs, return_dict=False)[0]
                ours, state = sched.step(state, v, ours)
                same += int(torch.equal(theirs, ours))
                worst = max(worst, float((theirs.double() - ours.double()).norm() / theirs.double().norm()))
            print(f"| {str(dtype).removeprefix('torch.')} | {label} | {same}/{args.steps} | {worst:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
