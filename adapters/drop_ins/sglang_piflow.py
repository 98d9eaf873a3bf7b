"""Drop-in of sglang's `PiflowScheduler` (Kandinsky 6 in sglang) on `functional_sched.SglangPiflow`; defined only where
sglang's wheel is installed (`functional_sched.adapters.sglang`), registered in `drop_in.SGLANG_DROP_INS`.

It steps as diffusers' pi-Flow drop-in does, but returns float32 for half-precision samples, as sglang keeps the
rollout's float32 result. Its config holds its `nfe` key (Kandinsky 6 SR reads it as the step count) and the flow-match
keys its parent registers, as sglang's. What sglang's class inherits from its flow-match Euler is there too:
`scale_noise` (diffusers' formula on this drop-in's tables), `add_noise` (each row's sigma at the nearest timestep, in
the noise's dtype; the tables are not moved to the noise's device). Not kept: sglang's private
`_piflow_raw_timesteps` and `_piflow_substeps` (the plan holds them).
"""

from __future__ import annotations

from typing import Any, ClassVar

from functional_sched.schedulers.piflow import SglangPiflow

from .. import sglang
from ..drop_in import FlowMatchEulerDiscreteScheduler as _FlowMatchEuler
from .piflow import PiflowDropIn
from .sglang_flow import nearest_timestep_noise

if sglang.available():
    _SGLANG_PIFLOW = sglang.sglang_class("PiflowScheduler")
    _FLOW_MATCH = sglang.sglang_module(sglang.MODULES["FlowMatchEulerDiscreteScheduler"])

    class PiflowScheduler(PiflowDropIn, _SGLANG_PIFLOW):  # type: ignore[valid-type, misc]
        """sglang's `PiflowScheduler` on `functional_sched.SglangPiflow`."""

        _functional_class: ClassVar[type] = SglangPiflow
        _output_class = _FLOW_MATCH.FlowMatchEulerDiscreteSchedulerOutput
        scale_noise = _FlowMatchEuler.scale_noise

        def _configure(self, **options: Any) -> None:
            # sglang's constructor runs its flow-match Euler's first, which registers every flow-match key: the
            # config shows them all.
            inherited = dict(_SGLANG_PIFLOW(**options).config)
            self.register_to_config(**{key: value for key, value in inherited.items() if not key.startswith("_")})
            super()._configure(**options)

        add_noise = nearest_timestep_noise
