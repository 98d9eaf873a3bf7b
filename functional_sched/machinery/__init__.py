"""How every scheduler runs, whatever its algorithm: nothing here knows a solver.

record.py     immutable records of tensors that compiled code can build (the states, the plan)
options.py    declared config options: each field's domain, read by validation, tests and the diffusers mapping
scheduler.py  the base class: `init`/`step` contract, the plan cache, the queries every scheduler answers
plan.py       the per-step tables, per-row gathers, and products rounded as diffusers rounds them
host.py       the eager fast path: steps the host knows without reading the device
checks.py     eager input checks and `unchecked()`
batching.py   requests stacked into one state and split back
loop.py       `SamplingLoop`: a whole loop eager, compiled, or in one CUDA graph
serialize.py  a state as tensors plus JSON, and back (handoff between workers)
noise.py      `randn_tensor`: noise drawn as diffusers draws it
"""
