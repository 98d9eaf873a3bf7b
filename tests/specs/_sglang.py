"""What the specs of sglang's float32-linspace flow-match classes share (tests/specs/self_forcing.py, flow_pair.py):
their constructor options, a registered-config `__init__` for the adapters over sglang's classes, the final sigma the
adapters expose, and diffusers' `step` return.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerOutput

#: The constructor options (and defaults) of sglang's SelfForcingFlowMatchScheduler and of MOVA's FlowMatchScheduler.
LINSPACE: dict[str, Any] = {
    "num_inference_steps": 100,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "sigma_max": 1.0,
    "sigma_min": 0.003 / 1.002,
    "inverse_timesteps": False,
    "extra_one_step": False,
    "reverse_sigmas": False,
}
MOVA_LINSPACE: dict[str, Any] = {
    **LINSPACE,
    "exponential_shift": False,
    "exponential_shift_mu": None,
    "shift_terminal": None,
}


def final_sigma(scheduler: Any) -> float:
    """Where sglang's step goes past the table's last sigma."""
    return 1.0 if scheduler.inverse_timesteps or scheduler.reverse_sigmas else 0.0


def with_final_sigma(scheduler: Any) -> None:
    """The adapters' `sigmas`: sglang's table and the final sigma (which sglang's step never reads from it)."""
    scheduler.sigmas = torch.cat([scheduler.sigmas, torch.full((1,), final_sigma(scheduler))])


def config_init(parameters: Mapping[str, Any], construct: Callable[[Any, dict[str, Any]], None]) -> Callable[..., None]:
    """An `__init__` taking `parameters` (name: default) as keywords, registered as the diffusers config (its
    signature is theirs), that calls `construct(self, options)` with every option filled in."""

    def __init__(self: Any, **options: Any) -> None:
        construct(self, {**parameters, **options})

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [self_parameter]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in parameters.items()]
    )
    return register_to_config(__init__)


def stepped(prev_sample: torch.Tensor, return_dict: bool) -> Any:
    """diffusers' `step` return of a sample."""
    return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)
