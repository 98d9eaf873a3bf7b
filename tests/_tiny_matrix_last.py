"""The last tiny, randomly initialised pipelines built offline (no hub download, no weights) for the drop-in pipeline
matrix (`test_pipeline_matrix_last.py`): Cosmos 3 Omni, Kandinsky 6 video super-resolution and text+image to
audio+video, SANA-WM, DreamLite Mobile and the combined VisualCloze pipeline (generation, then SDEdit upsampling on the
same scheduler). Each builder returns a `_tiny_video_matrix.Case` (a scheduler -> pipeline factory, the call's keyword
arguments and the diffusers scheduler to start from) and reuses the other matrix modules' seeded, cached parts (Wan,
HunyuanVideo and LTX-2 VAEs, the VisualCloze parts) where they fit; new parts follow the `get_dummy_components()` of
diffusers' own tests where those exist (Cosmos 3, DreamLite Mobile) and are otherwise the smallest configs the models
accept (Kandinsky 6, SANA-WM have no tests in diffusers' tree), seeded and cached the same way so both runs of a case
see the same weights. Tokenizers are word- or character-level ones built in memory. Pipelines in scope that are not
built are listed in `CANNOT_RUN_OFFLINE` with the reason, and those named but out of scope in `OUT_OF_SCOPE`.
"""

from __future__ import annotations

import functools
from typing import Any

import _tiny_image_matrix as image_matrix
import _tiny_image_matrix_more as image_more
import _tiny_video_matrix as matrix
import _tiny_video_matrix_more as video_more
import diffusers
import numpy as np
import tokenizers
import torch
import transformers
from diffusers.models.autoencoders.autoencoder_kandinsky6_sr import Kandinsky6SRVAE
from diffusers.models.transformers.transformer_kandinsky6_sr import Kandinsky6SRTransformer3DModel

Case = matrix.Case


# ------------------------------------------------------------------------------------------------ Cosmos 3 Omni
_COSMOS3_WORDS = ["<pad>", "<unk>", "<|im_end|>", "<|vision_start|>", "user", "assistant", "a", "dog"]


@functools.cache
def _cosmos3_parts() -> dict[str, Any]:
    """The joint Cosmos 3 transformer of diffusers' test (one layer, hidden size 6) over an in-memory word-level
    tokenizer with a minimal chat template (the pipeline takes raw token ids, no text encoder) and the Wan VAE."""
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({word: index for index, word in enumerate(_COSMOS3_WORDS)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}"
    )
    transformer = matrix._seeded(
        lambda: diffusers.Cosmos3OmniTransformer(
            head_dim=6,
            hidden_act="relu2",
            hidden_size=6,
            intermediate_size=12,
            latent_channel=16,
            latent_patch_size=1,
            num_attention_heads=1,
            num_hidden_layers=1,
            num_key_value_heads=1,
            patch_latent_dim=16,
            qk_norm_for_text=False,
            rms_norm_eps=1e-5,
            rope_axes_dim=[1, 1, 1],
            vocab_size=len(_COSMOS3_WORDS),
            dtype="float32",
        )
    )
    return {"transformer": transformer, "text_tokenizer": tokenizer, "vae": matrix._wan_vae()}


def cosmos3_omni(use_native_flow_schedule: bool = False) -> Case:
    """Cosmos 3 Omni text-to-video (5 frames, 16x16) with CFG on its type-hinted UniPC (flow sigmas): reads
    `scheduler.sigmas[i]` for the model's timestep; with `use_native_flow_schedule` it passes its own `sigmas`."""
    factory = matrix._factory(
        diffusers.Cosmos3OmniPipeline,
        **_cosmos3_parts(),
        enable_safety_checker=False,
        use_native_flow_schedule=use_native_flow_schedule,
    )
    call = {
        "prompt": "a dog",
        "negative_prompt": "a",
        "height": 16,
        "width": 16,
        "num_frames": 5,
        "num_inference_steps": 3,
        "guidance_scale": 3.0,
        "use_system_prompt": False,
        "add_resolution_template": False,
        "add_duration_template": False,
        "output_type": "latent",
    }
    return Case(factory, call, matrix._unipc_flow())


