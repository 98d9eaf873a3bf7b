"""Tiny, randomly initialised video and image-editing pipelines built offline (no hub download, no weights), for the
drop-in pipeline matrix (`test_pipeline_matrix_video.py`).

Each builder returns a `Case`: a factory that builds the pipeline around a given scheduler, the call arguments (no
generator: the test passes one), and the diffusers scheduler the pipeline starts from. Text encoders and tokenizers
are replaced by precomputed prompt embeddings; image encoders (CLIP vision) are built from tiny random configs.
The tiny configs follow the `get_dummy_components()` of diffusers' own pipeline tests. Every part is seeded and
cached, so both runs of a case (diffusers' scheduler, then the drop-in) see the same weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import _tiny_pipelines as tiny
import diffusers
import numpy as np
import torch
import transformers
from _tiny_pipelines import _embeds, _seeded
from PIL import Image

SEED = tiny.SEED  # the seed every builder and run uses


class Case(NamedTuple):
    """A pipeline factory (scheduler -> pipeline), the call's keyword arguments, and the scheduler to start from."""

    factory: Callable[[Any], Any]
    call: dict[str, Any]
    scheduler: Any


# ------------------------------------------------------------------------------------------------ helpers
def _factory(cls: type, **components: Any) -> Callable[[Any], Any]:
    def build(scheduler: Any) -> Any:
        pipe = cls(scheduler=scheduler, **components)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return build


def _image(size: int = 16, seed: int = 7) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _video(frames: int, size: int = 16, seed: int = 7) -> list[Image.Image]:
    return [_image(size, seed + index) for index in range(frames)]


def _unipc_flow(flow_shift: float = 3.0, **options: Any) -> Any:
    return diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, **options
    )


def _dpm_flow(flow_shift: float = 3.0, **options: Any) -> Any:
    return diffusers.DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, **options
    )


# ------------------------------------------------------------------------------------------------ Wan family parts
@functools.cache
def _wan_vae() -> torch.nn.Module:
    return tiny.wan_parts()["vae"]


@functools.cache
def _wan_text() -> dict[str, torch.Tensor]:
    prompt, negative = _embeds((1, 7, 32), (1, 7, 32))
    return {"prompt_embeds": prompt, "negative_prompt_embeds": negative}


def _wan_transformer_config(**overrides: Any) -> dict[str, Any]:
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 32,
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 32,
        **overrides,
    }


@functools.cache
def _clip_vision() -> dict[str, Any]:
    config = transformers.CLIPVisionConfig(
        hidden_size=4,
        projection_dim=4,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        intermediate_size=16,
        patch_size=1,
    )
    return {
        "image_encoder": _seeded(lambda: transformers.CLIPVisionModelWithProjection(config)),
        "image_processor": transformers.CLIPImageProcessorPil(crop_size=32, size=32),
    }


# ------------------------------------------------------------------------------------------------ ChronoEdit
@functools.cache
def _chronoedit_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.ChronoEditTransformer3DModel(**_wan_transformer_config(in_channels=36, image_dim=4))
    )


def chronoedit(temporal_reasoning: bool = True) -> Case:
    """ChronoEdit: with temporal reasoning it drops the reasoning frames after `num_temporal_reasoning_steps` and
    slices `scheduler.model_outputs` and `scheduler.last_sample` to the frames kept (UniPC, as its checkpoints ship);
    without, a plain 5-frame edit on its type-hinted FlowMatchEuler."""
    factory = _factory(
        diffusers.ChronoEditPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_chronoedit_transformer(),
        vae=_wan_vae(),
        **_clip_vision(),
    )
    call: dict[str, Any] = {
        "image": _image(),
        **_wan_text(),
        "height": 16,
        "width": 16,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    if temporal_reasoning:
        call |= {
            "num_frames": 9,  # 3 latent frames: the edit, one reasoning frame, the last; sliced to 2 at step 2
            "num_inference_steps": 4,
            "enable_temporal_reasoning": True,
            "num_temporal_reasoning_steps": 2,
        }
        return Case(factory, call, _unipc_flow(flow_shift=5.0))
    call |= {"num_inference_steps": 3}
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0))


