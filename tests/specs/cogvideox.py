"""CogVideoX's schedulers' conformance tables: `CogVideoXDDIM` and `CogVideoXDPM` (the CogVideoX 2B/5B and
CogView3-Plus configs first: v-prediction, zero terminal SNR, 'trailing', SNR shift 3, 1 or 4; then diffusers'
defaults and the other spacings, schedules and predictions).

diffusers' `CogVideoXDPMScheduler.step` takes the previous x0 and the previous timestep from its caller; the reference
here is that class stepped as `pipelines/cogvideo/pipeline_cogvideox.py` steps it (`PipelineStepped`), behind the
`step(model_output, t, sample, generator=...)` the suite's drivers call. It also keeps its generator's state before each
step, from which `CogVideoXDPM.noise` draws what diffusers drew (once, or twice at a second-order step)."""

from __future__ import annotations

from typing import Any

import diffusers
import torch

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
ZERO_SNR_V = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
STEPS = (20, 40, 80, 160)


class CogVideoXDPMScheduler(diffusers.CogVideoXDPMScheduler):
    """diffusers' class stepped as the CogVideoX pipeline steps it: `step(model_output, old_pred_original_sample, t,
    timestep_back, sample, ...)` with the x0 of its last step and that step's timestep (None, None at a run's first,
    after `set_timesteps`). Named as diffusers' class, so `from_diffusers` maps it."""

    _threaded: tuple[Any, Any] = (None, None)
    generator_state: torch.Tensor | None = None  # the generator's state before the last step drew from it

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        self._threaded = (None, None)

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        self.generator_state = None if generator is None else generator.get_state()
        x0, back = self._threaded
        out = super().step(model_output, x0, timestep, back, sample, generator=generator, return_dict=return_dict)
        self._threaded = (out[1] if isinstance(out, tuple) else out.pred_original_sample, timestep)
        return out


def replayed_noise(case: Any, reference: Any, scheduler: Any, state: Any, like: torch.Tensor) -> torch.Tensor:
    """Our step's noise: drawn by `CogVideoXDPM.noise` from the generator state the reference's step began with."""
    generator = torch.Generator()
    generator.set_state(reference.generator_state)
    return scheduler.noise(state, like, generator)


def _configs(scheduler: type) -> tuple[Config, ...]:
    return (
        *pipelines(scheduler),
        Config("diffusers-default", {}),
        Config(
            "zero-snr-v-linspace-no-shift",
            {**SCALED_LINEAR, **ZERO_SNR_V, "snr_shift_scale": 1.0, "timestep_spacing": "linspace"},
            Schedule(steps=7),
        ),
        Config("leading-offset-alpha-first", {"steps_offset": 1, "set_alpha_to_one": False}),
        Config("sample-prediction-cosine", {"prediction_type": "sample", "beta_schedule": "squaredcos_cap_v2"}),
        Config(
            "v-linear-shift-2", {"prediction_type": "v_prediction", "beta_schedule": "linear", "snr_shift_scale": 2.0}
        ),
    )


REFUSALS = (
    # alpha_bar is exactly 0 at the last training timestep: x0 = (x - eps) / 0 (diffusers never clips here).
    Refusal(
        "zero-snr-epsilon",
        {**SCALED_LINEAR, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
        "has alpha_bar = 0",
        Schedule(steps=7),
        at="init",
    ),
    Refusal(
        "leading-offset-past-the-table",
        {"steps_offset": 200},
        "start at timestep 1075, past the training schedule's last",
        at="init",
    ),
)

COGVIDEOX_DDIM = Spec(
    fs.CogVideoXDDIM,
    configs=_configs(fs.CogVideoXDDIM),
    refusals=REFUSALS,
    orders=(
        # The DDIM step is exact for x0 fixed over a step: first order in the step size (Song et al., 2021, sec. 4.3).
        Order("ddim-v", {"prediction_type": "v_prediction", "snr_shift_scale": 1.0}, 1, STEPS),
        Order("ddim-shift-3", {"snr_shift_scale": 3.0}, 1, STEPS),
    ),
)

COGVIDEOX_DPM = Spec(
    fs.CogVideoXDPM,
    configs=_configs(fs.CogVideoXDPM),
    reference=lambda options: CogVideoXDPMScheduler(**options),
    refusals=REFUSALS,
    reference_noise=replayed_noise,
    # Its `step` takes what the suite's drop-in drivers do not pass (the previous x0, the back timestep):
    # tests/test_cogvideox.py drives the drop-in as the CogVideoX pipeline does.
    drop_in_columns=False,
)
