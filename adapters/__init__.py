"""functional_sched.adapters: interop with diffusers. The core (`functional_sched`) never imports this package.

from functional_sched.adapters import from_diffusers
sched = from_diffusers(pipe.scheduler)  # same algorithm and options; an unsupported option raises
"""

from .diffusers import from_diffusers, to_diffusers_config
from .sglang import from_sglang

__all__ = ["from_diffusers", "from_sglang", "to_diffusers_config"]