# ------------------------------------------------------------------------------------------------ Wan
@functools.cache
def _wan_i2v_transformer() -> torch.nn.Module:
    return _seeded(lambda: diffusers.WanTransformer3DModel(**_wan_transformer_config(in_channels=36, image_dim=4)))


def wan_image_to_video() -> Case:
    factory = _factory(
        diffusers.WanImageToVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_wan_i2v_transformer(),
        vae=_wan_vae(),
        **_clip_vision(),
    )
    call = {
        "image": _image(),
        **_wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0))


@functools.cache
def _wan_vace_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.WanVACETransformer3DModel(
            **_wan_transformer_config(num_layers=3), vace_layers=[0, 2], vace_in_channels=96
        )
    )


def wan_vace() -> Case:
    """VACE: a masked video to inpaint (the mask keeps the first frames, regenerates the rest)."""
    factory = _factory(
        diffusers.WanVACEPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_wan_vace_transformer(),
        vae=_wan_vae(),
    )
    frames = 9
    mask = [Image.new("L", (16, 16), 0 if index < 4 else 255) for index in range(frames)]
    call = {
        "video": _video(frames),
        "mask": mask,
        **_wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": frames,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    return Case(factory, call, _unipc_flow())


@functools.cache
def _wan_transformer() -> torch.nn.Module:
    return tiny.wan_parts()["transformer"]


def wan_video_to_video() -> Case:
    """Video-to-video at strength 0.7: `scale_noise` of the encoded video and a schedule cut to the last steps."""
    factory = _factory(
        diffusers.WanVideoToVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_wan_transformer(),
        vae=_wan_vae(),
    )
    call = {
        "video": _video(9),
        **_wan_text(),
        "height": 16,
        "width": 16,
        "num_inference_steps": 4,
        "strength": 0.7,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))


# ------------------------------------------------------------------------------------------------ SkyReels-V2
@functools.cache
def _skyreels_transformer() -> torch.nn.Module:
    return _seeded(lambda: diffusers.SkyReelsV2Transformer3DModel(**_wan_transformer_config()))


def skyreels_v2() -> Case:
    factory = _factory(
        diffusers.SkyReelsV2Pipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_skyreels_transformer(),
        vae=_wan_vae(),
    )
    call = {
        **_wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    return Case(factory, call, _unipc_flow(flow_shift=8.0))


def skyreels_v2_diffusion_forcing(ar_step: int = 1) -> Case:
    """Diffusion forcing: one deep copy of the scheduler per latent frame, stepped on its own timestep row; with
    `ar_step` > 0 the frames are asynchronous (each starts `ar_step` steps after the one before)."""
    factory = _factory(
        diffusers.SkyReelsV2DiffusionForcingPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_skyreels_transformer(),
        vae=_wan_vae(),
    )
    call = {
        "prompt": None,
        **_wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "ar_step": ar_step,
        "causal_block_size": 1,
        "output_type": "latent",
    }
    return Case(factory, call, _unipc_flow(flow_shift=8.0))


# ------------------------------------------------------------------------------------------------ LTX-Video
@functools.cache
def _ltx_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=4,
            attention_head_dim=8,
            cross_attention_dim=32,
            num_layers=1,
            caption_channels=32,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        )
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    prompt, negative = _embeds((1, 7, 32), (1, 7, 32))
    mask = torch.ones(1, 7, dtype=torch.long)
    return {
        "components": {"transformer": transformer, "vae": vae, "text_encoder": None, "tokenizer": None},
        "text": {
            "prompt_embeds": prompt,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_attention_mask": mask,
        },
    }


def _ltx_scheduler() -> Any:
    """LTX-Video 0.9's scheduler config: resolution-dependent shift (`mu`) and a terminal shift."""
    return diffusers.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )


def _ltx_call(parts: dict[str, Any]) -> dict[str, Any]:
    return {
        **parts["text"],
        "height": 32,
        "width": 32,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 3.0,
        "output_type": "latent",
    }


def ltx() -> Case:
    parts = _ltx_parts()
    return Case(_factory(diffusers.LTXPipeline, **parts["components"]), _ltx_call(parts), _ltx_scheduler())


def ltx_image_to_video() -> Case:
    parts = _ltx_parts()
    call = {"image": _image(32), **_ltx_call(parts)}
    return Case(_factory(diffusers.LTXImageToVideoPipeline, **parts["components"]), call, _ltx_scheduler())


