"""Flow-GRPO's SDE sampler, the reference of `FlowMatchSDE`: no class of diffusers or of an installable package.

Flow-GRPO's SDE step is a function patched onto diffusers' FlowMatchEulerDiscreteScheduler
(`flow_grpo/diffusers_patch/sd3_sde_with_logprob.py` of github.com/yifan123/flow_grpo at commit
ac4c86e8cae021841f1fde853d340e0db67690dd, MIT licence). `sde_step_with_logprob` below is that function transcribed
line for line (only its import of `randn_tensor` and the formatting differ), and `FlowGRPOReference` is the scheduler
Flow-GRPO's SD3 pipeline steps with: a real diffusers 0.42.1 FlowMatchEulerDiscreteScheduler for the schedule, the
function for `step`, called as `pipeline_with_logprob` calls it (float32 inputs, `t.unsqueeze(0)`) and its result cast
back to the latents' dtype as that loop does. The conformance spec (tests/specs/flow_sde.py) and the report
(`functional-sched-report`'s Flow-GRPO rows) both hold `FlowMatchSDE` to it.
"""

from __future__ import annotations

import math

import diffusers
import torch
from diffusers.utils.torch_utils import randn_tensor

#: Where the transcription comes from.
FLOW_GRPO_SOURCE = "github.com/yifan123/flow_grpo flow_grpo/diffusers_patch/sd3_sde_with_logprob.py"
FLOW_GRPO_COMMIT = "ac4c86e8cae021841f1fde853d340e0db67690dd"


def sde_step_with_logprob(
    self: diffusers.FlowMatchEulerDiscreteScheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    noise_level: float = 0.7,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flow-GRPO's SDE step and the log-probability of its result (mean over all but the batch dim)."""
    # bf16 can overflow here when compute prev_sample_mean, we must convert all variable to fp32
    model_output = model_output.float()
    sample = sample.float()
    if prev_sample is not None:
        prev_sample = prev_sample.float()

    step_index = [self.index_for_timestep(t) for t in timestep]
    prev_step_index = [step + 1 for step in step_index]
    sigma = self.sigmas[step_index].view(-1, 1, 1, 1)
    sigma_prev = self.sigmas[prev_step_index].view(-1, 1, 1, 1)
    sigma_max = self.sigmas[1].item()
    dt = sigma_prev - sigma

    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level

    # our sde
    prev_sample_mean = (
        sample * (1 + std_dev_t**2 / (2 * sigma) * dt)
        + model_output * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    )

    if prev_sample is None:
        variance_noise = randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )
        prev_sample = prev_sample_mean + std_dev_t * torch.sqrt(-1 * dt) * variance_noise

    log_prob = (
        -((prev_sample.detach() - prev_sample_mean) ** 2) / (2 * ((std_dev_t * torch.sqrt(-1 * dt)) ** 2))
        - torch.log(std_dev_t * torch.sqrt(-1 * dt))
        - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi)))
    )

    # mean along all but batch dimension
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))

    return prev_sample, log_prob, prev_sample_mean, std_dev_t


class FlowGRPOReference(diffusers.FlowMatchEulerDiscreteScheduler):
    """Flow-GRPO's sampler with diffusers' scheduler API: diffusers' FlowMatchEulerDiscreteScheduler (its schedule,
    its options), its `step` the function, with `noise_level` a `step()` argument as Flow-GRPO passes it."""

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        sample: torch.Tensor,
        noise_level: float = 0.7,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> tuple[torch.Tensor]:
        latents, _, _, _ = sde_step_with_logprob(
            self,
            model_output.float(),
            timestep.reshape(-1)[:1],  # the pipeline's `t.unsqueeze(0)`
            sample.float(),
            noise_level=noise_level,
            generator=generator,
        )
        return (latents.to(sample.dtype),)
