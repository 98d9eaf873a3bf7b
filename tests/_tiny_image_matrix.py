"""Tiny image pipelines for the scheduler matrix: one builder per diffusers image pipeline whose default scheduler is
FlowMatchEulerDiscrete, DPMSolverMultistep or UniPCMultistep.

Each builder returns `(factory, call_kwargs, scheduler)`: `factory(scheduler)` builds the pipeline around that
scheduler, from tiny randomly initialised components (seeded, built offline from config, cached, so both runs share
the same weights); `call_kwargs` are the pipeline call's arguments with precomputed prompt embeddings in place of
text encoders and tokenizers (no `generator`: the test adds a fresh one per run); `scheduler` is the diffusers
scheduler to start from, configured like the pipeline's published checkpoints where the builder says so (Flux's and
Qwen-Image's dynamic shifting, CogView4's linear time shift, Sana's DPM-Solver over flow sigmas, ...), otherwise
plainly. The tiny configs follow the `get_dummy_components()` of diffusers' own pipeline tests, shrunk where they
were not tiny; where a pipeline snaps every request to a large size, the factory sets a small one on the pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import _tiny_pipelines as tiny
import diffusers
import numpy as np
import PIL.Image
import torch
import transformers  # noqa: F401  (diffusers' pipeline classes are import-time dummies without it)
from _tiny_pipelines import _embeds, _seeded

SEED = tiny.SEED  # the seed every builder and run uses

STEPS = 3

Built = tuple["PipelineFactory", dict[str, Any], Any]

#: Image pipelines with one of the three default schedulers that this matrix cannot run offline, and why.
CANNOT_RUN_OFFLINE: dict[str, str] = {
    "OmniGenPipeline": (
        "its multimodal processor is only defined when torchvision is installed (it is not), and it takes no prompt "
        "embeddings: it needs its Llama tokenizer, whose files are on the hub"
    ),
    "BriaFiboPipeline": "no prompt-embedding argument: it needs its SmolLM3 text encoder's tokenizer from the hub",
    "Ideogram4Pipeline": "no prompt-embedding argument: it needs its text encoder's tokenizer from the hub",
    "DreamLitePipeline": "no prompt-embedding argument: it needs its vision-language processor from the hub",
    "SanaSprintPipeline": (
        "annotated with DPMSolverMultistepScheduler, but it only runs with SCMScheduler: it reads "
        "`scheduler.config.sigma_data` and unpacks `(latents, denoised)` from `step`"
    ),
    "SanaSprintImg2ImgPipeline": "like SanaSprintPipeline, it only runs with SCMScheduler (`sigma_data`, `denoised`)",
}


# ------------------------------------------------------------------------------------------------ helpers
def _image(size: int = 32, seed: int = 7) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def _mask(size: int = 32) -> PIL.Image.Image:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return PIL.Image.fromarray(mask).convert("RGB")


def _ones(*shape: int) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.long)


@dataclasses.dataclass(frozen=True)
class PipelineFactory:
    """Builds `cls(scheduler=scheduler, **components)`, then sets `attributes` on it (e.g. a smaller default size)."""

    cls: type
    components: dict[str, Any]
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, scheduler: Any) -> Any:
        pipe = self.cls(scheduler=scheduler, **self.components)
        for name, value in self.attributes.items():
            setattr(pipe, name, value)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def with_components(self, **components: Any) -> PipelineFactory:
        return dataclasses.replace(self, components={**self.components, **components})


def _factory(cls: type, attributes: dict[str, Any] | None = None, **components: Any) -> PipelineFactory:
    return PipelineFactory(cls, components, attributes or {})


@functools.cache
def _kl_vae(latent_channels: int) -> torch.nn.Module:
    """A one-block AutoencoderKL (scale factor 1): 32x32 images are 32x32 latents."""
    return _seeded(
        lambda: diffusers.AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    )


@functools.cache
def _kl_vae_x2(latent_channels: int) -> torch.nn.Module:
    """A two-block AutoencoderKL (scale factor 2), for pipelines that need a VAE scale factor above 1."""
    return _seeded(
        lambda: diffusers.AutoencoderKL(
            block_out_channels=(4, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=latent_channels,
            norm_num_groups=2,
            sample_size=32,
        )
    )


def _flow(**config: Any) -> diffusers.FlowMatchEulerDiscreteScheduler:
    return diffusers.FlowMatchEulerDiscreteScheduler(**config)


#: FLUX.1-dev's scheduler config (dynamic shifting: the Flux-style pipelines pass `mu` and custom `sigmas`).
FLUX_SHIFTING = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


# ------------------------------------------------------------------------------------------------ Bria
@functools.cache
def _bria_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.BriaTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=None,
            axes_dims_rope=[0, 4, 4],
        )
    )
    vae = _kl_vae_x2(4)
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": vae, "prompt_embeds": prompt, "negative_prompt_embeds": negative}


def bria(dynamic: bool = True) -> Built:
    """BriaPipeline; with dynamic shifting it takes its `isinstance(scheduler, FlowMatchEuler...)` branch (`mu`)."""
    parts = _bria_parts()
    factory = _factory(
        diffusers.BriaPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        image_encoder=None,
        feature_extractor=None,
    )
    call = {
        "prompt_embeds": parts["prompt_embeds"],
        "negative_prompt_embeds": parts["negative_prompt_embeds"],
        "max_sequence_length": 8,
        "guidance_scale": 5.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    config = {"shift": 3.0, "use_dynamic_shifting": True} if dynamic else {}
    return factory, call, _flow(**config)


def bria_static() -> Built:
    """BriaPipeline without dynamic shifting: its `get_original_sigmas` custom-sigmas branch."""
    return bria(dynamic=False)


# ------------------------------------------------------------------------------------------------ HiDream
@functools.cache
def _hidream_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.HiDreamImageTransformer2DModel(
            patch_size=2,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_channels=[32, 16],
            text_emb_dim=64,
            num_routed_experts=4,
            num_activated_experts=2,
            axes_dims_rope=(4, 2, 2),
            max_resolution=(32, 32),
            llama_layers=(0, 1),
        )
    )
    t5, t5_negative, llama, llama_negative, pooled, pooled_negative = _embeds(
        (1, 8, 32), (1, 8, 32), (2, 1, 8, 16), (2, 1, 8, 16), (1, 64), (1, 64)
    )
    return {
        "transformer": transformer,
        "vae": _kl_vae_x2(4),
        "embeds": {
            "prompt_embeds_t5": t5,
            "negative_prompt_embeds_t5": t5_negative,
            "prompt_embeds_llama3": llama,
            "negative_prompt_embeds_llama3": llama_negative,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": pooled_negative,
        },
    }


def _hidream(scheduler: Any) -> Built:
    parts = _hidream_parts()
    encoders = {f"{kind}{suffix}": None for kind in ("text_encoder", "tokenizer") for suffix in ("", "_2", "_3", "_4")}
    factory = _factory(
        diffusers.HiDreamImagePipeline,
        # The pipeline rescales every request to `default_sample_size` latents a side (128): keep it tiny.
        attributes={"default_sample_size": 16},
        transformer=parts["transformer"],
        vae=parts["vae"],
        **encoders,
    )
    call = {
        **parts["embeds"],
        "guidance_scale": 5.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, scheduler


def hidream() -> Built:
    """HiDreamImagePipeline with FlowMatchEuler: `retrieve_timesteps(..., mu=...)` (unused without dynamic shifting)."""
    return _hidream(_flow(shift=6.0))


def hidream_unipc() -> Built:
    """HiDreamImagePipeline with UniPC over flow sigmas: its `isinstance(scheduler, UniPCMultistepScheduler)` branch."""
    return _hidream(
        diffusers.UniPCMultistepScheduler(
            flow_shift=3.0, prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=False
        )
    )


# ------------------------------------------------------------------------------------------------ SD3
@functools.cache
def _sd3_inpaint_parts() -> dict[str, Any]:
    """SD3 parts with 16 latent channels (the inpaint pipeline requires a 16- or 33-channel transformer)."""
    transformer = _seeded(
        lambda: diffusers.SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=16,
        )
    )
    embeds = {key: value for key, value in tiny.sd3_parts().items() if key.endswith("embeds")}
    return {"transformer": transformer, "vae": _kl_vae(16), **embeds}


def _sd3(cls: type, parts: dict[str, Any] | None = None, **extra: Any) -> Built:
    parts = parts or tiny.sd3_parts()
    encoders = {f"{kind}{suffix}": None for kind in ("text_encoder", "tokenizer") for suffix in ("", "_2", "_3")}
    factory = _factory(cls, transformer=parts["transformer"], vae=parts["vae"], **encoders)
    call = {
        **{key: value for key, value in parts.items() if key.endswith("embeds")},
        "guidance_scale": 3.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": 4,
        "output_type": "latent",
        **extra,
    }
    return factory, call, _flow(shift=3.0)


def sd3_img2img() -> Built:
    return _sd3(diffusers.StableDiffusion3Img2ImgPipeline, image=_image(), strength=0.8)


def sd3_inpaint() -> Built:
    return _sd3(
        diffusers.StableDiffusion3InpaintPipeline,
        _sd3_inpaint_parts(),
        image=_image(),
        mask_image=_mask(),
        strength=0.8,
    )


# ------------------------------------------------------------------------------------------------ Flux family
@functools.cache
def _flux_transformer(in_channels: int, out_channels: int | None = None) -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.FluxTransformer2DModel(
            patch_size=1,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        )
    )


def _flux(cls: type, transformer: torch.nn.Module, vae: torch.nn.Module, **extra: Any) -> Built:
    parts = tiny.flux_parts()
    factory = _factory(
        cls,
        vae=vae,
        transformer=transformer,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    call = {
        "prompt_embeds": parts["prompt_embeds"],
        "pooled_prompt_embeds": parts["pooled_prompt_embeds"],
        "guidance_scale": 3.5,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        **extra,
    }
    return factory, call, _flow(**FLUX_SHIFTING)


def flux_img2img() -> Built:
    parts = tiny.flux_parts()
    return _flux(diffusers.FluxImg2ImgPipeline, parts["transformer"], parts["vae"], image=_image(), strength=0.8)


def flux_inpaint() -> Built:
    return _flux(
        diffusers.FluxInpaintPipeline,
        _flux_transformer(8),
        _kl_vae(2),
        image=_image(),
        mask_image=_mask(),
        strength=0.8,
    )


def flux_fill() -> Built:
    # Packed latents (2 channels x 2x2) + packed masked-image latents (8) + the packed mask (4).
    return _flux(
        diffusers.FluxFillPipeline,
        _flux_transformer(20, 8),
        _kl_vae(2),
        image=_image(),
        mask_image=_mask(),
    )


def flux_kontext() -> Built:
    parts = tiny.flux_parts()
    return _flux(
        diffusers.FluxKontextPipeline,
        parts["transformer"],
        parts["vae"],
        image=_image(),
        max_area=32 * 32,
        _auto_resize=False,
    )


def flux_control() -> Built:
    return _flux(
        diffusers.FluxControlPipeline, _flux_transformer(8, 4), tiny.flux_parts()["vae"], control_image=_image()
    )


# ------------------------------------------------------------------------------------------------ Lumina
@functools.cache
def _lumina2_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.Lumina2Transformer2DModel(
            sample_size=4,
            patch_size=2,
            in_channels=4,
            hidden_size=8,
            num_layers=2,
            num_attention_heads=1,
            num_kv_heads=1,
            multiple_of=16,
            ffn_dim_multiplier=None,
            norm_eps=1e-5,
            scaling_factor=1.0,
            axes_dim_rope=[4, 2, 2],
            cap_feat_dim=8,
        )
    )
    prompt, negative = _embeds((1, 8, 8), (1, 8, 8))
    return {"transformer": transformer, "vae": _kl_vae(4), "prompt": prompt, "negative": negative}


def lumina2() -> Built:
    parts = _lumina2_parts()
    factory = _factory(
        diffusers.Lumina2Pipeline, transformer=parts["transformer"], vae=parts["vae"], text_encoder=None, tokenizer=None
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_attention_mask": _ones(1, 8),
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_attention_mask": _ones(1, 8),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=6.0)


@functools.cache
def _lumina_next_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.LuminaNextDiT2DModel(
            sample_size=4,
            patch_size=2,
            in_channels=4,
            hidden_size=4,
            num_layers=2,
            num_attention_heads=1,
            num_kv_heads=1,
            multiple_of=16,
            ffn_dim_multiplier=None,
            norm_eps=1e-5,
            learn_sigma=True,
            qk_norm=True,
            cross_attention_dim=8,
            scaling_factor=1.0,
        )
    )
    prompt, negative = _embeds((1, 8, 8), (1, 8, 8))
    return {"transformer": transformer, "vae": _kl_vae(4), "prompt": prompt, "negative": negative}


def lumina_next() -> Built:
    """LuminaPipeline (Lumina-Next); its VAE scale factor is fixed at 8, so 32x32 images are 4x4 latents."""
    parts = _lumina_next_parts()
    factory = _factory(
        diffusers.LuminaPipeline, transformer=parts["transformer"], vae=parts["vae"], text_encoder=None, tokenizer=None
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_attention_mask": _ones(1, 8),
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_attention_mask": _ones(1, 8),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow()


# ------------------------------------------------------------------------------------------------ CogView4
@functools.cache
def _cogview4_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.CogView4Transformer2DModel(
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=4,
            num_attention_heads=4,
            out_channels=4,
            text_embed_dim=32,
            time_embed_dim=8,
            condition_dim=4,
        )
    )
    prompt, negative = _embeds((1, 16, 32), (1, 16, 32))
    return {"transformer": transformer, "vae": _kl_vae_x2(4), "prompt": prompt, "negative": negative}


def cogview4() -> Built:
    """CogView4Pipeline: passes custom `timesteps` and `sigmas` together, with `mu` (linear time shift)."""
    parts = _cogview4_parts()
    factory = _factory(
        diffusers.CogView4Pipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "negative_prompt_embeds": parts["negative"],
        "guidance_scale": 5.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    scheduler = _flow(
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    return factory, call, scheduler


# ------------------------------------------------------------------------------------------------ AuraFlow
@functools.cache
def _aura_flow_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.AuraFlowTransformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=4,
            num_mmdit_layers=1,
            num_single_dit_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            out_channels=4,
            pos_embed_max_size=256,
        )
    )
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": _kl_vae_x2(4), "prompt": prompt, "negative": negative}


def aura_flow() -> Built:
    parts = _aura_flow_parts()
    factory = _factory(
        diffusers.AuraFlowPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_attention_mask": _ones(1, 8),
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_attention_mask": _ones(1, 8),
        "guidance_scale": 3.5,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=1.73)


# ------------------------------------------------------------------------------------------------ Chroma
@functools.cache
def _chroma_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.ChromaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            axes_dims_rope=[4, 4, 8],
            approximator_hidden_dim=32,
            approximator_layers=1,
            approximator_num_channels=16,
        )
    )
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": tiny.flux_parts()["vae"], "prompt": prompt, "negative": negative}


def _chroma(cls: type, **extra: Any) -> Built:
    parts = _chroma_parts()
    factory = _factory(
        cls,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        image_encoder=None,
        feature_extractor=None,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_attention_mask": torch.ones(1, 8),  # Chroma's masks are float (in the embeddings' dtype)
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_attention_mask": torch.ones(1, 8),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        **extra,
    }
    return factory, call, _flow(**FLUX_SHIFTING)


def chroma() -> Built:
    return _chroma(diffusers.ChromaPipeline)


def chroma_img2img() -> Built:
    return _chroma(diffusers.ChromaImg2ImgPipeline, image=_image(), strength=0.8)


# ------------------------------------------------------------------------------------------------ QwenImage
@functools.cache
def _qwenimage_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=4,
            dim_mult=[1, 2, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
    )
    prompt, negative = _embeds((1, 8, 16), (1, 8, 16))
    return {"transformer": transformer, "vae": vae, "prompt": prompt, "negative": negative}


#: Qwen-Image's scheduler config: exponential dynamic shifting pinned at ln(3), with a shift terminal.
QWEN_SCHEDULER = {
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": float(np.log(3.0)),
    "max_shift": float(np.log(3.0)),
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
}


def _qwenimage(cls: type, size: int = 32, vae: torch.nn.Module | None = None, **extra: Any) -> Built:
    parts = _qwenimage_parts()
    components: dict[str, Any] = {"text_encoder": None, "tokenizer": None}
    if cls is diffusers.QwenImageEditPipeline:
        components["processor"] = None
    factory = _factory(cls, transformer=parts["transformer"], vae=vae or parts["vae"], **components)
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_embeds_mask": _ones(1, 8),
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_embeds_mask": _ones(1, 8),
        "true_cfg_scale": 4.0,
        "height": size,
        "width": size,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        **extra,
    }
    return factory, call, _flow(**QWEN_SCHEDULER)


def qwenimage() -> Built:
    return _qwenimage(diffusers.QwenImagePipeline)


def qwenimage_img2img() -> Built:
    return _qwenimage(diffusers.QwenImageImg2ImgPipeline, image=_image(), strength=0.8)


def qwenimage_inpaint() -> Built:
    return _qwenimage(diffusers.QwenImageInpaintPipeline, image=_image(), mask_image=_mask(), strength=0.8)


@functools.cache
def _qwenimage_edit_vae() -> torch.nn.Module:
    """A cheap QwenImage VAE (scale factor 16, no residual blocks) for the edit pipeline's ~1024x1024 input."""
    return _seeded(
        lambda: diffusers.AutoencoderKLQwenImage(
            base_dim=4,
            z_dim=4,
            dim_mult=[1, 1, 1, 1, 1],
            num_res_blocks=0,
            temperal_downsample=[False, False, False, False],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
    )


def qwenimage_edit() -> Built:
    """QwenImageEditPipeline: it resizes the edit image to a ~1024x1024 area for the VAE, whatever the output size."""
    return _qwenimage(diffusers.QwenImageEditPipeline, size=64, vae=_qwenimage_edit_vae(), image=_image())


# ------------------------------------------------------------------------------------------------ Z-Image
@functools.cache
def _z_image_parts() -> dict[str, Any]:
    def build() -> torch.nn.Module:
        transformer = diffusers.ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=4,
            dim=32,
            n_layers=1,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            norm_eps=1e-5,
            qk_norm=True,
            cap_feat_dim=16,
            rope_theta=256.0,
            t_scale=1000.0,
            axes_dims=[8, 4, 4],
            axes_lens=[256, 32, 32],
        )
        with torch.no_grad():  # built with `torch.empty`: fix them, or they may hold NaNs
            transformer.x_pad_token.fill_(1.0)
            transformer.cap_pad_token.fill_(1.0)
        return transformer

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
            scaling_factor=0.3611,
            shift_factor=0.1159,  # the img2img and inpaint pipelines use it
        )
    )
    prompt, negative = _embeds((8, 16), (8, 16))
    return {"transformer": _seeded(build), "vae": vae, "prompt": prompt, "negative": negative}