def ltx_condition() -> Case:
    """LTX condition: an image condition on frame 0; the pipeline steps with `per_token_timesteps`."""
    parts = _ltx_parts()
    call = {"conditions": [diffusers.pipelines.ltx.pipeline_ltx_condition.LTXVideoCondition(image=_image(32))]}
    call |= _ltx_call(parts)
    # LTX 0.9.5+ (the condition pipeline's checkpoints) ships a fixed shift: the pipeline passes no `mu`.
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0, shift_terminal=0.1)
    return Case(_factory(diffusers.LTXConditionPipeline, **parts["components"]), call, scheduler)


# ------------------------------------------------------------------------------------------------ HunyuanVideo
@functools.cache
def _hunyuan_video_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.HunyuanVideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=10,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=1,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=16,
            pooled_projection_dim=8,
            rope_axes_dim=(2, 4, 4),
        )
    )
    blocks = 4
    vae = _seeded(
        lambda: diffusers.AutoencoderKLHunyuanVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * blocks,
            up_block_types=("HunyuanVideoUpBlock3D",) * blocks,
            block_out_channels=(8,) * blocks,
            layers_per_block=1,
            act_fn="silu",
            norm_num_groups=4,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        )
    )
    prompt, pooled = _embeds((1, 7, 16), (1, 8))
    return {
        "transformer": transformer,
        "vae": vae,
        "text": {"prompt_embeds": prompt, "pooled_prompt_embeds": pooled, "prompt_attention_mask": torch.ones(1, 7)},
    }


def hunyuan_video() -> Case:
    parts = _hunyuan_video_parts()
    factory = _factory(
        diffusers.HunyuanVideoPipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder_2=None,
        tokenizer_2=None,
    )
    call = {
        **parts["text"],
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 4.5,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


# ------------------------------------------------------------------------------------------------ Mochi
@functools.cache
def _mochi_parts() -> dict[str, Any]:
    def build() -> torch.nn.Module:
        transformer = diffusers.MochiTransformer3DModel(
            patch_size=2,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            pooled_projection_dim=16,
            in_channels=12,
            out_channels=None,
            qk_norm="rms_norm",
            text_embed_dim=32,
            time_embed_dim=4,
            activation_fn="swiglu",
            max_sequence_length=16,
        )
        transformer.pos_frequencies.data = transformer.pos_frequencies.new_full(transformer.pos_frequencies.shape, 0)
        return transformer

    vae = _seeded(
        lambda: diffusers.AutoencoderKLMochi(
            latent_channels=12,
            out_channels=3,
            encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32),
            layers_per_block=(1, 1, 1, 1, 1),
        )
    )
    prompt, negative = _embeds((1, 16, 32), (1, 16, 32))
    mask = torch.ones(1, 16, dtype=torch.long)
    return {
        "transformer": _seeded(build),
        "vae": vae,
        "text": {
            "prompt_embeds": prompt,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_attention_mask": mask,
        },
    }


def mochi() -> Case:
    parts = _mochi_parts()
    factory = _factory(
        diffusers.MochiPipeline, vae=parts["vae"], text_encoder=None, tokenizer=None, transformer=parts["transformer"]
    )
    call = {
        **parts["text"],
        "height": 16,
        "width": 16,
        "num_frames": 7,
        "num_inference_steps": 3,
        "guidance_scale": 4.5,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ EasyAnimate
@functools.cache
def _easyanimate_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.EasyAnimateTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=16,
            num_layers=1,
            sample_width=16,
            sample_height=16,
            patch_size=2,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLMagvit(
            in_channels=3,
            out_channels=3,
            down_block_types=("SpatialDownBlock3D",) + ("SpatialTemporalDownBlock3D",) * 3,
            up_block_types=("SpatialUpBlock3D",) + ("SpatialTemporalUpBlock3D",) * 3,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            spatial_group_norm=False,
        )
    )
    prompt, negative = _embeds((1, 7, 16), (1, 7, 16))
    mask = torch.ones(1, 7, dtype=torch.long)
    return {
        "transformer": transformer,
        "vae": vae,
        "text": {
            "prompt_embeds": prompt,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_attention_mask": mask,
        },
    }


