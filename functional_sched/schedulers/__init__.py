"""The algorithms: one short module per family, each a frozen config class with `init` and `step`.

flow_match.py  FlowMatchEulerDiscrete (SD3, Flux, Qwen-Image, HunyuanVideo, LTX)
multistep.py   what the multistep families share: options, plan layout, warm-up and history
dpm_solver.py  DPMSolverMultistep (DPM-Solver++ 2M/3M, SDE variants, Sana)
unipc.py       UniPCMultistep (Wan 2.1/2.2)
"""
