"""Math the scheduler families share, written once and computed as diffusers computes it (host-side, per plan).

schedules.py      betas, timestep spacings, sigma conversions (Karras, exponential, beta), flow shifts
named_schedules.py sigma tables by name (ComfyUI's simple, normal, kl_optimal, ..., Align Your Steps)
beta_quantile.py  the Beta distribution's quantile (for beta sigmas) without scipy
predictions.py    a model's output as x0 or epsilon, and dynamic thresholding (in `step`)
"""