def z_image() -> Built:
    parts = _z_image_parts()
    factory = _factory(
        diffusers.ZImagePipeline, transformer=parts["transformer"], vae=parts["vae"], text_encoder=None, tokenizer=None
    )
    call = {
        "prompt_embeds": [parts["prompt"]],
        "negative_prompt_embeds": [parts["negative"]],
        "guidance_scale": 3.0,
        "cfg_normalization": False,
        "cfg_truncation": 1.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=3.0)


# ------------------------------------------------------------------------------------------------ Sana, PixArt
@functools.cache
def _sana_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=8,
            sample_size=32,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=[1, 1],
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        )
    )
    prompt, negative = _embeds((1, 8, 8), (1, 8, 8))
    return {"transformer": transformer, "vae": vae, "prompt": prompt, "negative": negative}


def _sana(scheduler: Any) -> Built:
    parts = _sana_parts()
    factory = _factory(
        diffusers.SanaPipeline, transformer=parts["transformer"], vae=parts["vae"], text_encoder=None, tokenizer=None
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_attention_mask": _ones(1, 8),
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_attention_mask": _ones(1, 8),
        "negative_prompt": None,  # its default, "", may not be given with `negative_prompt_embeds`
        "guidance_scale": 4.5,
        "height": 32,
        "width": 32,
        "use_resolution_binning": False,
        "complex_human_instruction": None,
        "num_inference_steps": 4,
        "output_type": "latent",
    }
    return factory, call, scheduler