# ------------------------------------------------------------------------------------------------ Kandinsky 6 SR
@functools.cache
def _kandinsky6_sr_parts() -> dict[str, torch.nn.Module]:
    """A 3-level K-VAE (4 latent channels, 4x spatial and 2x temporal compression) and a one-block SR transformer
    trained, as it were, on 64x64 tiles (16x16 latents: two 8x8 NABLA blocks a side)."""
    vae = matrix._seeded(
        lambda: Kandinsky6SRVAE(
            latent_channels=4,
            encoder_block_out_channels=(8, 8, 8),
            decoder_block_out_channels=(8, 8, 8),
            layers_per_block=1,
            temporal_compression_ratio=2,
        )
    )
    transformer = matrix._seeded(
        lambda: Kandinsky6SRTransformer3DModel(
            in_visual_dim=4,
            out_visual_dim=4,
            time_dim=16,
            model_dim=32,
            ff_dim=64,
            num_visual_blocks=1,
            axes_dims=(4, 6, 6),
            tile_sizes=((64, 64),),
        )
    )
    return {"transformer": transformer, "vae": vae}


def kandinsky6_sr() -> Case:
    """Kandinsky 6 SR at 2x: a 3-frame 32x48 video in two overlapping 32x32 tiles, each denoised from noised
    low-resolution latents with its own `retrieve_timesteps` on the one scheduler; the output is the blended video."""
    factory = matrix._factory(diffusers.Kandinsky6SRPipeline, **_kandinsky6_sr_parts())
    video = torch.rand((1, 3, 3, 32, 48), generator=torch.Generator().manual_seed(5))
    call = {"video": video, "resolution_scale": 2, "num_inference_steps": 3, "output_type": "pt"}
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ DreamLite Mobile
_DREAMLITE_DIM = 16  # the Qwen3-VL hidden size = the UNet's cross-attention size


@functools.cache
def _dreamlite_mobile_parts() -> dict[str, Any]:
    """diffusers' test parts (a DreamLite UNet, a tiny AutoencoderTiny, a tiny Qwen3-VL) with an in-memory
    character-level tokenizer, so the generate template outlasts the 34 template tokens the pipeline drops. The
    Qwen3-VL processor is only used by the edit mode (an input image), so it is `None`."""
    config = transformers.Qwen3VLConfig(
        text_config={
            "hidden_size": _DREAMLITE_DIM,
            "intermediate_size": _DREAMLITE_DIM,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": 8,
            "head_dim": 8,
        },
        vision_config={
            "depth": 1,
            "hidden_size": _DREAMLITE_DIM,
            "intermediate_size": _DREAMLITE_DIM,
            "num_heads": 2,
            "out_channels": _DREAMLITE_DIM,
            "out_hidden_size": _DREAMLITE_DIM,
            "patch_size": 14,
        },
    )
    words = ["<pad>", "<unk>", "a", "c", "t"]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [tokenizers.pre_tokenizers.Whitespace(), tokenizers.pre_tokenizers.Split("", "isolated")]
    )
    unet = matrix._seeded(
        lambda: diffusers.DreamLiteUNetModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DreamLiteCrossAttnNoSelfAttnDownBlock2D", "DreamLiteCrossAttnDownBlock2D"),
            up_block_types=("DreamLiteCrossAttnUpBlock2D", "DreamLiteUpBlock2D"),
            block_out_channels=(32, 64),
            cross_attention_dim=_DREAMLITE_DIM,
            attention_head_dim=8,
            layers_per_block=1,
            norm_num_groups=8,
            transformer_layers_per_block=1,
        )
    )
    vae = matrix._seeded(
        lambda: diffusers.AutoencoderTiny(
            in_channels=3,
            out_channels=3,
            encoder_block_out_channels=(32, 32),
            decoder_block_out_channels=(32, 32),
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        )
    )
    return {
        "text_encoder": matrix._seeded(lambda: transformers.Qwen3VLForConditionalGeneration(config)),
        "tokenizer": transformers.PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>"
        ),
        "processor": None,
        "vae": vae,
        "unet": unet,
    }


