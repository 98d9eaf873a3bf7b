"""functional_sched.stages: the serving side, requests that carry their own scheduler state through a pipeline.

Installed as `functional_sched.stages`; it builds on the core (`functional_sched`), never the other way round.
A request (`Req`) is an immutable record; each stage holds only models and config and maps a request to a new
one (`forward`). The standard chain, `Pipeline((PrepareTimesteps(s), PrepareLatents(s), Denoise(model, s),
Decode(vae)))`; the denoising stages also advance one request by one step (`step`) and many requests at any steps
in one model call and one scheduler call (`step_many`, `forward_many`).
"""

from . import handoff
from .denoise import Denoise, guided_output
from .experts import TwoExperts
from .prepare import Decode, Pipeline, PrepareLatents, PrepareTimesteps, calculate_shift, packed_seq_len
from .request import Req

__all__ = [
    "Decode",
    "Denoise",
    "Pipeline",
    "PrepareLatents",
    "PrepareTimesteps",
    "Req",
    "TwoExperts",
    "calculate_shift",
    "guided_output",
    "handoff",
    "packed_seq_len",
]