def sana() -> Built:
    """SanaPipeline with its checkpoints' scheduler: DPM-Solver++ over flow sigmas (flow prediction)."""
    return _sana(
        diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++",
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=3.0,
            solver_order=2,
        )
    )


def sana_flow_match() -> Built:
    """SanaPipeline with FlowMatchEuler (what diffusers' Sana tests build it with)."""
    return _sana(_flow(shift=7.0))


@functools.cache
def _pixart_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.PixArtTransformer2DModel(
            sample_size=8,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=32,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        )
    )
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": _kl_vae_x2(4), "prompt": prompt, "negative": negative}


def _pixart(cls: type) -> Built:
    parts = _pixart_parts()
    factory = _factory(cls, transformer=parts["transformer"], vae=parts["vae"], text_encoder=None, tokenizer=None)
    call = {
        "prompt_embeds": parts["prompt"],
        "prompt_attention_mask": _ones(1, 8),
        "negative_prompt_embeds": parts["negative"],
        "negative_prompt_attention_mask": _ones(1, 8),
        "negative_prompt": None,  # its default, "", may not be given with `negative_prompt_embeds`
        "guidance_scale": 4.5,
        "height": 16,
        "width": 16,
        "use_resolution_binning": False,
        "num_inference_steps": 4,
        "output_type": "latent",
    }
    scheduler = diffusers.DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    return factory, call, scheduler


