"""Conformance tables of sglang's own flow-match Euler classes, held to sglang 0.5.23's: `SglangFlowMatchEulerDiscrete`
(its `FlowMatchEulerDiscreteScheduler`), `SglangLTX2FlowMatch` (its LTX-2 pipelines' `LTX2FlowMatchScheduler`) and
`MOSSImage` (its `MOSSImageScheduler`).

sglang loads every checkpoint whose scheduler config names FlowMatchEulerDiscreteScheduler (SD3, Flux, Qwen-Image,
HunyuanVideo, LTX, Cosmos, Kandinsky 6, ...) into its own class, then calls `set_shift(flow_shift)` where the pipeline
config sets a flow shift; the timestep stage passes Flux's `linspace(1, 1/n, n)` sigmas with `mu`. The configs: those
pipelines first (diffusers' grid rows of the same checkpoints, then sglang's own call patterns), then the corners of
sglang's float32 roundings (dynamic shift of float32 tables, shift_terminal, Karras/exponential/beta ends) and of
`use_uniform_sigmas`.

The suite's columns take a config's step count as its schedule's length: a one-step schedule (sglang's unstretched
`shift_terminal` one) and MOSS-Image's snapped grids with fewer steps than asked are in `tests/test_sglang_flow.py`."""

from __future__ import annotations

from typing import Any

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

STEPS = (20, 40, 80, 160)


def flux_sigmas(steps: int) -> dict[str, np.ndarray]:
    """sglang's timestep stage for Flux, Qwen-Image, Z-Image (`prepare_sigmas`): `np.linspace(1, 1/n, n)`."""
    return {"sigmas": np.linspace(1.0, 1 / steps, steps)}


def kandinsky_sr_sigmas(steps: int) -> dict[str, np.ndarray]:
    """Kandinsky 6 SR's Euler chunks: `torch.linspace(start, 0, n + 1)[:-1]` (float32), from start 0.9."""
    return {"sigmas": np.linspace(0.9, 0.0, steps + 1, dtype=np.float32)[:-1]}


def sana_wm_sigmas(steps: int) -> dict[str, np.ndarray]:
    """SANA-WM streaming's four sigmas (a fresh shift-1 scheduler per chunk), or as many from 1 to 0.727."""
    return {"sigmas": np.array([1.0, 0.96, 0.889, 0.727]) if steps == 4 else np.linspace(1.0, 0.727, steps)}


def cosmos_sigmas(steps: int) -> dict[str, np.ndarray]:
    """Cosmos distilled / Cosmos-Dreams: `set_shift(1.0)`, then a short `t_list` of sigmas (four, or as many)."""
    return {"sigmas": np.array([0.999, 0.941, 0.833, 0.5]) if steps == 4 else np.linspace(0.999, 0.5, steps)}


QWEN = {
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
}
LTX = {
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}

SGLANG_FLOW_MATCH_EULER = Spec(
    fs.SglangFlowMatchEulerDiscrete,
    configs=(
        *pipelines(fs.FlowMatchEulerDiscrete),  # SD3, Flux.1-dev, Qwen-Image: the same checkpoints in sglang
        # The loader's set_shift(flow_shift) on a checkpoint whose shift differs (HunyuanVideo's flow_shift 7).
        Config("loader-set-shift-7", {"shift": 1.0, "set_shift": 7.0}, Schedule(steps=50)),
        Config("loader-set-shift-5-on-shift-3", {"shift": 3.0, "set_shift": 5.0}),
        Config("qwen-image-50", QWEN, Schedule(steps=50, mu=0.8, custom=flux_sigmas)),
        Config("ltx-video", LTX, Schedule(steps=40, mu=1.8)),
        Config("ltx-video-flux-sigmas", LTX, Schedule(steps=20, mu=2.05, custom=flux_sigmas)),
        Config("kandinsky6-sr", {"shift": 5.0}, Schedule(steps=6, custom=kandinsky_sr_sigmas)),
        Config("sana-wm-streaming", {}, Schedule(steps=4, custom=sana_wm_sigmas)),
        Config(
            "cosmos-dreams",
            {"shift": 5.0, "set_shift": 1.0, "stochastic_sampling": True},
            Schedule(4, custom=cosmos_sigmas),
        ),
        Config("uniform-sigmas-shift-5", {"shift": 5.0, "use_uniform_sigmas": True}, Schedule(steps=30)),
        Config("uniform-sigmas-dynamic", {"use_dynamic_shifting": True, "use_uniform_sigmas": True}, Schedule(mu=1.2)),
        Config("shift-3-terminal", {"shift": 3.0, "shift_terminal": 0.1}, Schedule(steps=30)),
        Config("set-shift-terminal", {"shift": 3.0, "shift_terminal": 0.1, "set_shift": 5.0}),
        Config(
            "karras-dynamic-flux-sigmas",
            {"use_dynamic_shifting": True, "use_karras_sigmas": True},
            Schedule(20, mu=0.7, custom=flux_sigmas),
        ),
        Config("exponential-terminal", {"shift": 3.0, "use_exponential_sigmas": True, "shift_terminal": 0.1}),
        Config("beta-sigmas-stochastic", {"shift": 3.0, "use_beta_sigmas": True, "stochastic_sampling": True}),
        Config("inverted", {"invert_sigmas": True, "shift": 3.0}),
        Config("linear-time-shift", {**LTX, "time_shift_type": "linear"}, Schedule(mu=1.5)),
        Config(
            "dynamic-custom-timesteps",
            {"use_dynamic_shifting": True},
            Schedule(mu=0.9, custom=lambda n: {"timesteps": np.linspace(1000.0, 1000.0 / n, n) ** 0.9}),
        ),
    ),
    refusals=(
        # A first sigma given twice: sglang's loop (diffusers') looks its timestep up, starts at the second match and
        # runs off the end.
        Refusal(
            "first-timestep-repeats",
            {},
            "the schedule's first timestep 800 repeats",
            Schedule(custom=lambda steps: {"sigmas": (0.8, 0.8, 0.5, 0.2)}),
            at="init",
        ),
    ),
    orders=(
        Order("euler", {}, 1, STEPS),
        Order("euler-set-shift", {"shift": 1.0, "set_shift": 3.0}, 1, STEPS),
    ),
)