def easyanimate() -> Case:
    parts = _easyanimate_parts()
    factory = _factory(
        diffusers.EasyAnimatePipeline,
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        transformer=parts["transformer"],
    )
    call = {
        **parts["text"],
        "height": 16,
        "width": 16,
        "num_frames": 5,
        "num_inference_steps": 3,
        "guidance_scale": 6.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ Kandinsky 5
@functools.cache
def _kandinsky5_parts() -> dict[str, Any]:
    vae = _seeded(
        lambda: diffusers.AutoencoderKLHunyuanVideo(
            act_fn="silu",
            block_out_channels=[32, 64],
            down_block_types=["HunyuanVideoDownBlock3D"] * 2,
            in_channels=3,
            latent_channels=16,
            layers_per_block=1,
            mid_block_add_attention=False,
            norm_num_groups=32,
            out_channels=3,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            up_block_types=["HunyuanVideoUpBlock3D"] * 2,
        )
    )
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
            num_visual_blocks=2,
            axes_dims=(1, 1, 2),
            visual_cond=False,
            attention_type="regular",
        )
    )
    qwen, clip, negative_qwen, negative_clip = _embeds((1, 7, 32), (1, 16), (1, 7, 32), (1, 16))
    lengths = torch.tensor([0, 7], dtype=torch.int32)
    return {
        "vae": vae,
        "transformer": transformer,
        "text": {
            "prompt_embeds_qwen": qwen,
            "prompt_embeds_clip": clip,
            "prompt_cu_seqlens": lengths,
            "negative_prompt_embeds_qwen": negative_qwen,
            "negative_prompt_embeds_clip": negative_clip,
            "negative_prompt_cu_seqlens": lengths,
        },
    }


def kandinsky5_text_to_video() -> Case:
    """Kandinsky 5 T2V: the pipeline steps a channel slice of the latents and writes it back in place."""
    parts = _kandinsky5_parts()
    factory = _factory(
        diffusers.Kandinsky5T2VPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    call = {
        **parts["text"],
        "height": 32,
        "width": 32,
        "num_frames": 5,
        "num_inference_steps": 3,
        "guidance_scale": 4.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


# ------------------------------------------------------------------------------------------------ Allegro
@functools.cache
def _allegro_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.AllegroTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            cross_attention_dim=24,
            sample_width=8,
            sample_height=8,
            sample_frames=8,
            caption_channels=24,
        )
    )
    blocks = 4
    vae = _seeded(
        lambda: diffusers.AutoencoderKLAllegro(
            in_channels=3,
            out_channels=3,
            down_block_types=("AllegroDownBlock3D",) * blocks,
            up_block_types=("AllegroUpBlock3D",) * blocks,
            block_out_channels=(8,) * blocks,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
    )
    prompt, negative = _embeds((1, 7, 24), (1, 7, 24))
    mask = torch.ones(1, 7, dtype=torch.long)
    return {
        "transformer": transformer,
        "vae": vae,
        "text": {
            "prompt_embeds": prompt,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_attention_mask": mask,
        },
    }


def allegro() -> Case:
    """Allegro takes any Karras scheduler; here DPM-Solver++ (2M, v-prediction: Allegro's own is EulerAncestral v)."""
    parts = _allegro_parts()
    factory = _factory(
        diffusers.AllegroPipeline,
        tokenizer=None,
        text_encoder=None,
        vae=parts["vae"],
        transformer=parts["transformer"],
    )
    call = {
        **parts["text"],
        "height": 16,
        "width": 16,
        "num_frames": 8,
        "num_inference_steps": 3,
        "guidance_scale": 6.0,
        "negative_prompt": None,
        "clean_caption": False,
        "output_type": "latent",
    }
    scheduler = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type="v_prediction"
    )
    return Case(factory, call, scheduler)


# ------------------------------------------------------------------------------------------------ Sana-Video
@functools.cache
def _sana_video_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.SanaVideoTransformer3DModel(
            in_channels=16,
            out_channels=16,
            num_attention_heads=2,
            attention_head_dim=12,
            num_layers=2,
            num_cross_attention_heads=2,
            cross_attention_head_dim=12,
            cross_attention_dim=24,
            caption_channels=8,
            mlp_ratio=2.5,
            dropout=0.0,
            attention_bias=False,
            sample_size=8,
            patch_size=(1, 2, 2),
            norm_elementwise_affine=False,
            norm_eps=1e-6,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    )


