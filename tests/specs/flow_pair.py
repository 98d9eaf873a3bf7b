"""`FlowMatchPair`'s conformance table, against sglang 0.5.23's `FlowMatchPairScheduler` (MOVA's paired sampler).

MOVA first (constructor shift 5, 50 steps, `dual_sigma_shift` with visual and audio shift 5; each modality a column),
then the options' corners. The reference is sglang's object behind diffusers' scheduler API, adapted, never
recomputed: its constructor takes the post-processing MOVA's stage sets (`set_pair_postprocess_by_name`) and the
column to step; `set_timesteps(n)` is MOVA's `set_timesteps` then `set_pair_postprocess_by_name`, and exposes the
column as `timesteps` and sglang's `timestep_to_sigma` of each (plus the final sigma) as `sigmas`; `step(model_output,
t, sample)` is `step_from_to(model_output, t, next t or None, sample)`; `add_noise` noises each row at
`timestep_to_sigma` of its timestep with sglang's `add_noise` formula (the sigma `step_from_to` gives the sample).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin

import functional_sched as fs
from functional_sched.testing import Config, Refusal, Schedule, Spec

from ._sglang import MOVA_LINSPACE, config_init, final_sigma, stepped

#: What `set_pair_postprocess_by_name("dual_sigma_shift", ...)` takes (None: not passed, sglang's default).
DUAL_SIGMA_SHIFT = (
    "visual_shift",
    "audio_shift",
    "visual_denoising_strength",
    "audio_denoising_strength",
    "visual_exponential_shift_mu",
    "audio_exponential_shift_mu",
)

#: The adapter's constructor options beyond sglang's: MOVA's stage's `set_timesteps` and post-processing arguments,
#: and the column to step.
PAIR_OPTIONS: dict[str, Any] = {
    "denoising_strength": 1.0,
    "pair_postprocess": None,
    "visual_shift": None,
    "audio_shift": None,
    "visual_denoising_strength": 1.0,
    "audio_denoising_strength": 1.0,
    "visual_exponential_shift_mu": None,
    "audio_exponential_shift_mu": None,
    "modality": "visual",
}


@functools.cache
def pair_reference_class() -> type:
    from functional_sched.adapters.sglang import sglang_class

    base = sglang_class("FlowMatchPairScheduler")

    def construct(self: Any, options: dict[str, Any]) -> None:
        self._built = False  # sglang's constructor builds its training grid with set_timesteps
        base.__init__(self, **{name: options[name] for name in MOVA_LINSPACE})
        self._built = True

    class FlowMatchPairScheduler(ConfigMixin, base):  # type: ignore[misc, valid-type]
        """sglang's pair scheduler configured as MOVA's stage configures it, stepping one column."""

        config_name = "scheduler_config.json"
        __init__ = config_init({**MOVA_LINSPACE, **PAIR_OPTIONS}, construct)

        def set_timesteps(self, num_inference_steps: int = 100, **kwargs: Any) -> None:
            if not self._built:
                base.set_timesteps(self, num_inference_steps)
                return
            config = self.config
            base.set_timesteps(self, num_inference_steps, denoising_strength=config.denoising_strength)
            if config.pair_postprocess is None:
                self.set_pair_postprocess(None)
            else:
                given = {name: config[name] for name in DUAL_SIGMA_SHIFT if config[name] is not None}
                self.set_pair_postprocess_by_name(config.pair_postprocess, **given)
            column = self.get_pairs("timesteps")[:, 0 if config.modality == "visual" else 1]
            self.timesteps = column.clone()
            quantised = [self.timestep_to_sigma(t) for t in column]
            self.sigmas = torch.stack([*quantised, torch.tensor(final_sigma(self))])

        def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = False, **kwargs: Any) -> Any:
            index = int(torch.argmin((self.timesteps - timestep).abs()))
            following = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else None
            return stepped(self.step_from_to(model_output, timestep, following, sample), return_dict)

        def add_noise(self, original_samples: Any, noise: Any, timestep: Any) -> Any:
            rows = []
            for row, t in enumerate(timestep.reshape(-1).expand(original_samples.shape[0])):
                sigma = self.timestep_to_sigma(t)
                rows.append((1 - sigma) * original_samples[row : row + 1] + sigma * noise[row : row + 1])
            return torch.cat(rows)

    return FlowMatchPairScheduler


def pair_reference(options: Mapping[str, Any]) -> Any:
    return pair_reference_class()(**options)


# ------------------------------------------------------------------------- the drop-in columns: sglang's class as MOVA
def mova_built(cls: type, options: Mapping[str, Any]) -> Any:
    """sglang's class (or the drop-in) built as MOVA builds it: the constructor's options only."""
    return cls(**{name: value for name, value in options.items() if name in MOVA_LINSPACE})


def mova_schedule(scheduler: Any, options: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """MOVA's timestep stage: `set_timesteps(n, denoising_strength, shift=scheduler.shift)`, then the pair's
    post-processing by name (or none)."""
    strength = options.get("denoising_strength", 1.0)
    scheduler.set_timesteps(kwargs["num_inference_steps"], denoising_strength=strength, shift=scheduler.shift)
    name = options.get("pair_postprocess")
    given = {key: options[key] for key in DUAL_SIGMA_SHIFT if options.get(key) is not None}
    scheduler.set_pair_postprocess_by_name(name, **(given if name is not None else {}))


def mova_step(
    scheduler: Any, options: Mapping[str, Any], model_output: Any, timestep: Any, sample: Any, **_: Any
) -> torch.Tensor:
    """MOVA's loop step at the table's timestep nearest `timestep`: `step_from_to` from the modality's column entry to
    the next (None past the last), a bare tensor."""
    index = int(torch.argmin((scheduler.timesteps - timestep).abs()))
    column = scheduler.get_pairs("timesteps")[:, 0 if options.get("modality", "visual") == "visual" else 1]
    following = column[index + 1] if index + 1 < len(column) else None
    return scheduler.step_from_to(model_output, column[index], following, sample)


#: MOVA (sglang's test/unit/test_mova_denoising_loop.py builds FlowMatchPairScheduler(shift=5.0); configs/sample/mova.py
#: sets dual_sigma_shift with visual and audio shift 5.0; 50 steps).
MOVA = {"shift": 5.0, "pair_postprocess": "dual_sigma_shift", "visual_shift": 5.0, "audio_shift": 5.0}

FLOW_PAIR = Spec(
    fs.FlowMatchPair,
    reference=pair_reference,
    configs=(
        Config("mova-video", MOVA, Schedule(steps=50)),
        Config("mova-audio", {**MOVA, "modality": "audio"}, Schedule(steps=50)),
        Config("mova-video-8", MOVA),
        Config("no-postprocess", {"shift": 5.0}),
        Config("grid-shift3-column5", {**MOVA, "shift": 3.0}),
        Config("dual-shift-8-2-audio", {**MOVA, "visual_shift": 8.0, "audio_shift": 2.0, "modality": "audio"}),
        Config("column-strength", {**MOVA, "visual_denoising_strength": 0.7, "extra_one_step": True}),
        Config(
            "exponential",
            {**MOVA, "exponential_shift": True, "exponential_shift_mu": 0.8, "visual_exponential_shift_mu": 1.2},
        ),
        Config("strength-no-postprocess", {"shift": 5.0, "denoising_strength": 0.6, "shift_terminal": 0.05}),
    ),
    refusals=(
        # sglang's constructor raises TypeError (math.exp(None)) building its training grid.
        Refusal("exponential-shift-without-mu", {"exponential_shift": True}, "needs exponential_shift_mu"),
    ),
    # The drop-in columns hold the drop-in to sglang's class itself (no config), stepped as MOVA steps it
    # (`step_from_to` on a column of the pair).
    drop_in_reference=mova_built,
    drop_in_schedule=mova_schedule,
    drop_in_step=mova_step,
)
