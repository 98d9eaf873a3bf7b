"""Tiny, randomly initialised diffusers components built offline from config (no hub download), shared by the
pipeline tests: each builder seeds torch, so every call returns the same weights, and caches its parts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import diffusers
import torch
import transformers  # noqa: F401  (diffusers' pipeline classes are import-time dummies without it)

SEED = 0


def _embeds(*shapes: tuple[int, ...], seed: int = 1234) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for shape in shapes]


def _seeded(build: Callable[[], torch.nn.Module], seed: int = SEED) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build().eval()


@functools.cache
def sd_parts() -> dict[str, Any]:
    unet = _seeded(
        lambda: diffusers.UNet2DConditionModel(
            block_out_channels=(4, 8),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8,
            norm_num_groups=2,
            attention_head_dim=2,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKL(
            block_out_channels=(4, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=2,
            sample_size=32,
        )
    )
    prompt, negative = _embeds((1, 7, 8), (1, 7, 8))
    return {"unet": unet, "vae": vae, "prompt_embeds": prompt, "negative_prompt_embeds": negative}


def sd_pipeline(scheduler: Any, cls: type | None = None) -> Any:
    """A StableDiffusionPipeline (or `cls`, e.g. the img2img one) over the tiny parts, with no text encoder."""
    parts = sd_parts()
    pipe = (cls or diffusers.StableDiffusionPipeline)(
        vae=parts["vae"],
        unet=parts["unet"],
        scheduler=scheduler,
        text_encoder=None,
        tokenizer=None,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.cache
def flux_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    )
    prompt, pooled = _embeds((1, 7, 32), (1, 32))
    return {"transformer": transformer, "vae": vae, "prompt_embeds": prompt, "pooled_prompt_embeds": pooled}


def flux_pipeline(scheduler: Any) -> Any:
    """A FluxPipeline over the tiny parts, with no text encoders."""
    parts = flux_parts()
    pipe = diffusers.FluxPipeline(
        scheduler=scheduler,
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=parts["transformer"],
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.cache
def wan_parts() -> dict[str, Any]:
    vae = _seeded(
        lambda: diffusers.AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    )

    def transformer(seed: int) -> torch.nn.Module:
        return _seeded(
            lambda: diffusers.WanTransformer3DModel(
                patch_size=(1, 2, 2),
                num_attention_heads=2,
                attention_head_dim=12,
                in_channels=16,
                out_channels=16,
                text_dim=32,
                freq_dim=256,
                ffn_dim=32,
                num_layers=2,
                cross_attn_norm=True,
                qk_norm="rms_norm_across_heads",
                rope_max_seq_len=32,
            ),
            seed,
        )

    prompt, negative = _embeds((1, 7, 32), (1, 7, 32))
    return {
        "transformer": transformer(SEED),
        "transformer_2": transformer(SEED + 1),  # Wan 2.2's low-noise expert
        "vae": vae,
        "prompt_embeds": prompt,
        "negative_prompt_embeds": negative,
    }


def wan_pipeline(scheduler: Any, **two_experts: Any) -> Any:
    """A WanPipeline over the tiny parts; `transformer_2=..., boundary_ratio=...` make it Wan 2.2's."""
    parts = wan_parts()
    pipe = diffusers.WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=parts["vae"],
        transformer=parts["transformer"],
        scheduler=scheduler,
        **two_experts,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.cache
def sd3_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    )
    prompt, negative, pooled, negative_pooled = _embeds((1, 7, 32), (1, 7, 32), (1, 64), (1, 64))
    return {
        "transformer": transformer,
        "vae": vae,
        "prompt_embeds": prompt,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }
