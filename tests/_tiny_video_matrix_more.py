"""More tiny, randomly initialised video and audio pipelines built offline (no hub download, no weights), for the
second drop-in pipeline matrix (`test_pipeline_matrix_video_more.py`): LTX-2 (text, image and condition to
audio+video), LTX-Video long multi-prompt, the image/video-to-video variants of HunyuanVideo (1 and 1.5, SkyReels-V1,
FramePack), SkyReels-V2, Wan Animate, Kandinsky 5, Sana-Video, EasyAnimate inpaint and Cosmos 2, and the Stable Audio 3,
LongCat AudioDiT and ACE-Step audio pipelines. Each builder returns a `_tiny_video_matrix.Case` and reuses that
module's seeded, cached parts (VAEs, CLIP vision encoder, precomputed prompt embeddings) where the configs match; new
parts follow the `get_dummy_components()` of diffusers' own pipeline tests and are seeded and cached the same way, so
both runs of a case (diffusers' scheduler, then the drop-in) see the same weights. The pipelines that take only prompt
strings get a word-level tokenizer built in memory and a tiny text encoder. Pipelines in scope that cannot be run are
listed in `CANNOT_RUN_OFFLINE` with the reason.
"""

from __future__ import annotations

import functools
from typing import Any

import _tiny_video_matrix as matrix
import diffusers
import tokenizers
import torch
import transformers

Case = matrix.Case


# ------------------------------------------------------------------------------------------------ LTX-2
_LTX2_CAPTION = 32  # the (absent) Gemma text encoder's hidden size = the connectors' 4 heads x 8
_LTX2_LAYERS = 3  # its hidden states stacked per token: `num_hidden_layers + 1`


@functools.cache
def _ltx2_parts() -> dict[str, Any]:
    transformer = matrix._seeded(
        lambda: diffusers.LTX2VideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            audio_in_channels=4,
            audio_out_channels=4,
            audio_num_attention_heads=2,
            audio_attention_head_dim=4,
            audio_cross_attention_dim=8,
            num_layers=2,
            qk_norm="rms_norm_across_heads",
            caption_channels=_LTX2_CAPTION,
            rope_double_precision=False,
            rope_type="split",
        )
    )
    connectors = matrix._seeded(
        lambda: diffusers.pipelines.ltx2.connectors.LTX2TextConnectors(
            caption_channels=_LTX2_CAPTION,
            text_proj_in_factor=_LTX2_LAYERS,
            video_connector_num_attention_heads=4,
            video_connector_attention_head_dim=8,
            video_connector_num_layers=1,
            video_connector_num_learnable_registers=None,
            audio_connector_num_attention_heads=4,
            audio_connector_attention_head_dim=8,
            audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=None,
            connector_rope_base_seq_len=32,
            rope_theta=10000.0,
            rope_double_precision=False,
            causal_temporal_positioning=False,
            rope_type="split",
        )
    )

    def vae() -> torch.nn.Module:
        model = diffusers.AutoencoderKLLTX2Video(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8,),
            decoder_block_out_channels=(8,),
            layers_per_block=(1,),
            decoder_layers_per_block=(1, 1),
            spatio_temporal_scaling=(True,),
            decoder_spatio_temporal_scaling=(True,),
            decoder_inject_noise=(False, False),
            downsample_type=("spatial",),
            upsample_residual=(False,),
            upsample_factor=(1,),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        )
        model.use_framewise_encoding = False
        model.use_framewise_decoding = False
        return model

    audio_vae = matrix._seeded(
        lambda: diffusers.AutoencoderKLLTX2Audio(
            base_channels=4,
            output_channels=2,
            ch_mult=(1,),
            num_res_blocks=1,
            attn_resolutions=None,
            in_channels=2,
            resolution=32,
            latent_channels=2,
            norm_type="pixel",
            causality_axis="height",
            dropout=0.0,
            mid_block_add_attention=False,
            sample_rate=16000,
            mel_hop_length=160,
            is_causal=True,
            mel_bins=8,
        )
    )
    vocoder = matrix._seeded(
        lambda: diffusers.pipelines.ltx2.vocoder.LTX2Vocoder(
            in_channels=2 * 8,
            hidden_channels=32,
            out_channels=2,
            upsample_kernel_sizes=[4, 4],
            upsample_factors=[2, 2],
            resnet_kernel_sizes=[3],
            resnet_dilations=[[1, 3, 5]],
            leaky_relu_negative_slope=0.1,
            output_sampling_rate=16000,
        )
    )
    prompt, negative = matrix._embeds((1, 8, _LTX2_CAPTION * _LTX2_LAYERS), (1, 8, _LTX2_CAPTION * _LTX2_LAYERS))
    mask = torch.ones(1, 8, dtype=torch.long)
    return {
        "components": {
            "transformer": transformer,
            "vae": matrix._seeded(vae),
            "audio_vae": audio_vae,
            "text_encoder": None,
            "tokenizer": None,
            "connectors": connectors,
            "vocoder": vocoder,
        },
        "text": {
            "prompt_embeds": prompt,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_attention_mask": mask,
        },
    }


def _ltx2_call() -> dict[str, Any]:
    return {
        **_ltx2_parts()["text"],
        "height": 32,
        "width": 32,
        "num_frames": 5,
        "frame_rate": 25.0,
        "num_inference_steps": 3,
        "guidance_scale": 4.0,
        "output_type": "latent",
    }


def ltx2() -> Case:
    """LTX-2 text-to-audio+video: the audio latents step on a deep copy of the video scheduler, after reading
    `sigmas[i]` to convert velocity to x0 and back for guidance."""
    factory = matrix._factory(diffusers.LTX2Pipeline, **_ltx2_parts()["components"])
    return Case(factory, _ltx2_call(), diffusers.FlowMatchEulerDiscreteScheduler())


def ltx2_image_to_video() -> Case:
    factory = matrix._factory(diffusers.LTX2ImageToVideoPipeline, **_ltx2_parts()["components"])
    call = {"image": matrix._image(32), "image_crf": 0, **_ltx2_call()}  # no H.264 round trip (needs PyAV)
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


def ltx2_condition() -> Case:
    """LTX-2 condition: a first-frame image condition at strength 0.8 (`crf=0`: no H.264 round trip); the audio
    scheduler is the deep copy of the video one the pipeline makes when none is given."""
    condition = diffusers.pipelines.ltx2.pipeline_ltx2_condition.LTX2VideoCondition(
        frames=torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(5)), index=0, strength=0.8, crf=0
    )
    factory = matrix._factory(diffusers.LTX2ConditionPipeline, **_ltx2_parts()["components"])
    return Case(factory, {"conditions": condition, **_ltx2_call()}, diffusers.FlowMatchEulerDiscreteScheduler())


@functools.cache
def _word_level_t5() -> dict[str, Any]:
    """A whitespace word-level tokenizer built in memory and a tiny T5 encoder (d_model 32, the LTX-Video parts'
    caption size): LTXI2VLongMultiPromptPipeline encodes its prompt per window and takes no embeddings."""
    words = ["<pad>", "</s>", "<unk>", "a", "robot", "walks", "then", "runs"]
    model = tokenizers.models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<unk>")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = transformers.T5Config(
        vocab_size=len(words), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4, dropout_rate=0.0
    )
    return {"tokenizer": tokenizer, "text_encoder": matrix._seeded(lambda: transformers.T5EncoderModel(config))}


