"""functional_sched.stages: the serving side, requests that carry their own scheduler state through a pipeline.

Installed as `functional_sched.stages`; it builds on the core (`functional_sched`) and the diffusers adapters
(`functional_sched.adapters`), never the other way round. Its request record and stages are the next piece of
work (the project's issue 4); until then this package exports nothing.
"""

__all__: list[str] = []
