"""Drop-ins of sglang's own flow-match Euler classes: its `FlowMatchEulerDiscreteScheduler` (on
`SglangFlowMatchEulerDiscrete`), LTX-2's `LTX2FlowMatchScheduler` (on `SglangLTX2FlowMatch`) and `MOSSImageScheduler`
(on `MOSSImage`); defined only where sglang's wheel is installed (`functional_sched.adapters.sglang`), registered in
`drop_in.SGLANG_DROP_INS`.

Each subclasses sglang's class and steps as flow-match Euler's drop-in does (`drop_in.FlowMatchEulerDiscreteScheduler`:
float32 steps, the model output's dtype out, float32 for a per-token step, sigmas on set_timesteps' device).
sglang's `step(transition=...)` (a caller's replacement of the update, the RL rollout's hook) is refused by name: the
functional step is the scheduler's own update; a caller wanting another computes it from the plan's sigmas.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput

from functional_sched.machinery import checks
from functional_sched.schedulers.sglang_flow import MOSSImage, SglangFlowMatchEulerDiscrete, SglangLTX2FlowMatch

from .. import sglang
from ..diffusers import options_for
from ..drop_in import FlowMatchEulerDiscreteScheduler as _FlowMatchEuler
from ..drop_in import _check_timesteps, _DropIn


def nearest_timestep_noise(
    self: Any, clean_latent: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor
) -> torch.Tensor:
    """sglang's flow-match `add_noise` (its pi-Flow's too): each row's sigma at the timestep nearest its own
    (`argmin |timesteps - t|`), `(1 - sigma) * clean + sigma * noise`, in the noise's dtype."""
    owner = f"{type(self).__name__}.add_noise"
    checks.tensor(owner, "clean_latent", clean_latent)
    checks.check_like(owner, "noise", noise, clean_latent, "clean_latent")
    _check_timesteps(owner, "timestep", timestep)
    if timestep.ndim == 2:
        timestep = timestep.flatten(0, 1)
    elif timestep.ndim == 1 and timestep.shape[0] == 1:
        timestep = timestep.expand(clean_latent.shape[0])
    elif timestep.ndim != 1:
        raise ValueError(f"[add_noise] Invalid timestep shape: {timestep.shape}")
    if timestep.numel() != clean_latent.shape[0]:
        raise ValueError(f"{owner}: {timestep.numel()} timesteps for {clean_latent.shape[0]} rows.")
    sigmas, timesteps = self.sigmas.to(noise.device), self.timesteps.to(noise.device)
    index = torch.argmin((timesteps.unsqueeze(0) - timestep.unsqueeze(1)).abs(), dim=1)
    sigma = sigmas[index].reshape(-1, 1, 1, 1)
    return ((1 - sigma) * clean_latent + sigma * noise).type_as(noise)


if sglang.available():
    _SGLANG_FLOW_MATCH = sglang.sglang_class("FlowMatchEulerDiscreteScheduler")
    _SGLANG_MOSS = sglang.sglang_class("MOSSImageScheduler")
    _SGLANG_LTX2 = sglang.sglang_class("LTX2FlowMatchScheduler")

    class FlowMatchEulerDiscreteScheduler(_DropIn, _SGLANG_FLOW_MATCH):  # type: ignore[valid-type, misc]
        """sglang's `FlowMatchEulerDiscreteScheduler` on `functional_sched.SglangFlowMatchEulerDiscrete`:
        `set_shift` (its loader's call) re-maps the config; `add_noise` looks each row's sigma up by the nearest
        timestep, as sglang's does (without moving the tables to the noise's device)."""

        _functional_class: ClassVar[type] = SglangFlowMatchEulerDiscrete
        _output_class = sglang.sglang_module(
            sglang.MODULES["FlowMatchEulerDiscreteScheduler"]
        ).FlowMatchEulerDiscreteSchedulerOutput
        _missing_timestep_is_last = False  # sglang's (diffusers') lookup raises IndexError for an unknown timestep

        _exposed_sigmas = _FlowMatchEuler._exposed_sigmas
        _check_timestep = _FlowMatchEuler._check_timestep
        _output_dtype = _FlowMatchEuler._output_dtype
        _core_sample = _FlowMatchEuler._core_sample
        _noise = _FlowMatchEuler._noise
        scale_noise = _FlowMatchEuler.scale_noise

        def set_shift(self, shift: float) -> None:
            """sglang's `set_shift`: the next `set_timesteps` shifts by `shift` within the range of the config's
            shift; the option `set_shift`, mapped again from this object as `from_sglang` maps it."""
            self._shift = shift
            self._functional = self._functional_class(**options_for(self._functional_class, self))

        def _step(self, model_output: Any, timestep: Any, sample: Any, transition: Any = None, **arguments: Any) -> Any:
            if transition is not None:
                raise NotImplementedError(
                    "functional_sched does not support FlowMatchEulerDiscreteScheduler.step(transition=...): the "
                    "functional step is the scheduler's own update (its sigma and next sigma are the plan's, "
                    "`sigmas(state)`); compute another update from them instead of passing a transition."
                )
            return super()._step(model_output, timestep, sample, **arguments)

        add_noise = nearest_timestep_noise

        def __len__(self) -> int:
            return 0  # sglang's

    class LTX2FlowMatchScheduler(FlowMatchEulerDiscreteScheduler, _SGLANG_LTX2):  # type: ignore[valid-type, misc]
        """sglang's `LTX2FlowMatchScheduler` on `functional_sched.SglangLTX2FlowMatch`: sglang's flow-match drop-in
        above, whose `set_timesteps` plans LTX-2's schedule (custom sigmas without mu taken as they are)."""

        _functional_class: ClassVar[type] = SglangLTX2FlowMatch

        def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
            if sigmas is None or timesteps is not None or mu is not None:  # else sigmas as they are: no mu needed
                super()._validate_request(num_inference_steps, sigmas, mu, timesteps)

    class MOSSImageScheduler(_DropIn, _SGLANG_MOSS):  # type: ignore[valid-type, misc]
        """sglang's `MOSSImageScheduler` on `functional_sched.MOSSImage`: its config holds diffusers' flow-match keys
        too, as sglang's (its parent's constructor registers them); `set_shift` writes the config's shift, as sglang's
        does, and the next `set_timesteps` maps it."""

        _functional_class: ClassVar[type] = MOSSImage
        _output_class = FlowMatchEulerDiscreteSchedulerOutput
        _missing_timestep_is_last = False

        _exposed_sigmas = _FlowMatchEuler._exposed_sigmas
        _check_timestep = _FlowMatchEuler._check_timestep
        _output_dtype = _FlowMatchEuler._output_dtype
        _core_sample = _FlowMatchEuler._core_sample
        _noise = _FlowMatchEuler._noise
        scale_noise = _FlowMatchEuler.scale_noise

        def _configure(self, **options: Any) -> None:
            # sglang's constructor runs diffusers' first, which registers every flow-match key (shift 1 among them),
            # then registers its own: the config shows them all.
            inherited = dict(_SGLANG_MOSS(**options).config)
            self.register_to_config(**{key: value for key, value in inherited.items() if not key.startswith("_")})
            super()._configure(**options)
