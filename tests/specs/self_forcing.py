"""`SelfForcingFlowMatch`'s and `SglangFlowMatch`'s conformance tables, against sglang 0.5.23's own classes.

LingBot-World's causal DMD pipelines first (`SelfForcingFlowMatchScheduler(num_inference_steps=1000, shift=10 or 5,
sigma_min=0.0, extra_one_step=True)`), then the options' corners. The references are sglang's objects behind diffusers'
scheduler API (`set_timesteps(num_inference_steps)`, `timesteps`, `sigmas`, `step(...)[0]`), adapted, never recomputed:
- the `sigmas` they expose end with the sigma sglang's step goes to past the last step (0, or 1 where the table rises);
  sglang's step never reads past its table's length, so the extra entry changes none of its numbers;
- SelfForcing's step returns the sample's dtype (sglang's per-row float32 sigma tensors promote a half-precision
  sample to float32; pipelines keep their latents' dtype);
- `denoising_strength` (SelfForcing's `set_timesteps` argument, config of ours) is a constructor argument of the
  reference that its `set_timesteps` passes on;
- `FlowMatchScheduler` is no ConfigMixin and its `step` returns a tensor: the reference adds the config and returns
  a 1-tuple; its `add_noise` takes one timestep for the whole batch, so rows are noised one at a time.
Rows at different steps are stepped one reference call per step (sglang's step sends a whole batch to sigma 0 once
any row is at its last step: a bug ours does not reproduce).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

from ._sglang import LINSPACE, MOVA_LINSPACE, config_init, stepped, with_final_sigma

STEPS = (20, 40, 80, 160)


@functools.cache
def self_forcing_reference_class() -> type:
    from functional_sched.adapters.sglang import sglang_class

    base = sglang_class("SelfForcingFlowMatchScheduler")

    def construct(self: Any, options: dict[str, Any]) -> None:
        self.denoising_strength = options.pop("denoising_strength")
        base.__init__(self, **options)

    class SelfForcingFlowMatchScheduler(base):  # type: ignore[misc, valid-type]
        """sglang's class; `set_timesteps` with the configured `denoising_strength`; the final sigma exposed."""

        __init__ = config_init({**LINSPACE, "denoising_strength": 1.0}, construct)

        def set_timesteps(self, num_inference_steps: int = 100, **kwargs: Any) -> None:
            super().set_timesteps(num_inference_steps, denoising_strength=self.denoising_strength)
            with_final_sigma(self)

        def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = False, **kwargs: Any) -> Any:
            out = super().step(model_output, timestep, sample, return_dict=return_dict)
            if return_dict:
                return type(out)(prev_sample=out.prev_sample.to(sample.dtype))
            return (out[0].to(sample.dtype),)

    return SelfForcingFlowMatchScheduler


def self_forcing_reference(options: Mapping[str, Any]) -> Any:
    return self_forcing_reference_class()(**options)


@functools.cache
def flow_match_reference_class() -> type:
    from functional_sched.adapters.sglang import sglang_class

    base = sglang_class("FlowMatchScheduler")

    class FlowMatchScheduler(ConfigMixin, base):  # type: ignore[misc, valid-type]
        """sglang's class with a config, diffusers' `step` return and per-row noising; the final sigma exposed."""

        config_name = "scheduler_config.json"
        __init__ = config_init(MOVA_LINSPACE, lambda self, options: base.__init__(self, **options))

        def set_timesteps(self, num_inference_steps: int = 100, **kwargs: Any) -> None:
            base.set_timesteps(self, num_inference_steps)
            with_final_sigma(self)

        def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = False, **kwargs: Any) -> Any:
            # sglang's step reads len(self.timesteps), never the exposed final sigma.
            return stepped(base.step(self, model_output, timestep, sample), return_dict)

        def add_noise(self, original_samples: Any, noise: Any, timestep: Any) -> Any:
            rows = [
                base.add_noise(self, original_samples[row : row + 1], noise[row : row + 1], t)
                for row, t in enumerate(timestep.reshape(-1).expand(original_samples.shape[0]))
            ]
            return torch.cat(rows)

    return FlowMatchScheduler


def flow_match_reference(options: Mapping[str, Any]) -> Any:
    return flow_match_reference_class()(**options)


#: LingBot-World's causal DMD configs (flow_shift 10 and 5; pipelines/lingbot_world_causal_dmd_pipeline.py:48-53).
LINGBOT = {"num_inference_steps": 1000, "sigma_min": 0.0, "extra_one_step": True}

SELF_FORCING = Spec(
    fs.SelfForcingFlowMatch,
    reference=self_forcing_reference,
    configs=(
        Config("lingbot-world-causal-dmd", {**LINGBOT, "shift": 10.0}),
        Config("lingbot-world-v2-causal-dmd", {**LINGBOT, "shift": 5.0}),
        Config("defaults", {}),
        Config("self-forcing-wan-1.3b", {"shift": 5.0, "sigma_min": 0.0, "extra_one_step": True}, Schedule(steps=4)),
        Config("denoising-strength", {"shift": 5.0, "denoising_strength": 0.6}),
        Config("inverse-timesteps", {"inverse_timesteps": True, "shift": 5.0}),
        Config("reverse-sigmas", {"reverse_sigmas": True}),
        Config("sigma-range", {"sigma_max": 0.9, "sigma_min": 0.0, "shift": 1.0}),
    ),
    orders=(Order("euler", {"sigma_min": 0.0, "extra_one_step": True, "shift": 1.0}, 1, STEPS),),
    # The drop-in is sglang's class (N sigmas, sglang's output dtype, `set_timesteps(n, denoising_strength)`), not the
    # adapted reference above: tests/test_self_forcing.py drives it against sglang's own objects. With
    # `drop_in_reference`/`drop_in_schedule` (the real class; `denoising_strength` to `set_timesteps`) the suite's
    # columns run it but for two gaps of the drop-in: it does not step from tables edited in place, and `as_diffusers`
    # of the core class loses the config's `num_inference_steps`.
    drop_in_columns=False,
)

SGLANG_FLOW_MATCH = Spec(
    fs.SglangFlowMatch,
    reference=flow_match_reference,
    configs=(
        Config("mova-shift5", {"shift": 5.0}),
        Config("defaults", {}),
        Config("extra-one-step", {"shift": 5.0, "sigma_min": 0.0, "extra_one_step": True}),
        Config("exponential-shift", {"exponential_shift": True, "exponential_shift_mu": 0.8}),
        Config("shift-terminal", {"shift": 3.0, "shift_terminal": 0.1}),
        Config("inverse-reverse", {"inverse_timesteps": True, "reverse_sigmas": True}),
    ),
    refusals=(
        # sglang's set_timesteps raises TypeError (math.exp(None)) in its constructor.
        Refusal("exponential-shift-without-mu", {"exponential_shift": True}, "needs exponential_shift_mu"),
    ),
    orders=(Order("euler", {"sigma_min": 0.0, "extra_one_step": True, "shift": 1.0}, 1, STEPS),),
    # The drop-in columns hold the drop-in to sglang's class itself (no config, a bare tensor from `step`, N sigmas),
    # built with the options as MOVA builds it.
    drop_in_reference=lambda cls, options: cls(**options),
)