def dreamlite_mobile() -> Case:
    """DreamLite Mobile text-to-image (generate mode, guidance distilled away): its own `sigmas` and a dynamic-shift
    `mu` on FlowMatchEuler."""
    factory = matrix._factory(diffusers.DreamLiteMobilePipeline, **_dreamlite_mobile_parts())
    call = {"prompt": "a cat", "height": 32, "width": 32, "num_inference_steps": 3, "output_type": "latent"}
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ VisualCloze
def visualcloze(upsampling_strength: float = 0.6) -> Case:
    """The combined VisualClozePipeline: the generation pipeline (one in-context row and the query row, 32x32 a cell)
    then, on the same scheduler, SDEdit upsampling of its PIL output to 48x48 at `upsampling_strength`."""
    parts = image_more._visualcloze_parts()
    factory = matrix._factory(
        diffusers.VisualClozePipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=image_more._word_tokenizer(77),
        text_encoder_2=parts["text_encoder_2"],
        tokenizer_2=image_more._word_tokenizer(),
        resolution=32,
    )
    image = [
        [image_matrix._image(seed=1), image_matrix._image(seed=2)],
        [image_matrix._image(seed=3), None],
    ]
    call = {
        "task_prompt": "a cat",
        "content_prompt": "a cat",
        "image": image,
        "upsampling_height": 48,
        "upsampling_width": 48,
        "upsampling_strength": upsampling_strength,
        "guidance_scale": 5.0,
        "max_sequence_length": 16,
        "num_inference_steps": 3,
        "output_type": "np",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(**image_matrix.FLUX_SHIFTING))


# ------------------------------------------------------------------------------------------------ Kandinsky 6 TI2VA
@functools.cache
def _kandinsky6_ti2va_parts() -> dict[str, Any]:
    """A one-block audio+video Kandinsky 6 transformer over the HunyuanVideo parts' 4-channel VAE and their prompt
    embedding sizes (16, pooled 8), with a tiny MMAudio VAE and vocoder: with `output_type="latent"` they are only
    read for the audio latent rate, but `sample_audio=True` requires both."""
    transformer = matrix._seeded(
        lambda: diffusers.Kandinsky6Transformer3DModel(
            in_visual_dim=4,
            out_visual_dim=4,
            in_text_dim=16,
            in_text_dim2=8,
            time_dim=16,
            patch_size=(1, 2, 2),
            model_dim=32,
            ff_dim=64,
            num_text_blocks=1,
            num_visual_blocks=1,
            axes_dims=(4, 6, 6),
            in_audio_dim=4,
            out_audio_dim=4,
            axes_dims_a=(16,),
            visual_token_type_num_embeddings=2,
        )
    )
    audio_vae = matrix._seeded(
        lambda: diffusers.MMAudioVAE(
            mel_bins=8,
            latent_channels=4,
            hidden_channels=8,
            channel_multipliers=(1,),
            layers_per_block=1,
            sample_rate=16000,
            n_fft=64,
            hop_length=16,
        )
    )
    vocoder = matrix._seeded(
        lambda: diffusers.MMAudioVocoder(
            num_mels=8,
            upsample_initial_channel=8,
            upsample_rates=(2,),
            upsample_kernel_sizes=(4,),
            resblock_kernel_sizes=(3,),
            resblock_dilation_sizes=((1,),),
        )
    )
    return {
        "transformer": transformer,
        "vae": matrix._hunyuan_video_parts()["vae"],
        "text_encoder": None,
        "tokenizer": None,
        "text_encoder_2": None,
        "tokenizer_2": None,
        "audio_vae": audio_vae,
        "vocoder": vocoder,
    }


