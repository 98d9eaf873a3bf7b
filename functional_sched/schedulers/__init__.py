"""The algorithms: one short module per family, each a frozen config class with `init` and `step`.

flow_match.py  FlowMatchEulerDiscrete (SD3, Flux, Qwen-Image, HunyuanVideo, LTX)
flow_lcm.py    FlowMatchLCM (few-step flow models; SwD's scale-wise generation: x0 resized between steps)
multistep.py   what the multistep families share: options, plan layout, warm-up and history
dpm_solver.py  DPMSolverMultistep (DPM-Solver++ 2M/3M, SDE variants, Sana)
unipc.py       UniPCMultistep (Wan 2.1/2.2)
deis.py        DEISMultistep (log-rho DEIS of orders 1-3, on the multistep base and DPM-Solver's math)
dpm_singlestep.py  DPMSolverSinglestep (DPM++ 2S/3S: an order list, the step's start sample in the state)
dpm_sde.py     DPMSolverSDE (DPM++ SDE: two calls per interval, Brownian noise from functional_sched.brownian_noise)
pndm.py        PNDM (SD 1.5's default: pseudo Runge-Kutta warm-up, then PLMS)
ipndm.py       IPNDM (Dance Diffusion: Adams-Bashforth of order up to 4 on its own sin^2 schedule, v-prediction)
ddim.py        DDIM (SD 1.x/2.x), and what DDPM shares with it: the alpha_bar table indexed by timestep
ddpm.py        DDPM (ancestral sampling, every variance type)
wuerstchen.py  DDPMWuerstchen (Wuerstchen, Stable Cascade: ancestral DDPM on a continuous cosine schedule)
lcm.py         LCM and TCD (LCM-LoRA, TCD LoRAs: consistency sampling on DDIM's alpha_bar, noise but at the last step)
cogvideox.py   CogVideoXDDIM and CogVideoXDPM (CogVideoX: SNR-shifted zero-SNR alpha_bar; DPM++2M SDE, x0 in the state)
euler.py       EulerDiscrete (SDXL's default, Karras' churn) and EulerAncestralDiscrete (Euler a)
lms.py         LMSDiscrete (linear multistep in sigma, orders 1-4)
heun.py        HeunDiscrete (two calls per interval), and the two-call machinery KDPM2 shares
flow_heun.py   FlowMatchHeunDiscrete (Heun's two calls per interval on the shifted flow schedule)
ltx_rf.py      LTXEulerAncestralRF (LTX-2: ancestral rectified-flow Euler, eta and s_noise)
kdpm2.py       KDPM2Discrete and KDPM2AncestralDiscrete (DPM2 and DPM2 a: the model at interval midpoints)
edm.py         EDMEuler (Cosmos 1.0), and EDM's preconditioning (sigma_data, c_in, c_skip, c_out) and sigma schedules
edm_dpm.py     EDMDPMSolverMultistep and CosineDPMSolverMultistep (Playground v2.5, Stable Audio: DPM++ on EDM)
inverse.py     DDIMInverse and DPMSolverMultistepInverse (DDIM / DPM-Solver++ inversion: their steps towards noise)
sa_solver.py   SASolver (PixArt: stochastic Adams predictor-corrector of orders 1-4; tau as a value, not a callable)
"""