def pixart_sigma() -> Built:
    """PixArtSigmaPipeline with DPM-Solver++ over linear betas; the model predicts noise and variance."""
    return _pixart(diffusers.PixArtSigmaPipeline)


def pixart_alpha() -> Built:
    return _pixart(diffusers.PixArtAlphaPipeline)


# ------------------------------------------------------------------------------------------------ more variants
def flux_kontext_inpaint() -> Built:
    parts = tiny.flux_parts()
    return _flux(
        diffusers.FluxKontextInpaintPipeline,
        parts["transformer"],
        parts["vae"],
        image=_image(),
        mask_image=_mask(),
        strength=0.8,
        max_area=32 * 32,
        _auto_resize=False,
    )


def flux_control_img2img() -> Built:
    return _flux(
        diffusers.FluxControlImg2ImgPipeline,
        _flux_transformer(8, 4),
        tiny.flux_parts()["vae"],
        image=_image(),
        control_image=_image(seed=8),
        strength=0.8,
    )


def flux_control_inpaint() -> Built:
    return _flux(
        diffusers.FluxControlInpaintPipeline,
        _flux_transformer(8, 4),
        tiny.flux_parts()["vae"],
        image=_image(),
        mask_image=_mask(),
        control_image=_image(seed=8),
        strength=0.8,
    )