def sana_video() -> Case:
    """Sana-Video on its type-hinted DPM-Solver++ with flow sigmas."""
    factory = _factory(
        diffusers.SanaVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        vae=_wan_vae(),
        transformer=_sana_video_transformer(),
    )
    prompt, negative = _embeds((1, 7, 8), (1, 7, 8))
    mask = torch.ones(1, 7, dtype=torch.long)
    call = {
        "prompt_embeds": prompt,
        "prompt_attention_mask": mask,
        "negative_prompt_embeds": negative,
        "negative_prompt_attention_mask": mask,
        "height": 32,
        "width": 32,
        "frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 6.0,
        "negative_prompt": None,
        "use_resolution_binning": False,
        "complex_human_instruction": [],
        "output_type": "latent",
    }
    return Case(factory, call, _dpm_flow(flow_shift=8.0, algorithm_type="dpmsolver++"))


# ------------------------------------------------------------------------------------------------ Lucy Edit
@functools.cache
def _lucy_transformer() -> torch.nn.Module:
    return _seeded(lambda: diffusers.WanTransformer3DModel(**_wan_transformer_config(in_channels=32)))


def lucy_edit() -> Case:
    """Lucy Edit: a video edit (the encoded source video is concatenated to the latents as a condition)."""
    factory = _factory(
        diffusers.LucyEditPipeline,
        tokenizer=None,
        text_encoder=None,
        vae=_wan_vae(),
        transformer=_lucy_transformer(),
    )
    call = {
        "video": _video(9),
        **_wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0))


# ------------------------------------------------------------------------------------------------ Qwen-Image Edit
@functools.cache
def _qwen_image_parts() -> dict[str, Any]:
    transformer = _seeded(
        lambda: diffusers.QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=3,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        )
    )
    # The edit pipeline resizes the source image to ~1 megapixel whatever the output size: a VAE that downsamples
    # 32x (not diffusers' tests' 4x) keeps that encode, and the image tokens it adds to the sequence, small.
    z_dim = 4
    vae = _seeded(
        lambda: diffusers.AutoencoderKLQwenImage(
            base_dim=4,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, False, False, True, True],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        )
    )
    prompt, negative = _embeds((1, 7, 16), (1, 7, 16))
    mask = torch.ones(1, 7, dtype=torch.long)
    return {
        "transformer": transformer,
        "vae": vae,
        "text": {
            "prompt_embeds": prompt,
            "prompt_embeds_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_embeds_mask": mask,
        },
    }


def qwen_image_edit() -> Case:
    """Qwen-Image Edit with true CFG; the pipeline resizes the source image to its ~1 megapixel working size."""
    parts = _qwen_image_parts()
    factory = _factory(
        diffusers.QwenImageEditPipeline,
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        processor=None,
        transformer=parts["transformer"],
    )
    call = {
        "image": _image(32),
        **parts["text"],
        "true_cfg_scale": 4.0,
        "height": 64,
        "width": 64,
        "num_inference_steps": 3,
        "output_type": "latent",
    }
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    return Case(factory, call, scheduler)


# ------------------------------------------------------------------------------------------------ Flux Kontext
def flux_kontext() -> Case:
    """Flux Kontext: the encoded source image's tokens join the latent sequence (no auto-resize: 16x16 in, out)."""
    parts = tiny.flux_parts()
    factory = _factory(
        diffusers.FluxKontextPipeline,
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=parts["transformer"],
    )
    call = {
        "image": _image(16),
        "prompt_embeds": parts["prompt_embeds"],
        "pooled_prompt_embeds": parts["pooled_prompt_embeds"],
        "height": 16,
        "width": 16,
        "max_area": 16 * 16,
        "_auto_resize": False,
        "num_inference_steps": 3,
        "guidance_scale": 2.5,
        "output_type": "latent",
    }
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return Case(factory, call, scheduler)