def ltx_i2v_long_multi_prompt() -> Case:
    """LTX-Video long multi-prompt I2V: 17 frames in two temporal windows, each with a fresh `set_timesteps`, a
    read of `scheduler.sigmas` and its own prompt; steps `timesteps[:-1]`."""
    parts = matrix._ltx_parts()
    factory = matrix._factory(
        diffusers.LTXI2VLongMultiPromptPipeline,
        vae=parts["components"]["vae"],
        transformer=parts["components"]["transformer"],
        **_word_level_t5(),
    )
    call = {
        "prompt": "a robot walks | a robot runs",
        "cond_image": matrix._image(32),
        "height": 32,
        "width": 32,
        "num_frames": 17,
        "temporal_tile_size": 16,
        "temporal_overlap": 8,
        "num_inference_steps": 4,
        "guidance_scale": 3.0,
        "max_sequence_length": 8,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ HunyuanVideo
@functools.cache
def _hunyuan_skyreels_transformer() -> torch.nn.Module:
    return matrix._seeded(
        lambda: diffusers.HunyuanVideoTransformer3DModel(
            in_channels=8,  # the latents and the image latents
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


def hunyuan_skyreels_image_to_video() -> Case:
    """SkyReels-V1 on HunyuanVideo: image latents concatenated on channels, true CFG with a negative prompt."""
    parts = matrix._hunyuan_video_parts()
    factory = matrix._factory(
        diffusers.HunyuanSkyreelsImageToVideoPipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=_hunyuan_skyreels_transformer(),
        vae=parts["vae"],
        text_encoder_2=None,
        tokenizer_2=None,
    )
    negative, negative_pooled = matrix._embeds((1, 7, 16), (1, 8), seed=4321)
    call = {
        "image": matrix._image(),
        **parts["text"],
        "negative_prompt_embeds": negative,
        "negative_pooled_prompt_embeds": negative_pooled,
        "negative_prompt_attention_mask": torch.ones(1, 7),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 1.0,
        "true_cfg_scale": 6.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


@functools.cache
def _hunyuan_i2v_transformer() -> torch.nn.Module:
    return matrix._seeded(
        lambda: diffusers.HunyuanVideoTransformer3DModel(
            in_channels=2 * 4 + 1,  # the latents, the image latents and their mask
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=10,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=1,
            patch_size_t=1,
            guidance_embeds=False,
            text_embed_dim=16,
            pooled_projection_dim=8,
            rope_axes_dim=(2, 4, 4),
            image_condition_type="latent_concat",
        )
    )


def hunyuan_video_image_to_video() -> Case:
    """HunyuanVideo I2V (latent concat); the LLaVA image processor is only read when encoding a prompt."""
    parts = matrix._hunyuan_video_parts()
    factory = matrix._factory(
        diffusers.HunyuanVideoImageToVideoPipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=_hunyuan_i2v_transformer(),
        vae=parts["vae"],
        text_encoder_2=None,
        tokenizer_2=None,
        image_processor=None,
    )
    call = {
        "image": matrix._image(),
        **parts["text"],
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


@functools.cache
def _framepack_parts() -> dict[str, Any]:
    transformer = matrix._seeded(
        lambda: diffusers.HunyuanVideoFramepackTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=10,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=2,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=16,
            pooled_projection_dim=8,
            rope_axes_dim=(2, 4, 4),
            image_condition_type=None,
            has_image_proj=True,
            image_proj_dim=32,
            has_clean_x_embedder=True,
        )
    )
    config = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=30,
        patch_size=2,
    )
    return {
        "transformer": transformer,
        "image_encoder": matrix._seeded(lambda: transformers.SiglipVisionModel(config)),
        "feature_extractor": transformers.SiglipImageProcessorPil(size={"height": 30, "width": 30}),
    }


def hunyuan_video_framepack() -> Case:
    """FramePack: 9 frames in sections of `latent_window_size` 3, each with a fresh `set_timesteps` (custom `sigmas`
    and `mu`) on the one scheduler."""
    parts = matrix._hunyuan_video_parts()
    framepack = _framepack_parts()
    factory = matrix._factory(
        diffusers.HunyuanVideoFramepackPipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=framepack["transformer"],
        vae=parts["vae"],
        text_encoder_2=None,
        tokenizer_2=None,
        image_encoder=framepack["image_encoder"],
        feature_extractor=framepack["feature_extractor"],
    )
    call = {
        "image": matrix._image(32),
        **parts["text"],
        "height": 32,
        "width": 32,
        "num_frames": 9,
        "latent_window_size": 3,
        "num_inference_steps": 3,
        "guidance_scale": 4.5,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


# ------------------------------------------------------------------------------------------------ HunyuanVideo 1.5
@functools.cache
def _hunyuan_video15_parts() -> dict[str, Any]:
    def transformer(task_type: str) -> torch.nn.Module:
        return matrix._seeded(
            lambda: diffusers.HunyuanVideo15Transformer3DModel(
                in_channels=9,  # the latents, the image-condition latents and their mask (zeros for t2v)
                out_channels=4,
                num_attention_heads=2,
                attention_head_dim=8,
                num_layers=1,
                num_refiner_layers=1,
                mlp_ratio=2.0,
                patch_size=1,
                patch_size_t=1,
                text_embed_dim=16,
                text_embed_2_dim=32,
                image_embed_dim=12,
                rope_axes_dim=(2, 2, 4),
                target_size=16,
                task_type=task_type,
            )
        )

    vae = matrix._seeded(
        lambda: diffusers.AutoencoderKLHunyuanVideo15(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(16, 16),
            layers_per_block=1,
            spatial_compression_ratio=4,
            temporal_compression_ratio=2,
            downsample_match_channel=False,
            upsample_match_channel=False,
        )
    )
    config = transformers.SiglipVisionConfig(
        hidden_size=12,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
    )
    prompt, prompt_2, negative, negative_2 = matrix._embeds((1, 7, 16), (1, 7, 32), (1, 7, 16), (1, 7, 32))
    mask = torch.ones(1, 7, dtype=torch.long)
    return {
        "t2v": transformer("t2v"),
        "i2v": transformer("i2v"),
        "vae": vae,
        "image_encoder": matrix._seeded(lambda: transformers.SiglipVisionModel(config)),
        "feature_extractor": transformers.SiglipImageProcessorPil(size={"height": 16, "width": 16}),
        "text": {
            "prompt_embeds": prompt,
            "prompt_embeds_mask": mask,
            "prompt_embeds_2": prompt_2,
            "prompt_embeds_mask_2": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_embeds_mask": mask,
            "negative_prompt_embeds_2": negative_2,
            "negative_prompt_embeds_mask_2": mask,
        },
    }


def _hunyuan_video15_components(image_to_video: bool) -> dict[str, Any]:
    parts = _hunyuan_video15_parts()
    components = {
        "text_encoder": None,
        "tokenizer": None,
        "transformer": parts["i2v" if image_to_video else "t2v"],
        "vae": parts["vae"],
        "text_encoder_2": None,
        "tokenizer_2": None,
        "guider": diffusers.ClassifierFreeGuidance(guidance_scale=6.0),
    }
    if image_to_video:
        components |= {"image_encoder": parts["image_encoder"], "feature_extractor": parts["feature_extractor"]}
    return components


def hunyuan_video15() -> Case:
    """HunyuanVideo 1.5 text-to-video, guided by a `ClassifierFreeGuidance` guider (two passes per step)."""
    factory = matrix._factory(diffusers.HunyuanVideo15Pipeline, **_hunyuan_video15_components(False))
    call = {
        **_hunyuan_video15_parts()["text"],
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


def hunyuan_video15_image_to_video() -> Case:
    """HunyuanVideo 1.5 image-to-video: size from the image (transformer `target_size` 16), SigLIP image embeds."""
    factory = matrix._factory(diffusers.HunyuanVideo15ImageToVideoPipeline, **_hunyuan_video15_components(True))
    call = {
        "image": matrix._image(16),
        **_hunyuan_video15_parts()["text"],
        "num_frames": 9,
        "num_inference_steps": 3,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


# ------------------------------------------------------------------------------------------------ SkyReels-V2
@functools.cache
def _skyreels_i2v_transformer() -> torch.nn.Module:
    return matrix._seeded(
        lambda: diffusers.SkyReelsV2Transformer3DModel(**matrix._wan_transformer_config(in_channels=36, image_dim=4))
    )


def skyreels_v2_image_to_video() -> Case:
    factory = matrix._factory(
        diffusers.SkyReelsV2ImageToVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_skyreels_i2v_transformer(),
        vae=matrix._wan_vae(),
        **matrix._clip_vision(),
    )
    call = {
        "image": matrix._image(),
        **matrix._wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "output_type": "latent",
    }
    return Case(factory, call, matrix._unipc_flow(flow_shift=5.0))


def skyreels_v2_diffusion_forcing_image_to_video() -> Case:
    """Diffusion forcing from a first and a last image, asynchronous (`ar_step=1`), one UniPC copy per frame."""
    factory = matrix._factory(
        diffusers.SkyReelsV2DiffusionForcingImageToVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=matrix._skyreels_transformer(),
        vae=matrix._wan_vae(),
    )
    call = {
        "image": matrix._image(),
        "last_image": matrix._image(seed=11),
        "prompt": None,
        **matrix._wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "ar_step": 1,
        "causal_block_size": 1,
        "output_type": "latent",
    }
    return Case(factory, call, matrix._unipc_flow(flow_shift=5.0))


def skyreels_v2_diffusion_forcing_video_to_video() -> Case:
    """Diffusion-forcing video extension: 7 frames extended to 17 in windows of 5 overlapping by 3."""
    factory = matrix._factory(
        diffusers.SkyReelsV2DiffusionForcingVideoToVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=matrix._skyreels_transformer(),
        vae=matrix._wan_vae(),
    )
    call = {
        "video": matrix._video(7),
        "prompt": None,
        **matrix._wan_text(),
        "height": 16,
        "width": 16,
        "num_frames": 17,
        "base_num_frames": 5,
        "overlap_history": 3,
        "num_inference_steps": 3,
        "guidance_scale": 6.0,
        "output_type": "latent",
    }
    return Case(factory, call, matrix._unipc_flow(flow_shift=5.0))


# ------------------------------------------------------------------------------------------------ Wan Animate
@functools.cache
def _wan_animate_transformer() -> torch.nn.Module:
    return matrix._seeded(
        lambda: diffusers.WanAnimateTransformer3DModel(
            **matrix._wan_transformer_config(in_channels=36, image_dim=4),
            latent_channels=16,
            motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
            motion_encoder_size=16,
            motion_style_dim=8,
            motion_dim=4,
            motion_encoder_dim=16,
            face_encoder_hidden_dim=16,
            face_encoder_num_heads=2,
            inject_face_latents_blocks=2,
        )
    )


def wan_animate(mode: str = "animate") -> Case:
    """Wan Animate: 17 frames driven by pose and face videos, one `set_timesteps` per segment (one segment here);
    "replace" mode adds background and mask videos."""
    factory = matrix._factory(
        diffusers.WanAnimatePipeline,
        tokenizer=None,
        text_encoder=None,
        transformer=_wan_animate_transformer(),
        vae=matrix._wan_vae(),
        **matrix._clip_vision(),
    )
    call: dict[str, Any] = {
        "image": matrix._image(),
        "pose_video": matrix._video(17, seed=20),
        "face_video": matrix._video(17, seed=40),
        **matrix._wan_text(),
        "height": 16,
        "width": 16,
        "segment_frame_length": 77,
        "prev_segment_conditioning_frames": 1,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "mode": mode,
        "output_type": "latent",
    }
    if mode == "replace":
        mask = [frame.convert("L") for frame in matrix._video(17, seed=60)]
        call |= {"background_video": matrix._video(17, seed=80), "mask_video": mask}
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


# ------------------------------------------------------------------------------------------------ Sana-Video
def sana_image_to_video() -> Case:
    """Sana-Video image-to-video on FlowMatchEuler (its tests' scheduler): the first latent frame is kept clean."""
    factory = matrix._factory(
        diffusers.SanaImageToVideoPipeline,
        tokenizer=None,
        text_encoder=None,
        vae=matrix._wan_vae(),
        transformer=matrix._sana_video_transformer(),
    )
    prompt, negative = matrix._embeds((1, 7, 8), (1, 7, 8))
    mask = torch.ones(1, 7, dtype=torch.long)
    call = {
        "image": matrix._image(32),
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
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=8.0))


# ------------------------------------------------------------------------------------------------ Kandinsky 5
@functools.cache
def _kandinsky5_i2v_vae() -> torch.nn.Module:
    """Three blocks (the text-to-video case's two never encode): a true 8x spatial compression for the image."""
    return matrix._seeded(
        lambda: diffusers.AutoencoderKLHunyuanVideo(
            act_fn="silu",
            block_out_channels=[32, 64, 64],
            down_block_types=["HunyuanVideoDownBlock3D"] * 3,
            in_channels=3,
            latent_channels=16,
            layers_per_block=1,
            mid_block_add_attention=False,
            norm_num_groups=32,
            out_channels=3,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            up_block_types=["HunyuanVideoUpBlock3D"] * 3,
        )
    )


@functools.cache
def _kandinsky5_i2v_transformer() -> torch.nn.Module:
    return matrix._seeded(
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
            visual_cond=True,  # the image latents and their mask ride along the latents' channels
            attention_type="regular",
        )
    )


def kandinsky5_image_to_video() -> Case:
    """Kandinsky 5 I2V: steps a channel slice of the latents (the rest is the image condition), written back."""
    parts = matrix._kandinsky5_parts()
    factory = matrix._factory(
        diffusers.Kandinsky5I2VPipeline,
        transformer=_kandinsky5_i2v_transformer(),
        vae=_kandinsky5_i2v_vae(),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    call = {
        "image": matrix._image(32),
        **parts["text"],
        "height": 32,
        "width": 32,
        "num_frames": 17,  # 5 latent frames: fewer leave `normalize_first_frame` a one-element std (NaN)
        "num_inference_steps": 3,
        "guidance_scale": 4.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))


# ------------------------------------------------------------------------------------------------ Cosmos 2
def cosmos2_video_to_world() -> Case:
    """Cosmos 2 video-to-world from one image: registered sigma range, conditioning frames re-noised per step."""
    factory = matrix._factory(
        diffusers.Cosmos2VideoToWorldPipeline,
        text_encoder=None,
        tokenizer=None,
        transformer=matrix._cosmos2_5_transformer(),
        vae=matrix._wan_vae(),
        safety_checker=matrix._PassThroughSafetyChecker(),
    )
    call = {
        "image": matrix._image(32),
        **matrix._wan_text(),
        "height": 32,
        "width": 32,
        "num_frames": 9,
        "num_inference_steps": 3,
        "guidance_scale": 3.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True))


# ------------------------------------------------------------------------------------------------ EasyAnimate
@functools.cache
def _easyanimate_inpaint_transformer() -> torch.nn.Module:
    return matrix._seeded(
        lambda: diffusers.EasyAnimateTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=4 + 4 + 4,  # the latents, the VAE-encoded mask and the masked-video latents
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=16,
            num_layers=1,
            sample_width=16,
            sample_height=16,
            patch_size=2,
            # True resizes the mask with `vae.config.cache_mag_vae`, which AutoencoderKLMagvit's config lacks
            resize_inpaint_mask_directly=False,
        )
    )


def easyanimate_inpaint() -> Case:
    """EasyAnimate inpaint at `strength` 0.7: `set_begin_index`, `scale_noise` of the video latents into the first
    kept timestep, mask and masked-video latents concatenated on channels."""
    parts = matrix._easyanimate_parts()
    factory = matrix._factory(
        diffusers.EasyAnimateInpaintPipeline,
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        transformer=_easyanimate_inpaint_transformer(),
    )
    mask = torch.zeros(1, 1, 5, 16, 16)
    mask[..., 8:] = 1.0  # repaint the right half
    call = {
        **parts["text"],
        "video": torch.rand((1, 3, 5, 16, 16), generator=torch.Generator().manual_seed(5)),
        "mask_video": mask,
        "height": 16,
        "width": 16,
        "num_frames": 5,
        "num_inference_steps": 4,
        "strength": 0.7,
        "guidance_scale": 6.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ Stable Audio 3
@functools.cache
def _stable_audio3_parts() -> dict[str, Any]:
    transformer = matrix._seeded(
        lambda: diffusers.StableAudio3DiTModel(
            io_channels=8,
            patch_size=1,
            embed_dim=32,
            depth=2,
            num_heads=4,
            cond_token_dim=16,
            global_cond_dim=16,
            local_add_cond_dim=8 + 1,  # the inpaint pipeline's reference latents and mask
            timestep_features_dim=16,
            ff_mult=2,
            num_memory_tokens=3,
            use_differential_attention=False,
        )
    )
    vae = matrix._seeded(
        lambda: diffusers.AutoencoderSAME(
            audio_channels=2,
            patch_size=2,
            encoder_channels=8,
            encoder_c_mults=(2,),
            encoder_strides=(2,),
            encoder_transformer_depths=(1,),
            latent_dim=8,
            use_differential_attention=False,
            dim_heads=4,
            ff_mult=2,
            sampling_rate=16,
        )
    )
    duration_embedder = matrix._seeded(lambda: diffusers.StableAudio3DurationEmbedder(output_dim=16, fourier_dim=16))
    prompt, negative = matrix._embeds((1, 7, 16), (1, 7, 16))
    mask = torch.ones(1, 7, dtype=torch.long)
    return {
        "components": {
            "vae": vae,
            "text_encoder": None,
            "tokenizer": None,
            "duration_embedder": duration_embedder,
            "transformer": transformer,
        },
        "text": {"prompt_embeds": prompt, "encoder_attention_mask": mask},
        "negative": {"negative_prompt_embeds": negative, "negative_encoder_attention_mask": mask},
    }


def _stable_audio3_scheduler(stochastic_sampling: bool) -> Any:
    return diffusers.FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1, shift=1.0, stochastic_sampling=stochastic_sampling
    )


def _reference_audio() -> torch.Tensor:
    return torch.rand((1, 2, 32), generator=torch.Generator().manual_seed(5)) * 2 - 1


def stable_audio3(stochastic_sampling: bool = False) -> Case:
    """Stable Audio 3 text-to-audio with CFG: custom logSNR `sigmas` on `num_train_timesteps=1`; with
    `stochastic_sampling` (the distilled ping-pong sampler) the step draws fresh noise from the generator."""
    parts = _stable_audio3_parts()
    factory = matrix._factory(diffusers.StableAudio3Pipeline, **parts["components"])
    call = {
        **parts["text"],
        **parts["negative"],
        "duration": 2.0,
        "num_inference_steps": 4,
        "guidance_scale": 3.0,
        "output_type": "latent",
    }
    return Case(factory, call, _stable_audio3_scheduler(stochastic_sampling))


def stable_audio3_audio_to_audio(stochastic_sampling: bool = False, init_noise_level: float = 0.6) -> Case:
    """Stable Audio 3 audio-to-audio: the reference latents noised to `init_noise_level` start a schedule whose first
    sigma is forced to that level; below 1 the second can be larger (diffusers documents this as the reference
    implementation's behaviour, kept for parity)."""
    parts = _stable_audio3_parts()
    factory = matrix._factory(diffusers.StableAudio3AudioToAudioPipeline, **parts["components"])
    call = {
        **parts["text"],
        "audio": _reference_audio(),
        "duration": 2.0,
        "init_noise_level": init_noise_level,
        "num_inference_steps": 4,
        "output_type": "latent",
    }
    return Case(factory, call, _stable_audio3_scheduler(stochastic_sampling))


def stable_audio3_inpaint(stochastic_sampling: bool = False) -> Case:
    """Stable Audio 3 inpaint: the second half of the reference regenerated, the rest given as local conditioning."""
    parts = _stable_audio3_parts()
    factory = matrix._factory(diffusers.StableAudio3InpaintPipeline, **parts["components"])
    call = {
        **parts["text"],
        "audio": _reference_audio(),
        "duration": 2.0,
        "mask_start_seconds": 1.0,
        "mask_end_seconds": 2.0,
        "num_inference_steps": 4,
        "output_type": "latent",
    }
    return Case(factory, call, _stable_audio3_scheduler(stochastic_sampling))


# ------------------------------------------------------------------------------------------------ LongCat AudioDiT
@functools.cache
def _longcat_audio_parts() -> dict[str, Any]:
    tokenizer = _word_level_t5()["tokenizer"]
    config = transformers.UMT5Config(
        d_model=32, num_layers=1, num_heads=4, d_ff=64, vocab_size=len(tokenizer), dropout_rate=0.0
    )
    return {
        "vae": matrix._seeded(
            lambda: diffusers.LongCatAudioDiTVae(
                in_channels=1,
                channels=16,
                c_mults=[1, 2],
                strides=[2],
                latent_dim=8,
                encoder_latent_dim=16,
                downsampling_ratio=2,
                sample_rate=24000,
            )
        ),
        "text_encoder": matrix._seeded(lambda: transformers.UMT5EncoderModel(config)),
        "tokenizer": tokenizer,
        "transformer": matrix._seeded(
            lambda: diffusers.LongCatAudioDiTTransformer(
                dit_dim=64, dit_depth=2, dit_heads=4, dit_text_dim=32, latent_dim=8, text_conv=False
            )
        ),
    }


def longcat_audio_dit() -> Case:
    """LongCat AudioDiT on its default `invert_sigmas=True` FlowMatchEuler (custom `sigmas`, `set_begin_index(0)`),
    with CFG; it takes only a prompt string (the in-memory word-level tokenizer and a tiny UMT5)."""
    factory = matrix._factory(diffusers.LongCatAudioDiTPipeline, **_longcat_audio_parts())
    call = {
        "prompt": "a robot walks",
        "negative_prompt": "a robot runs",
        "audio_duration_s": 0.1,
        "num_inference_steps": 4,
        "guidance_scale": 4.0,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0, invert_sigmas=True))


# ------------------------------------------------------------------------------------------------ ACE-Step
@functools.cache
def _ace_step_parts() -> dict[str, Any]:
    tokenizer = _word_level_t5()["tokenizer"]
    attention = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}
    blocks = {"hidden_size": 32, "intermediate_size": 64, **attention, "rope_theta": 10000.0, "sliding_window": 16}
    qwen3 = transformers.Qwen3Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        **attention,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
    )
    return {
        "transformer": matrix._seeded(
            lambda: diffusers.AceStepTransformer1DModel(
                **blocks, num_hidden_layers=2, in_channels=24, audio_acoustic_hidden_dim=8, patch_size=2
            )
        ),
        "condition_encoder": matrix._seeded(
            lambda: diffusers.AceStepConditionEncoder(
                **blocks,
                text_hidden_dim=32,
                timbre_hidden_dim=8,
                num_lyric_encoder_hidden_layers=2,
                num_timbre_encoder_hidden_layers=2,
            )
        ),
        "vae": matrix._seeded(
            lambda: diffusers.AutoencoderOobleck(
                encoder_hidden_size=6,
                downsampling_ratios=[1, 2],
                decoder_channels=3,
                decoder_input_channels=8,
                audio_channels=2,
                channel_multiples=[2, 4],
                sampling_rate=4,
            )
        ),
        "text_encoder": matrix._seeded(lambda: transformers.Qwen3Model(qwen3)),
        "tokenizer": tokenizer,
        "audio_tokenizer": matrix._seeded(
            lambda: diffusers.AceStepAudioTokenizer(
                **blocks,
                audio_acoustic_hidden_dim=8,
                pool_window_size=2,
                fsq_dim=32,
                fsq_input_levels=[4, 4, 4],
                fsq_input_num_quantizers=1,
                num_attention_pooler_hidden_layers=1,
            )
        ),
        "audio_token_detokenizer": matrix._seeded(
            lambda: diffusers.AceStepAudioTokenDetokenizer(
                **blocks, audio_acoustic_hidden_dim=8, pool_window_size=2, num_attention_pooler_hidden_layers=1
            )
        ),
    }


def ace_step() -> Case:
    """ACE-Step text-to-music: its own shifted `sigmas` on `num_train_timesteps=1`, CFG; prompt and lyrics strings
    through the in-memory word-level tokenizer and a tiny Qwen3."""
    factory = matrix._factory(diffusers.AceStepPipeline, **_ace_step_parts())
    call = {
        "prompt": "a robot walks",
        "lyrics": "a robot runs",
        "audio_duration": 0.4,
        "num_inference_steps": 4,
        "guidance_scale": 5.0,
        "max_text_length": 32,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))


# ------------------------------------------------------------------------------------------------ not built
#: Pipelines in scope that this module does not build, with the reason.
CANNOT_RUN_OFFLINE: dict[str, str] = {
    "EasyAnimateControlPipeline": (
        "diffusers 0.42.1 cannot call it: `__call__` passes `text_encoder_index=0` to its own `encode_prompt`, which "
        "takes no such argument (TypeError before any scheduler use)"
    ),
}