@functools.cache
def _flux_controlnet() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.FluxControlNetModel(
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


def flux_controlnet() -> Built:
    parts = tiny.flux_parts()
    factory, call, scheduler = _flux(
        diffusers.FluxControlNetPipeline,
        parts["transformer"],
        parts["vae"],
        control_image=_image(),
        controlnet_conditioning_scale=0.5,
    )
    return factory.with_components(controlnet=_flux_controlnet()), call, scheduler


@functools.cache
def _cogview4_control_transformer() -> torch.nn.Module:
    """CogView4's transformer taking the latents and the control image's latents, concatenated (8 channels)."""
    return _seeded(
        lambda: diffusers.CogView4Transformer2DModel(
            patch_size=2,
            in_channels=8,
            num_layers=2,
            attention_head_dim=4,
            num_attention_heads=4,
            out_channels=4,
            text_embed_dim=32,
            time_embed_dim=8,
            condition_dim=4,
        )
    )


def cogview4_control() -> Built:
    parts = _cogview4_parts()
    factory = _factory(
        diffusers.CogView4ControlPipeline,
        transformer=_cogview4_control_transformer(),
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    _, call, scheduler = cogview4()
    return factory, {**call, "control_image": _image()}, scheduler


@functools.cache
def _sd3_controlnet() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.SD3ControlNetModel(
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


def sd3_controlnet() -> Built:
    factory, call, scheduler = _sd3(
        diffusers.StableDiffusion3ControlNetPipeline,
        control_image=torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)),
        controlnet_conditioning_scale=0.5,
    )
    factory = factory.with_components(controlnet=_sd3_controlnet(), image_encoder=None, feature_extractor=None)
    return factory, call, scheduler


def sd3_pag() -> Built:
    factory, call, scheduler = _sd3(diffusers.StableDiffusion3PAGPipeline, pag_scale=3.0)
    return factory.with_components(pag_applied_layers="blocks.0"), call, scheduler


def sana_pag() -> Built:
    parts = _sana_parts()
    factory = _factory(
        diffusers.SanaPAGPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        pag_applied_layers="transformer_blocks.0",
    )
    _, call, scheduler = sana()
    return factory, {**call, "pag_scale": 3.0}, scheduler


@functools.cache
def _sana_controlnet() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.SanaControlNetModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=8,
            sample_size=32,
        )
    )