def ltx2_mu(video_sequence_length: int) -> float:
    """sglang's `calculate_ltx2_shift` (ltx_2_pipeline.py): mu interpolated between 0.95 at 1024 tokens and 2.05 at
    4096, as `prepare_ltx2_mu` gives it for a request's latent video sequence length."""
    slope = (2.05 - 0.95) / (4096 - 1024)
    return video_sequence_length * slope + (0.95 - slope * 1024)


def ltx2_sigmas(steps: int) -> dict[str, np.ndarray]:
    """LTX-2's `prepare_sigmas` (configs/pipeline_configs/ltx_2.py): `[1.0 - i / n for i in range(n)]`."""
    return {"sigmas": np.array([1.0 - i / steps for i in range(steps)])}


#: sglang's pinned tables, passed without mu (taken as they are): the two-stage pipelines' distilled stage 2
#: (`STAGE_2_DISTILLED_SIGMA_VALUES`, configs/pipeline_configs/ltx_2.py) and LTX-2.5's distilled DiT
#: (`LTX25_DISTILLED_SIGMA_VALUES`, configs/pipeline_configs/ltx_2_5.py); as many from a linspace for other counts.
LTX2_STAGE_2 = (0.909375, 0.725, 0.421875, 0.0)
LTX25_DISTILLED = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)


def pinned(table: tuple[float, ...]) -> Any:
    def sigmas(steps: int) -> dict[str, np.ndarray]:
        values = np.array(table) if steps == len(table) else np.linspace(table[0], table[-1], steps)
        return {"sigmas": values}

    return sigmas


# LTX-2's scheduler config: `LTX2FlowMatchScheduler.from_config(checkpoint config, **overrides)`; the dev (full) DiT's
# overrides are use_dynamic_shifting=True, shift_terminal=0.1 over the checkpoint's LTX-Video keys (`LTX`); the
# distilled checkpoints' config has no dynamic shift (LTX-2.5's pipeline config: "use_dynamic_shifting: false").
# 121 frames of 512x768 (LTX-2's sampling defaults): 16 x 16 x 24 = 6144 latent tokens.
SGLANG_LTX2_FLOW_MATCH = Spec(
    fs.SglangLTX2FlowMatch,
    configs=(
        Config("ltx2-dev-121x512x768", LTX, Schedule(steps=40, mu=ltx2_mu(6144), custom=ltx2_sigmas)),
        # 24576 tokens (16 x 32 x 48: 121 frames of 1024x1536), mu 9.38: sglang's float32 shift is furthest off here.
        Config("ltx2-dev-24576-tokens", LTX, Schedule(steps=40, mu=ltx2_mu(24576), custom=ltx2_sigmas)),
        Config("ltx2-stage-2-distilled", LTX, Schedule(steps=4, custom=pinned(LTX2_STAGE_2))),
        Config("ltx25-distilled", {}, Schedule(steps=8, custom=pinned(LTX25_DISTILLED))),
        Config("ltx2-dev-steps", LTX, Schedule(steps=30, mu=2.05)),
        Config("static-shift-custom-sigmas-mu", {"shift": 3.0}, Schedule(steps=20, mu=0.5, custom=ltx2_sigmas)),
        Config("karras-dynamic", {**LTX, "use_karras_sigmas": True}, Schedule(steps=20, mu=1.0)),
        Config("linear-time-shift", {**LTX, "time_shift_type": "linear"}, Schedule(mu=1.5, custom=ltx2_sigmas)),
        Config("inverted-verbatim", {"invert_sigmas": True}, Schedule(steps=10, custom=ltx2_sigmas)),
    ),
    orders=(Order("euler", {}, 1, STEPS),),
)

MOSS_IMAGE = Spec(
    fs.MOSSImage,
    configs=(
        Config("moss-image", {}, Schedule(steps=50)),  # MOSS-Image: shift 5, training shift 1, 50 steps
        Config("moss-image-28", {}, Schedule(steps=28)),
        Config("shift-3", {"shift": 3.0}, Schedule(steps=10)),
        Config("training-shift-3", {"training_shift": 3.0}, Schedule(steps=30)),
        Config("shift-12", {"shift": 12.0}, Schedule(steps=40)),
    ),
    orders=(Order("euler", {"shift": 1.0}, 1, STEPS),),
)