# ------------------------------------------------------------------------------------------------ Cosmos 2
class _PassThroughSafetyChecker(diffusers.ModelMixin, diffusers.ConfigMixin):
    """Stands in for `cosmos_guardrail` (not installable offline): every prompt and video passes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_device_tracker", torch.zeros(1), persistent=False)

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray:
        return frames


@functools.cache
def _cosmos2_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.CosmosTransformer3DModel(
            in_channels=16,
            out_channels=16,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=2,
            mlp_ratio=2,
            text_embed_dim=32,
            adaln_lora_dim=4,
            max_size=(4, 32, 32),
            patch_size=(1, 2, 2),
            rope_scale=(2.0, 1.0, 1.0),
            concat_padding_mask=False,  # True resizes the mask with torchvision, not installed here
            extra_pos_embed_type="learnable",
        )
    )


def cosmos2_text_to_image() -> Case:
    """Cosmos 2 text-to-image: the pipeline registers `sigma_min`/`sigma_max`/`sigma_data`/`final_sigmas_type` in
    the scheduler's config at construction and sets `scheduler.sigmas[-1] = scheduler.sigmas[-2]` in place."""
    factory = _factory(
        diffusers.Cosmos2TextToImagePipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=_cosmos2_transformer(),
        vae=_wan_vae(),
        safety_checker=_PassThroughSafetyChecker(),
    )
    call = {
        **_wan_text(),
        "height": 32,
        "width": 32,
        "num_inference_steps": 3,
        "guidance_scale": 3.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True))


# ------------------------------------------------------------------------------------------------ SAG (SD 1.x)
def stable_diffusion_sag(scheduler_name: str = "DPMSolverMultistepScheduler") -> Case:
    """Self-attention guidance: reads `scheduler.alphas_cumprod` and `config.prediction_type` to blur its x0
    estimate, and re-noises it with `scheduler.add_noise` at every step."""
    parts = tiny.sd_parts()
    factory = _factory(
        diffusers.StableDiffusionSAGPipeline,
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        unet=parts["unet"],
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    call = {
        "prompt_embeds": parts["prompt_embeds"],
        "negative_prompt_embeds": parts["negative_prompt_embeds"],
        "height": 32,
        "width": 32,
        "num_inference_steps": 4,
        "guidance_scale": 3.0,
        "sag_scale": 0.75,
        "output_type": "latent",
    }
    scheduler = getattr(diffusers, scheduler_name)(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return Case(factory, call, scheduler)


# ------------------------------------------------------------------------------------------------ Cosmos 2.5
@functools.cache
def _cosmos2_5_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.CosmosTransformer3DModel(
            in_channels=16 + 1,  # the latents and the condition mask
            out_channels=16,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=2,
            mlp_ratio=2,
            text_embed_dim=32,
            adaln_lora_dim=4,
            max_size=(4, 32, 32),
            patch_size=(1, 2, 2),
            rope_scale=(2.0, 1.0, 1.0),
            concat_padding_mask=False,  # True resizes the mask with torchvision, not installed here
            extra_pos_embed_type="learnable",
        )
    )


def cosmos2_5_predict() -> Case:
    """Cosmos 2.5 Predict, video-to-world on its type-hinted UniPC (image-to-world needs torchvision): reads
    `scheduler.sigmas[i]` for the model's timestep and keeps the conditioning frame's velocity fixed."""
    factory = _factory(
        diffusers.Cosmos2_5_PredictBasePipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=_cosmos2_5_transformer(),
        vae=_wan_vae(),
        safety_checker=_PassThroughSafetyChecker(),
    )
    call = {
        "video": _video(5, 32),
        **_wan_text(),
        "height": 32,
        "width": 32,
        "num_frames": 5,
        "num_inference_steps": 3,
        "guidance_scale": 3.0,
        "num_latent_conditional_frames": 1,
        "output_type": "latent",
    }
    return Case(factory, call, _unipc_flow(flow_shift=5.0))


# ------------------------------------------------------------------------------------------------ not offline
#: Video/edit pipelines with one of the three schedulers that cannot be built or called without hub files.
CANNOT_RUN_OFFLINE: dict[str, str] = {
    "LongCatImageEditPipeline": (
        "its __init__ reads `text_processor.image_processor` and its __call__ cannot take precomputed embeddings "
        "alone (`prompt` is required by encode_prompt's `len(prompt)`, and `prompt` with `prompt_embeds` is "
        "refused by check_inputs), so it needs the Qwen2.5-VL tokenizer/processor files from the hub"
    ),
}
