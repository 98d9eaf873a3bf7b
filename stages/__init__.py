"""functional_sched.stages: the serving side, requests that carry their own scheduler state through a pipeline.

Installed as `functional_sched.stages`; it builds on the core (`functional_sched`), never the other way round.
A request (`Req`) is an immutable record; each stage holds only models and config and maps a request to a new
one (`forward`). The standard chain, `Pipeline((PrepareTimesteps(s), PrepareLatents(s), Denoise(model, s),
Decode(vae)))`; the denoising stages also advance one request by one step (`step`) and many requests at any steps
in one model call and one scheduler call (`step_many`, `forward_many`).

The pattern stages take `Denoise`'s place for other sampling loops: `DistilledDenoise` (DMD's few steps, x0 then
renoise), `ScheduleSwap` (distilled steps swapped into a regular schedule), `BlockCausalDenoise` (self-forcing's video
chunks) and `PairedDenoise` (MOVA's paired audio/video schedules); `TwoExperts` is `Denoise` with Wan 2.2's two models;
`GraphedDenoise` is `Denoise` with its batched rounds replayed from CUDA graphs, one per batch-size bucket.
"""

from . import handoff
from .block_causal import BlockCausalDenoise
from .denoise import Denoise, combine_guidance, guided_output, step_noise
from .distilled import DMD_TIMESTEPS, DistilledDenoise
from .experts import TwoExperts
from .graphed import GraphedDenoise
from .paired import PairedDenoise
from .prepare import Decode, Pipeline, PrepareLatents, PrepareTimesteps, calculate_shift, packed_seq_len
from .request import Req
from .stepping import Stepped
from .swap import ScheduleSwap

__all__ = [
    "DMD_TIMESTEPS",
    "BlockCausalDenoise",
    "Decode",
    "Denoise",
    "DistilledDenoise",
    "GraphedDenoise",
    "PairedDenoise",
    "Pipeline",
    "PrepareLatents",
    "PrepareTimesteps",
    "Req",
    "ScheduleSwap",
    "Stepped",
    "TwoExperts",
    "calculate_shift",
    "combine_guidance",
    "guided_output",
    "handoff",
    "packed_seq_len",
    "step_noise",
]
