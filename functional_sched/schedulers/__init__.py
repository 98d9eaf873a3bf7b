"""The algorithms: one short module per family, each a frozen config class with `init` and `step`.

flow_match.py  FlowMatchEulerDiscrete (SD3, Flux, Qwen-Image, HunyuanVideo, LTX)
multistep.py   what the multistep families share: options, plan layout, warm-up and history
dpm_solver.py  DPMSolverMultistep (DPM-Solver++ 2M/3M, SDE variants, Sana)
unipc.py       UniPCMultistep (Wan 2.1/2.2)
deis.py        DEISMultistep (log-rho DEIS of orders 1-3, on the multistep base and DPM-Solver's math)
dpm_singlestep.py  DPMSolverSinglestep (DPM++ 2S/3S: an order list, the step's start sample in the state)
dpm_sde.py     DPMSolverSDE (DPM++ SDE: two calls per interval, Brownian noise from functional_sched.brownian_noise)
pndm.py        PNDM (SD 1.5's default: pseudo Runge-Kutta warm-up, then PLMS)
ddim.py        DDIM (SD 1.x/2.x), and what DDPM shares with it: the alpha_bar table indexed by timestep
ddpm.py        DDPM (ancestral sampling, every variance type)
euler.py       EulerDiscrete (SDXL's default, Karras' churn) and EulerAncestralDiscrete (Euler a)
lms.py         LMSDiscrete (linear multistep in sigma, orders 1-4)
heun.py        HeunDiscrete (two calls per interval), and the two-call machinery KDPM2 shares
kdpm2.py       KDPM2Discrete and KDPM2AncestralDiscrete (DPM2 and DPM2 a: the model at interval midpoints)
"""