def kandinsky6_ti2va() -> Case:
    """Kandinsky 6 text+image to audio+video with CFG: the reference frame rides as a masked tail frame, and the audio
    latents step on a deep copy of the video scheduler made right after `set_timesteps`."""
    factory = matrix._factory(diffusers.Kandinsky6TI2VAPipeline, **_kandinsky6_ti2va_parts())
    prompt, pooled, negative, negative_pooled = matrix._embeds((1, 7, 16), (1, 8), (1, 7, 16), (1, 8))
    call = {
        "image": matrix._image(32),
        "prompt_embeds": prompt,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": negative,
        "negative_pooled_prompt_embeds": negative_pooled,
        "height": 32,
        "width": 32,
        "num_frames": 9,
        "frame_rate": 24.0,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "sample_audio": True,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0))


# ------------------------------------------------------------------------------------------------ SANA-WM
@functools.cache
def _sana_wm_transformer() -> torch.nn.Module:
    """Two blocks (one linear-attention, one softmax: `softmax_every_n=2`) over the LTX-2 parts' 4-channel VAE, whose
    2x temporal stride sets the chunk Plucker channels (6 a frame)."""
    stride = video_more._ltx2_parts()["components"]["vae"].temporal_compression_ratio
    return matrix._seeded(
        lambda: diffusers.SanaWMTransformer3DModel(
            in_channels=4,
            num_layers=2,
            hidden_size=32,
            num_attention_heads=2,
            softmax_every_n=2,
            linear_head_dim=16,
            chunk_plucker_channels=6 * stride,
            chunk_plucker_post_attn_blocks=2,
            image_size=32,
            caption_channels=16,
            mixed_precision="fp32",
        )
    )


def sana_wm() -> Case:
    """SANA-WM camera-controlled image-to-video: 5 frames along a short dolly, CFG on precomputed `(1, 1, L, D)`
    prompt embeddings; the step takes the flattened `(B, tokens, C)` velocity, and the first latent frame is held
    clean (its per-token timestep pinned to 0)."""
    factory = matrix._factory(
        diffusers.SanaWMPipeline,
        tokenizer=None,
        text_encoder=None,
        vae=video_more._ltx2_parts()["components"]["vae"],
        transformer=_sana_wm_transformer(),
    )
    prompt, negative = matrix._embeds((1, 1, 8, 16), (1, 1, 8, 16))
    mask = torch.ones(1, 8)
    c2w = np.stack([np.eye(4, dtype=np.float32)] * 5)
    c2w[:, 0, 3] = np.linspace(0.0, 0.4, 5, dtype=np.float32)
    call = {
        "image": matrix._image(32),
        "prompt": "",
        "c2w": c2w,
        "intrinsics": [32.0, 32.0, 16.0, 16.0],
        "height": 32,
        "width": 32,
        "num_frames": 5,
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "prompt_embeds": prompt,
        "prompt_attention_mask": mask,
        "negative_prompt_embeds": negative,
        "negative_prompt_attention_mask": mask,
        "output_type": "latent",
    }
    return Case(factory, call, diffusers.FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------------------------------------ not built
#: Pipelines in scope that this module does not build, with the reason.
CANNOT_RUN_OFFLINE: dict[str, str] = {
    "Cosmos2_5_TransferPipeline": (
        "needs torchvision (not installed): CosmosControlNetModel.forward always resizes the padding mask with "
        "`torchvision.transforms.functional.resize`"
    ),
}

#: Pipelines named for this matrix whose `scheduler` type hint is none of the three schedulers, with the hint.
OUT_OF_SCOPE: dict[str, str] = {
    "KandinskyPipeline": "its scheduler type hint is `DDIMScheduler | DDPMScheduler`",
    "KandinskyPriorPipeline": "its scheduler type hint is `UnCLIPScheduler`",
}