def sana_controlnet() -> Built:
    parts = _sana_parts()
    factory = _factory(
        diffusers.SanaControlNetPipeline,
        transformer=parts["transformer"],
        controlnet=_sana_controlnet(),
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    _, call, scheduler = sana()
    control = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    return factory, {**call, "control_image": control, "controlnet_conditioning_scale": 1.0}, scheduler


def z_image_img2img() -> Built:
    _, call, scheduler = z_image()
    parts = _z_image_parts()
    factory = _factory(
        diffusers.ZImageImg2ImgPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    return factory, {**call, "image": _image(), "strength": 0.8}, scheduler


def z_image_inpaint() -> Built:
    _, call, scheduler = z_image()
    parts = _z_image_parts()
    factory = _factory(
        diffusers.ZImageInpaintPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    return factory, {**call, "image": _image(), "mask_image": _mask(), "strength": 0.8}, scheduler


# ------------------------------------------------------------------------------------------------ Flux 2
@functools.cache
def _flux2_parts() -> dict[str, Any]:
    def transformer(guidance: bool) -> torch.nn.Module:
        return _seeded(
            lambda: diffusers.Flux2Transformer2DModel(
                patch_size=1,
                in_channels=4,
                num_layers=1,
                num_single_layers=1,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=16,
                timestep_guidance_channels=256,
                axes_dims_rope=[4, 4, 4, 4],
                guidance_embeds=guidance,
            )
        )

    vae = _seeded(
        lambda: diffusers.AutoencoderKLFlux2(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    )
    prompt, negative = _embeds((1, 8, 16), (1, 8, 16))
    return {
        "transformer": transformer(True),
        "klein_transformer": transformer(False),
        "vae": vae,
        "prompt": prompt,
        "negative": negative,
    }


#: Dynamic shifting for the FLUX.2 pipelines (they compute `mu` from the image sequence length and the step count).
FLUX2_SCHEDULER = {"shift": 3.0, "use_dynamic_shifting": True, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def flux2() -> Built:
    parts = _flux2_parts()
    factory = _factory(
        diffusers.Flux2Pipeline, transformer=parts["transformer"], vae=parts["vae"], text_encoder=None, tokenizer=None
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**FLUX2_SCHEDULER)


def flux2_klein() -> Built:
    parts = _flux2_parts()
    factory = _factory(
        diffusers.Flux2KleinPipeline,
        transformer=parts["klein_transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        is_distilled=False,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "negative_prompt_embeds": parts["negative"],
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**FLUX2_SCHEDULER)


# ------------------------------------------------------------------------------------------------ newer models
@functools.cache
def _ovis_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.OvisImageTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            axes_dims_rope=(4, 4, 8),
        )
    )
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": tiny.flux_parts()["vae"], "prompt": prompt, "negative": negative}


def ovis_image() -> Built:
    parts = _ovis_parts()
    factory = _factory(
        diffusers.OvisImagePipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "negative_prompt": None,  # its default, "", may not be given with `negative_prompt_embeds`
        "negative_prompt_embeds": parts["negative"],
        "guidance_scale": 5.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**FLUX_SHIFTING)


@functools.cache
def _krea2_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.Krea2Transformer2DModel(
            in_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=32,
            timestep_embed_dim=8,
            text_hidden_dim=16,
            num_text_layers=3,
            text_num_attention_heads=2,
            text_num_key_value_heads=1,
            text_intermediate_size=16,
            num_layerwise_text_blocks=1,
            num_refiner_text_blocks=1,
            axes_dims_rope=(4, 2, 2),
            rope_theta=1000.0,
        )
    )


def krea2() -> Built:
    factory = _factory(
        diffusers.Krea2Pipeline,
        transformer=_krea2_transformer(),
        vae=_qwenimage_parts()["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_select_layers=(0, 1, 2),
    )
    prompt, negative = _embeds((1, 8, 3, 16), (1, 8, 3, 16))
    call = {
        "prompt_embeds": prompt,
        "prompt_embeds_mask": torch.ones(1, 8, dtype=torch.bool),
        "negative_prompt_embeds": negative,
        "negative_prompt_embeds_mask": torch.ones(1, 8, dtype=torch.bool),
        "guidance_scale": 3.0,
        "height": 32,
        "width": 32,
        "max_sequence_length": 8,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    scheduler = _flow(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=6400
    )
    return factory, call, scheduler


@functools.cache
def _nucleus_transformer() -> torch.nn.Module:
    with warnings.catch_warnings():  # without MoE, it builds (and "initialises") a zero-element expert layer
        warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
        return _nucleus_build()


def _nucleus_build() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.NucleusMoEImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            axes_dims_rope=(8, 4, 4),
            moe_enabled=False,
            capacity_factors=[8.0],
        )
    )


def nucleus_moe() -> Built:
    factory = _factory(
        diffusers.NucleusMoEImagePipeline,
        transformer=_nucleus_transformer(),
        vae=_qwenimage_parts()["vae"],
        text_encoder=None,
        processor=None,
    )
    prompt, negative = _embeds((1, 8, 16), (1, 8, 16))
    call = {
        "prompt_embeds": prompt,
        "negative_prompt_embeds": negative,
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**QWEN_SCHEDULER)


@functools.cache
def _hunyuan_image_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.HunyuanImageTransformer2DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=4,
            attention_head_dim=8,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=(1, 1),
            guidance_embeds=False,
            text_embed_dim=32,
            text_embed_2_dim=32,
            rope_axes_dim=(4, 4),
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLHunyuanImage(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(32, 32, 32, 32),  # its norms have 32 groups
            layers_per_block=1,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            sample_size=64,
        )
    )
    embeds = _embeds((1, 8, 32), (1, 8, 32), (1, 4, 32), (1, 4, 32))
    return {"transformer": transformer, "vae": vae, "embeds": embeds}


def hunyuan_image() -> Built:
    """HunyuanImagePipeline (2.1): classifier-free guidance through its `guider`s (adaptive projected guidance)."""
    parts = _hunyuan_image_parts()
    factory = _factory(
        diffusers.HunyuanImagePipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        guider=diffusers.AdaptiveProjectedMixGuidance(adaptive_projected_guidance_start_step=2),
        ocr_guider=diffusers.AdaptiveProjectedMixGuidance(adaptive_projected_guidance_start_step=3),
    )
    prompt, negative, glyph, negative_glyph = parts["embeds"]
    call = {
        "prompt_embeds": prompt,
        "prompt_embeds_mask": _ones(1, 8),
        "negative_prompt_embeds": negative,
        "negative_prompt_embeds_mask": _ones(1, 8),
        "prompt_embeds_2": glyph,
        "prompt_embeds_mask_2": _ones(1, 4),
        "negative_prompt_embeds_2": negative_glyph,
        "negative_prompt_embeds_mask_2": _ones(1, 4),
        "height": 32,
        "width": 32,
        "num_inference_steps": 4,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=5.0)


@functools.cache
def _kandinsky5_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.Kandinsky5Transformer3DModel(
            in_visual_dim=16,
            in_text_dim=32,
            in_text_dim2=16,
            time_dim=16,
            out_visual_dim=16,
            patch_size=(1, 2, 2),
            model_dim=16,
            ff_dim=32,
            num_text_blocks=1,
            num_visual_blocks=1,
            axes_dims=(1, 1, 2),
            visual_cond=False,
            attention_type="regular",
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKL(
            block_out_channels=(4, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=16,
            norm_num_groups=2,
            sample_size=32,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            mid_block_add_attention=False,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    )
    return {"transformer": transformer, "vae": vae, "embeds": _embeds((1, 8, 32), (1, 8, 32), (1, 16), (1, 16))}


def kandinsky5_t2i() -> Built:
    parts = _kandinsky5_parts()
    factory = _factory(
        diffusers.Kandinsky5T2IPipeline,
        attributes={"resolutions": [(32, 32)]},  # it snaps every request to one of these (1024x1024 and up)
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    qwen, negative_qwen, clip, negative_clip = parts["embeds"]
    lengths = torch.tensor([0, 8], dtype=torch.int32)  # one prompt of 8 tokens
    call = {
        "prompt_embeds_qwen": qwen,
        "prompt_embeds_clip": clip,
        "prompt_cu_seqlens": lengths,
        "negative_prompt_embeds_qwen": negative_qwen,
        "negative_prompt_embeds_clip": negative_clip,
        "negative_prompt_cu_seqlens": lengths,
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=3.0)


@functools.cache
def _prx_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.PRXTransformer2DModel(
            patch_size=1,
            in_channels=4,
            context_in_dim=8,
            hidden_size=8,
            mlp_ratio=2.0,
            num_heads=2,
            depth=1,
            axes_dim=[2, 2],
        )
    )


def prx() -> Built:
    factory = _factory(
        diffusers.PRXPipeline, transformer=_prx_transformer(), vae=_kl_vae(4), text_encoder=None, tokenizer=None
    )
    prompt, negative = _embeds((1, 8, 8), (1, 8, 8))
    call = {
        "prompt_embeds": prompt,
        "prompt_attention_mask": _ones(1, 8),
        "negative_prompt_embeds": negative,
        "negative_prompt_attention_mask": _ones(1, 8),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "use_resolution_binning": False,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow()


class _NoGuardrail(diffusers.ModelMixin, diffusers.ConfigMixin):
    """A stand-in for Cosmos' safety checker (as in diffusers' own fast tests): passes every prompt and video."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_device_tracker", torch.zeros(1), persistent=False)

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray:
        return frames


@functools.cache
def _cosmos2_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.CosmosTransformer3DModel(
            in_channels=16,
            out_channels=16,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            mlp_ratio=2,
            text_embed_dim=32,
            adaln_lora_dim=4,
            max_size=(4, 32, 32),
            patch_size=(1, 2, 2),
            rope_scale=(2.0, 1.0, 1.0),
            concat_padding_mask=False,  # True resizes the padding mask with torchvision, which is not installed
            extra_pos_embed_type="learnable",
        )
    )
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": tiny.wan_parts()["vae"], "prompt": prompt, "negative": negative}


def cosmos2_text2image() -> Built:
    """Cosmos2TextToImagePipeline: registers EDM `sigma_min/sigma_max` on the scheduler's config, asks for increasing
    `sigmas` (`linspace(0, 1)`) with Karras sigmas, then sets `scheduler.sigmas[-1] = scheduler.sigmas[-2]` in place."""
    parts = _cosmos2_parts()
    factory = _factory(
        diffusers.Cosmos2TextToImagePipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        safety_checker=_NoGuardrail(),
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "negative_prompt_embeds": parts["negative"],
        "guidance_scale": 3.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(use_karras_sigmas=True)


@functools.cache
def _glm_image_parts() -> dict[str, Any]:
    # The transformer's patch size times the VAE's scale factor must be 16: its prior tokens are upsampled from d32.
    transformer = _seeded(
        lambda: diffusers.GlmImageTransformer2DModel(
            patch_size=2,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            text_embed_dim=32,
            time_embed_dim=16,
            condition_dim=8,
            prior_vq_quantizer_codebook_size=128,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKL(
            block_out_channels=(4, 4, 4, 4),
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=32,
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
    )
    prompt, negative = _embeds((1, 8, 32), (1, 8, 32))
    return {"transformer": transformer, "vae": vae, "prompt": prompt, "negative": negative}


def glm_image() -> Built:
    """GlmImagePipeline with precomputed prior (vision-language) tokens: 32x32 is 2x2 prior tokens of 16 pixels."""
    parts = _glm_image_parts()
    factory = _factory(
        diffusers.GlmImagePipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        processor=None,
        vision_language_encoder=None,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        "negative_prompt_embeds": parts["negative"],
        "prior_token_ids": torch.randint(0, 128, (1, 4), generator=torch.Generator().manual_seed(3)),
        "guidance_scale": 1.5,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    scheduler = _flow(
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    return factory, call, scheduler


# ------------------------------------------------------------------------------------------------ UNet pipelines
@functools.cache
def _sdxl_parts() -> dict[str, Any]:
    unet = _seeded(
        lambda: diffusers.UNet2DConditionModel(
            block_out_channels=(2, 4),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the 32-wide pooled embedding
            cross_attention_dim=64,
            norm_num_groups=1,
        )
    )
    prompt, negative, pooled, negative_pooled = _embeds((1, 8, 64), (1, 8, 64), (1, 32), (1, 32))
    return {
        "unet": unet,
        "vae": tiny.sd_parts()["vae"],
        "embeds": {
            "prompt_embeds": prompt,
            "negative_prompt_embeds": negative,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled,
        },
    }


def _sdxl(cls: type, scheduler: Any, **extra: Any) -> Built:
    parts = _sdxl_parts()
    factory = _factory(
        cls,
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        image_encoder=None,
        feature_extractor=None,
    )
    call = {
        **parts["embeds"],
        "guidance_scale": 5.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": 4,
        "output_type": "latent",
        **extra,
    }
    return factory, call, scheduler


SDXL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def sdxl() -> Built:
    """StableDiffusionXLPipeline with DPM++ 2M Karras (it takes any Karras scheduler)."""
    scheduler = diffusers.DPMSolverMultistepScheduler(**SDXL_SCHEDULER, use_karras_sigmas=True)
    return _sdxl(diffusers.StableDiffusionXLPipeline, scheduler)


def sdxl_img2img() -> Built:
    """StableDiffusionXLImg2ImgPipeline with UniPC: `strength` cuts the schedule (`set_begin_index`)."""
    scheduler = diffusers.UniPCMultistepScheduler(**SDXL_SCHEDULER)
    return _sdxl(diffusers.StableDiffusionXLImg2ImgPipeline, scheduler, image=_image(), strength=0.6)


def sd_inpaint() -> Built:
    """StableDiffusionInpaintPipeline (4-channel UNet: the mask blends the latents) with UniPC."""
    parts = tiny.sd_parts()
    factory = _factory(
        diffusers.StableDiffusionInpaintPipeline,
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    call = {
        "prompt_embeds": parts["prompt_embeds"],
        "negative_prompt_embeds": parts["negative_prompt_embeds"],
        "image": _image(),
        "mask_image": _mask(),
        "strength": 0.75,
        "guidance_scale": 3.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": 4,
        "output_type": "latent",
    }
    scheduler = diffusers.UniPCMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return factory, call, scheduler


# ------------------------------------------------------------------------------------------------ registry
BUILDERS: dict[str, Callable[[], Built]] = {
    "BriaPipeline (dynamic shifting)": bria,
    "BriaPipeline (static)": bria_static,
    "HiDreamImagePipeline (FlowMatchEuler)": hidream,
    "HiDreamImagePipeline (UniPC flow)": hidream_unipc,
    "StableDiffusion3Img2ImgPipeline": sd3_img2img,
    "StableDiffusion3InpaintPipeline": sd3_inpaint,
    "FluxImg2ImgPipeline": flux_img2img,
    "FluxInpaintPipeline": flux_inpaint,
    "FluxFillPipeline": flux_fill,
    "FluxKontextPipeline": flux_kontext,
    "FluxControlPipeline": flux_control,
    "Lumina2Pipeline": lumina2,
    "LuminaPipeline (Lumina-Next)": lumina_next,
    "CogView4Pipeline": cogview4,
    "AuraFlowPipeline": aura_flow,
    "ChromaPipeline": chroma,
    "ChromaImg2ImgPipeline": chroma_img2img,
    "QwenImagePipeline": qwenimage,
    "QwenImageImg2ImgPipeline": qwenimage_img2img,
    "QwenImageInpaintPipeline": qwenimage_inpaint,
    "QwenImageEditPipeline": qwenimage_edit,
    "ZImagePipeline": z_image,
    "SanaPipeline (DPMSolver flow)": sana,
    "SanaPipeline (FlowMatchEuler)": sana_flow_match,
    "PixArtSigmaPipeline (DPMSolver)": pixart_sigma,
    "PixArtAlphaPipeline (DPMSolver)": pixart_alpha,
    "FluxKontextInpaintPipeline": flux_kontext_inpaint,
    "FluxControlImg2ImgPipeline": flux_control_img2img,
    "FluxControlInpaintPipeline": flux_control_inpaint,
    "FluxControlNetPipeline": flux_controlnet,
    "CogView4ControlPipeline": cogview4_control,
    "StableDiffusion3ControlNetPipeline": sd3_controlnet,
    "StableDiffusion3PAGPipeline": sd3_pag,
    "SanaPAGPipeline (DPMSolver flow)": sana_pag,
    "SanaControlNetPipeline (DPMSolver flow)": sana_controlnet,
    "ZImageImg2ImgPipeline": z_image_img2img,
    "ZImageInpaintPipeline": z_image_inpaint,
    "Flux2Pipeline": flux2,
    "Flux2KleinPipeline": flux2_klein,
    "OvisImagePipeline": ovis_image,
    "Krea2Pipeline": krea2,
    "NucleusMoEImagePipeline": nucleus_moe,
    "HunyuanImagePipeline": hunyuan_image,
    "Kandinsky5T2IPipeline": kandinsky5_t2i,
    "PRXPipeline": prx,
    "Cosmos2TextToImagePipeline": cosmos2_text2image,
    "GlmImagePipeline": glm_image,
    "StableDiffusionXLPipeline (DPMSolver Karras)": sdxl,
    "StableDiffusionXLImg2ImgPipeline (UniPC)": sdxl_img2img,
    "StableDiffusionInpaintPipeline (UniPC)": sd_inpaint,
}
