"""functional_sched.stages: the serving side, requests that carry their own scheduler state through a pipeline.

Installed as `functional_sched.stages`; it builds on the core (`functional_sched`) and the diffusers adapters
(`functional_sched.adapters`), never the other way round. So far: the request record (`Req`) and the denoising
stage (`Denoise`: one step of one request, or one step of many requests in one model and scheduler call).
"""

from .denoise import Denoise
from .request import Req

__all__ = ["Denoise", "Req"]
