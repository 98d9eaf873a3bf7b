"""The algorithms: one short module per family, each a frozen config class with `init` and `step`.

flow_match.py  FlowMatchEulerDiscrete (SD3, Flux, Qwen-Image, HunyuanVideo, LTX)
sglang_flow.py SglangFlowMatchEulerDiscrete (sglang's copy: float32 roundings, use_uniform_sigmas), MOSSImage
flow_lcm.py    FlowMatchLCM (few-step flow models; SwD's scale-wise generation: x0 resized between steps)
flow_sde.py    FlowMatchSDE (Flow-GRPO's SDE step on flow-match Euler's schedule, noise_level; RL fine-tuning)
hunyuan3d.py   Hunyuan3DFlowMatchEulerDiscrete and its consistency variant (sglang's Hunyuan3D: ascending sigmas to 1)
multistep.py   what the multistep families share: options, plan layout, warm-up and history
dpm_solver.py  DPMSolverMultistep (DPM-Solver++ 2M/3M, SDE variants, Sana)
unipc.py       UniPCMultistep (Wan 2.1/2.2)
flow_unipc.py  FlowUniPCMultistep (sglang's Wan UniPC) and SglangUniPCMultistep (sglang's copy of diffusers' UniPC)
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
k_dpm.py       k-diffusion's DPMSolverPlusPlus2SAncestral, DPMSolverPlusPlus3MSDE, DPMSolverFast (x0 model)
dpm_adaptive.py  DPMSolverAdaptive (k-diffusion's dpm_adaptive: error-controlled steps in a budget of attempts)
res.py         RESMultistep and RESMultistepAncestral (ComfyUI's res_multistep: 2nd-order multistep RES; x0 model)
k_multistep.py ComfyUI's GradientEstimation and IPNDMVariableStep (ipndm_v): linear multistep in sigma on Karras' ODE
heunpp.py      HeunPlusPlus (ComfyUI's heunpp2: one to three calls per interval, one step per call; x0 model)
er_sde.py      ERSDE (ComfyUI's ER-SDE solver, stages 1-3, its node's noise scalers; x0 model)
seeds.py       SEEDS2 and SEEDS3 (ComfyUI's SEEDS-2/3: two or three calls per interval, one step per call; x0 model)
edm.py         EDMEuler (Cosmos 1.0), and EDM's preconditioning (sigma_data, c_in, c_skip, c_out) and sigma schedules
edm_dpm.py     EDMDPMSolverMultistep and CosineDPMSolverMultistep (Playground v2.5, Stable Audio: DPM++ on EDM)
inverse.py     DDIMInverse and DPMSolverMultistepInverse (DDIM / DPM-Solver++ inversion: their steps towards noise)
self_forcing.py  SelfForcingFlowMatch and SglangFlowMatch (sglang's float32-linspace flow Euler: LingBot-World, MOVA)
helios.py      Helios, HeliosDMD and SglangHelios (Helios: one stage of a pyramid schedule, UniPC/Euler/DMD steps)
flow_pair.py   FlowMatchPair (one column of sglang's MOVA pair scheduler: sigmas looked up on the training grid)
sa_solver.py   SASolver (PixArt: stochastic Adams predictor-corrector of orders 1-4; tau as a value, not a callable)
piflow.py      Piflow and SglangPiflow (Kandinsky 6's distilled pi-Flow: a policy rollout over a grid of x0 predictions)
sglang_dpm.py  SglangDPMSolverMultistep (sglang's wrapper of diffusers' DPM-Solver: SANA, wan_animate_2's custom sigmas)
passthrough.py ComfyUIPassThrough (sglang's ComfyUI mode: the identity step, the sampler runs elsewhere)
"""
