"""More tiny image and edit pipelines for the scheduler matrix, in the pattern of `_tiny_image_matrix`: ControlNet,
PAG, inpainting and edit variants of the SD3, Flux, Chroma, FLUX.2, Qwen-Image and Z-Image families, plus newer image
pipelines (Kandinsky 5 image-to-image, the HunyuanImage refiner, LongCat-Image, ERNIE-Image, JoyImage, VisualCloze,
pixel-space PRX, Bria Fibo 2). Each builder returns `(factory, call_kwargs, scheduler)` exactly as there: tiny seeded
components built offline from config and cached, precomputed prompt embeddings in place of text encoders (except
where a pipeline has no way in for them: there one-layer text encoders and a four-word tokenizer, all built offline),
no `generator` in the call. The tiny configs follow the `get_dummy_components()` of diffusers' own pipeline tests
where there is one, shrunk to one layer; pipelines this module does not build are listed with the reason in
`CANNOT_RUN_OFFLINE`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import _tiny_image_matrix as matrix
import diffusers
import tokenizers
import torch
import transformers
from _tiny_image_matrix import STEPS, Built, _factory, _flow, _image, _kl_vae, _mask, _seeded

#: Pipelines of this module's list that it does not run, and why.
CANNOT_RUN_OFFLINE: dict[str, str] = {
    "JoyImageEditPlusPipeline": (
        "no way in for prompt embeddings alone: it builds its image-tagged prompts from `prompt` (`len(prompt)`) "
        "before looking at `prompt_embeds`, and `check_inputs` refuses both together; so it needs its Qwen3-VL "
        "processor and vision tower to encode the prompt with its images (the processor's files are on the hub; "
        "assembling one offline was not attempted in time)"
    ),
}


def _rand(*shape: int, seed: int = 5) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ SD3
@functools.cache
def _sd3_inpaint_controlnet() -> torch.nn.Module:
    """An SD3 ControlNet over 16-channel latents, with the inpainting mask as one extra conditioning channel."""
    return _seeded(
        lambda: diffusers.SD3ControlNetModel(
            sample_size=32,
            patch_size=1,
            in_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=32,
            caption_projection_dim=32,
            pooled_projection_dim=64,
            out_channels=16,
            extra_conditioning_channels=1,
        )
    )


def sd3_controlnet_inpainting() -> Built:
    factory, call, scheduler = matrix._sd3(
        diffusers.StableDiffusion3ControlNetInpaintingPipeline,
        matrix._sd3_inpaint_parts(),
        control_image=_rand(1, 3, 32, 32),
        control_mask=_rand(1, 1, 32, 32, seed=6),
        controlnet_conditioning_scale=0.95,
    )
    factory = factory.with_components(controlnet=_sd3_inpaint_controlnet(), image_encoder=None, feature_extractor=None)
    return factory, call, scheduler


def sd3_pag_img2img() -> Built:
    factory, call, scheduler = matrix._sd3(
        diffusers.StableDiffusion3PAGImg2ImgPipeline, image=_image(), strength=0.8, pag_scale=3.0
    )
    return factory.with_components(pag_applied_layers="blocks.0"), call, scheduler


# ------------------------------------------------------------------------------------------------ Flux ControlNet
@functools.cache
def _flux_inpaint_controlnet() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.FluxControlNetModel(
            patch_size=1,
            in_channels=8,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        )
    )


def flux_controlnet_img2img() -> Built:
    parts = matrix.tiny.flux_parts()
    factory, call, scheduler = matrix._flux(
        diffusers.FluxControlNetImg2ImgPipeline,
        parts["transformer"],
        parts["vae"],
        image=_image(),
        control_image=_image(seed=8),
        strength=0.8,
        controlnet_conditioning_scale=0.5,
    )
    return factory.with_components(controlnet=matrix._flux_controlnet()), call, scheduler


def flux_controlnet_inpaint() -> Built:
    factory, call, scheduler = matrix._flux(
        diffusers.FluxControlNetInpaintPipeline,
        matrix._flux_transformer(8),
        _kl_vae(2),
        image=_image(),
        mask_image=_mask(),
        control_image=_image(seed=8),
        strength=0.8,
        controlnet_conditioning_scale=0.5,
    )
    return factory.with_components(controlnet=_flux_inpaint_controlnet()), call, scheduler


# ------------------------------------------------------------------------------------------------ Chroma
@functools.cache
def _chroma_inpaint_transformer() -> torch.nn.Module:
    """Chroma's tiny transformer (same weights), its config also saying `guidance_embeds=False`: the inpaint pipeline
    reads that key, which ChromaTransformer2DModel's config does not have."""
    transformer = copy.deepcopy(matrix._chroma_parts()["transformer"])
    transformer.register_to_config(guidance_embeds=False)
    return transformer


def chroma_inpaint() -> Built:
    factory, call, scheduler = matrix._chroma(
        diffusers.ChromaInpaintPipeline, image=_image(), mask_image=_mask(), strength=0.8
    )
    return factory.with_components(transformer=_chroma_inpaint_transformer()), call, scheduler


# ------------------------------------------------------------------------------------------------ FLUX.2 Klein
def _flux2_klein(cls: type, negative: bool = True, **extra: Any) -> Built:
    parts = matrix._flux2_parts()
    factory = _factory(
        cls,
        transformer=parts["klein_transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        is_distilled=False,
    )
    call = {
        "prompt_embeds": parts["prompt"],
        **({"negative_prompt_embeds": parts["negative"], "guidance_scale": 4.0} if negative else {}),
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        **extra,
    }
    return factory, call, _flow(**matrix.FLUX2_SCHEDULER)


def flux2_klein_inpaint() -> Built:
    return _flux2_klein(diffusers.Flux2KleinInpaintPipeline, image=_image(), mask_image=_mask(), strength=0.8)


def flux2_klein_kv() -> Built:
    """Flux2KleinKVPipeline: the reference image's keys and values are cached once and reused at every step."""
    return _flux2_klein(
        diffusers.Flux2KleinKVPipeline, negative=False, image=_image(size=64, seed=8)
    )  # it refuses images under 64x64


# ------------------------------------------------------------------------------------------------ Qwen-Image ControlNet
@functools.cache
def _qwenimage_controlnet(extra_condition_channels: int = 0) -> torch.nn.Module:
    """A Qwen-Image ControlNet matching the tiny transformer (its blocks' width, 2 heads of 16)."""
    return _seeded(
        lambda: diffusers.QwenImageControlNetModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            axes_dims_rope=(8, 4, 4),
            extra_condition_channels=extra_condition_channels,
        )
    )


def qwenimage_controlnet() -> Built:
    factory, call, scheduler = matrix._qwenimage(
        diffusers.QwenImageControlNetPipeline,
        control_image=_rand(1, 3, 32, 32),
        controlnet_conditioning_scale=0.5,
    )
    return factory.with_components(controlnet=_qwenimage_controlnet()), call, scheduler


def qwenimage_controlnet_inpaint() -> Built:
    """QwenImageControlNetInpaintPipeline: the ControlNet sees the masked image's latents and the mask (packed 2x2)."""
    factory, call, scheduler = matrix._qwenimage(
        diffusers.QwenImageControlNetInpaintPipeline,
        control_image=_image(),
        control_mask=_mask(),
        controlnet_conditioning_scale=0.5,
    )
    return factory.with_components(controlnet=_qwenimage_controlnet(4)), call, scheduler


# ------------------------------------------------------------------------------------------------ Qwen-Image edit
def _qwenimage_edit(cls: type, **extra: Any) -> Built:
    """An edit pipeline at 64x64, with the cheap scale-16 VAE: it resizes the edit image to a ~1024x1024 area."""
    factory, call, scheduler = matrix._qwenimage(cls, size=64, vae=matrix._qwenimage_edit_vae(), **extra)
    return factory.with_components(processor=None), call, scheduler


def qwenimage_edit_inpaint() -> Built:
    return _qwenimage_edit(diffusers.QwenImageEditInpaintPipeline, image=_image(), mask_image=_mask(), strength=0.8)


def qwenimage_edit_plus() -> Built:
    return _qwenimage_edit(diffusers.QwenImageEditPlusPipeline, image=[_image()])


class _DtypeOnly(diffusers.ModelMixin, diffusers.ConfigMixin):
    """A stand-in text encoder for Qwen-Image-Layered, which reads only its `dtype` when given prompt embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))


@functools.cache
def _qwenimage_layered_parts() -> dict[str, torch.nn.Module]:
    """A layered transformer (layer-3D RoPE, the extra RGB/RGBA time condition) over 8 latent channels, and an RGBA
    VAE: with 4 latent channels the pipeline would take the 4-channel RGBA image for latents."""
    transformer = _seeded(
        lambda: diffusers.QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=32,
            out_channels=8,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
            use_additional_t_cond=True,
            use_layer3d_rope=True,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLQwenImage(
            base_dim=4,
            z_dim=8,
            dim_mult=[1, 1, 1, 1, 1],
            num_res_blocks=0,
            temperal_downsample=[False, False, False, False],
            input_channels=4,
            latents_mean=[0.0] * 8,
            latents_std=[1.0] * 8,
        )
    )
    return {"transformer": transformer, "vae": vae}


def qwenimage_layered() -> Built:
    """QwenImageLayeredPipeline at its smallest bucket (640x640), one layer; `prompt` is given too, or it captions the
    image with its vision-language model. Its `output_type="latent"` path is broken, so it decodes (a list of
    tensors)."""
    parts = _qwenimage_layered_parts()
    factory = _factory(
        diffusers.QwenImageLayeredPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=_DtypeOnly(),
        tokenizer=None,
        processor=None,
    )
    _, call, scheduler = matrix._qwenimage(diffusers.QwenImagePipeline)
    for key in ("height", "width"):
        del call[key]
    call.update(prompt="layers", image=_image().convert("RGBA"), layers=1, resolution=640, output_type="pt")
    return factory, call, scheduler


class _QwenImage21Tokenizer:
    def encode(self, text: str) -> list[int]:
        return [151655]  # Qwen's `<|image_pad|>`


class _QwenImage21Processor:
    """A stand-in for the Qwen3-VL processor, which QwenImage21Pipeline's constructor asks for the length of its
    tokenized system prompt and the image-pad token id; given prompt embeddings and no image, it is not used again."""

    tokenizer = _QwenImage21Tokenizer()

    def apply_chat_template(self, messages: Any, tokenize: bool = True, return_dict: bool = False) -> list[list[int]]:
        return [[0, 1, 2, 3]]


@functools.cache
def _qwenimage21_parts() -> dict[str, torch.nn.Module]:
    transformer = _seeded(
        lambda: diffusers.QwenImage21Transformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            context_in_dim=16,
            mlp_ratio=2,
            axes_dims_rope=(8, 4, 4),
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLQwenImage21(
            base_dim=4,
            decoder_base_dim=4,
            z_dim=4,
            dim_mult=[1, 1, 1, 1, 1],
            num_res_blocks=0,
            temperal_downsample=[False, False, False, False],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
    )
    return {"transformer": transformer, "vae": vae}


def qwenimage21() -> Built:
    """QwenImage21Pipeline, text to image at 64x64 (its VAE scale is 16; latents unpatched), KV cache on (unused
    without a condition image)."""
    parts = _qwenimage21_parts()
    factory = _factory(
        diffusers.QwenImage21Pipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        processor=_QwenImage21Processor(),
    )
    _, call, scheduler = matrix._qwenimage(diffusers.QwenImagePipeline, size=64)
    return factory, call, scheduler


# ------------------------------------------------------------------------------------------------ Z-Image ControlNet
@functools.cache
def _z_image_controlnet(control_in_dim: int) -> torch.nn.Module:
    """A Z-Image ControlNet for the tiny transformer (its one layer and refiner layer; the pipelines graft the
    transformer's embedders onto it with `from_transformer`)."""
    return _seeded(
        lambda: diffusers.ZImageControlNetModel(
            control_layers_places=[0],
            control_refiner_layers_places=[0],
            control_in_dim=control_in_dim,
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            dim=32,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            norm_eps=1e-5,
            qk_norm=True,
        )
    )


def _z_image_controlnet_pipeline(cls: type, control_in_dim: int, **extra: Any) -> Built:
    _, call, scheduler = matrix.z_image()
    parts = matrix._z_image_parts()
    factory = _factory(
        cls,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        controlnet=_z_image_controlnet(control_in_dim),
    )
    call = {**call, "control_image": _image(seed=8), "controlnet_conditioning_scale": 0.75, **extra}
    return factory, call, scheduler


def z_image_controlnet() -> Built:
    return _z_image_controlnet_pipeline(diffusers.ZImageControlNetPipeline, 4)


def z_image_controlnet_inpaint() -> Built:
    """ZImageControlNetInpaintPipeline: the control latents, the mask and the masked image's latents (4 + 1 + 4)."""
    return _z_image_controlnet_pipeline(
        diffusers.ZImageControlNetInpaintPipeline, 9, image=_image(), mask_image=_mask()
    )


def z_image_omni() -> Built:
    """ZImageOmniPipeline without condition images (so no SigLIP): the omni transformer path, its prompt embeddings one
    list of segments per prompt."""
    _, call, scheduler = matrix.z_image()
    parts = matrix._z_image_parts()
    factory = _factory(
        diffusers.ZImageOmniPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        siglip=None,
        siglip_processor=None,
    )
    call = {**call, "prompt_embeds": [[parts["prompt"]]], "negative_prompt_embeds": [[parts["negative"]]]}
    return factory, call, scheduler


@functools.cache
def _z_image_omni_parts() -> dict[str, Any]:
    """The omni transformer with a SigLIP feature embedder, a tiny SigLIP 2 vision model and its image processor, and
    a bfloat16 copy of Z-Image's VAE: the pipeline encodes condition images with `vae.encode(image.bfloat16())`."""

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
            siglip_feat_dim=16,
            rope_theta=256.0,
            t_scale=1000.0,
            axes_dims=[8, 4, 4],
            axes_lens=[256, 32, 32],
        )
        with torch.no_grad():  # built with `torch.empty`: fix them, or they may hold NaNs
            for name, parameter in transformer.named_parameters():
                if "pad_token" in name:
                    parameter.fill_(1.0)
        return transformer

    siglip = _seeded(
        lambda: transformers.Siglip2VisionModel(
            transformers.Siglip2VisionConfig(
                hidden_size=16,
                intermediate_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_patches=16,
                patch_size=8,
            )
        )
    )
    return {
        "transformer": _seeded(build),
        "siglip": siglip,
        "siglip_processor": transformers.Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16),
        "vae": copy.deepcopy(matrix._z_image_parts()["vae"]).to(torch.bfloat16),
    }


def z_image_omni_edit() -> Built:
    """ZImageOmniPipeline with one condition image (64x64, its minimum): SigLIP features and the image's clean latents
    join the prompt's segments (one per image, plus the target's)."""
    _, call, scheduler = matrix.z_image()
    parts = _z_image_omni_parts()
    factory = _factory(
        diffusers.ZImageOmniPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        siglip=parts["siglip"],
        siglip_processor=parts["siglip_processor"],
    )
    prompt, negative = matrix._z_image_parts()["prompt"], matrix._z_image_parts()["negative"]
    call = {
        **call,
        "prompt_embeds": [[prompt, prompt]],
        "negative_prompt_embeds": [[negative, negative]],
        "image": [_image(64)],
    }
    return factory, call, scheduler


# ------------------------------------------------------------------------------------------------ Kandinsky 5
@functools.cache
def _kandinsky5_i2i_parts() -> dict[str, torch.nn.Module]:
    """A visually conditioned Kandinsky 5 transformer, and a 4-block VAE: the pipeline sizes the image latents with a
    fixed scale factor of 8."""
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
            visual_cond=True,
            attention_type="regular",
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKL(
            block_out_channels=(4, 8, 8, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
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
    return {"transformer": transformer, "vae": vae}


def kandinsky5_i2i() -> Built:
    parts = _kandinsky5_i2i_parts()
    factory = _factory(
        diffusers.Kandinsky5I2IPipeline,
        attributes={"resolutions": [(32, 32)]},  # it snaps every request to one of these (1024x1024 and up)
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    _, call, scheduler = matrix.kandinsky5_t2i()
    return factory, {**call, "image": _image()}, scheduler


# ------------------------------------------------------------------------------------------------ HunyuanImage refiner
@functools.cache
def _hunyuan_image_refiner_parts() -> dict[str, torch.nn.Module]:
    """The refiner's 3D transformer (latents and the image's latents, 8 + 8 channels; distilled guidance embedding) and
    a tiny causal 3D VAE (scale 16; its 4 latent channels become 8 when two frames are folded into one)."""
    transformer = _seeded(
        lambda: diffusers.HunyuanImageTransformer2DModel(
            in_channels=16,
            out_channels=8,
            num_attention_heads=4,
            attention_head_dim=8,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=(1, 1, 1),
            guidance_embeds=True,
            text_embed_dim=32,
            text_embed_2_dim=None,
            rope_axes_dim=(4, 2, 2),
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLHunyuanImageRefiner(
            latent_channels=4,
            block_out_channels=(16, 16, 16, 16, 16),
            layers_per_block=1,
            spatial_compression_ratio=16,
            temporal_compression_ratio=4,
        )
    )
    return {"transformer": transformer, "vae": vae}


def hunyuan_image_refiner() -> Built:
    """HunyuanImageRefinerPipeline at 64x64 (its VAE's scale is 16), distilled (no guider)."""
    parts = _hunyuan_image_refiner_parts()
    factory = _factory(
        diffusers.HunyuanImageRefinerPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        guider=None,
    )
    _, call, scheduler = matrix.hunyuan_image()
    call = {key: value for key, value in call.items() if not key.endswith("_2")}  # it has no glyph encoder
    call.update(image=_image(64), height=64, width=64)
    return factory, call, scheduler


# ------------------------------------------------------------------------------------------------ ERNIE-Image
@functools.cache
def _ernie_image_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.ErnieImageTransformer2DModel(
            hidden_size=32,
            num_attention_heads=2,
            num_layers=1,
            ffn_hidden_size=64,
            in_channels=4,
            out_channels=4,
            patch_size=1,
            text_in_dim=16,
            rope_axes_dim=(8, 4, 4),
        )
    )


def ernie_image() -> Built:
    """ErnieImagePipeline (it calls `scheduler.set_timesteps(sigmas=...)` itself); one latent channel of the FLUX.2 VAE
    patchified 2x2, so 4 channels."""
    factory = _factory(
        diffusers.ErnieImagePipeline,
        transformer=_ernie_image_transformer(),
        vae=matrix._flux2_parts()["vae"],
        text_encoder=None,
        tokenizer=None,
        pe=None,
        pe_tokenizer=None,
    )
    prompt, negative = matrix._embeds((8, 16), (8, 16))
    call = {
        "prompt_embeds": [prompt],
        "negative_prompt_embeds": [negative],
        "guidance_scale": 4.0,
        "use_pe": False,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=3.0)


# ------------------------------------------------------------------------------------------------ offline text encoders
def _word_tokenizer(model_max_length: int = 512) -> Any:
    """A tokenizer built offline: a four-word vocabulary (every other word is `<unk>`), split on whitespace."""
    vocabulary = {"<pad>": 0, "<unk>": 1, "a": 2, "cat": 3}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", model_max_length=model_max_length
    )


@functools.cache
def _qwen25_vl() -> torch.nn.Module:
    """A one-layer Qwen2.5-VL (hidden size 16) over `_word_tokenizer`'s vocabulary."""
    text = {
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        "rope_theta": 1000000.0,
        "vocab_size": 8,
        "bos_token_id": None,
        "eos_token_id": None,
    }
    vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16}
    config = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, hidden_size=16, vocab_size=8, bos_token_id=None, eos_token_id=None
    )
    return _seeded(lambda: transformers.Qwen2_5_VLForConditionalGeneration(config))


# ------------------------------------------------------------------------------------------------ LongCat-Image
@functools.cache
def _longcat_image_transformer() -> torch.nn.Module:
    return _seeded(
        lambda: diffusers.LongCatImageTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            pooled_projection_dim=16,
            axes_dims_rope=[4, 4, 8],
        )
    )


def longcat_image() -> Built:
    """LongCatImagePipeline with a tiny offline text encoder and tokenizer: it has no way in for prompt embeddings
    alone (`encode_prompt` takes `len(prompt)` even when given `prompt_embeds`, and `check_inputs` refuses both)."""
    factory = _factory(
        diffusers.LongCatImagePipeline,
        transformer=_longcat_image_transformer(),
        vae=matrix._kl_vae_x2(16),  # 16 latent channels, packed 2x2
        text_encoder=_qwen25_vl(),
        tokenizer=_word_tokenizer(),
        text_processor=None,
    )
    call = {
        "prompt": "a cat",
        "negative_prompt": "",
        "guidance_scale": 4.0,
        "enable_prompt_rewrite": False,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**matrix.FLUX_SHIFTING)


# ------------------------------------------------------------------------------------------------ JoyImage
@functools.cache
def _joyimage_parts() -> dict[str, torch.nn.Module]:
    transformer = _seeded(
        lambda: diffusers.JoyImageEditTransformer3DModel(
            patch_size=[1, 2, 2],
            in_channels=16,
            hidden_size=32,
            num_attention_heads=2,
            text_dim=16,
            num_layers=1,
            rope_dim_list=[4, 6, 6],
            theta=256,
        )
    )
    vae = _seeded(
        lambda: diffusers.AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    )
    return {"transformer": transformer, "vae": vae}


def joyimage_edit() -> Built:
    parts = _joyimage_parts()
    factory = _factory(
        diffusers.JoyImageEditPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=None,
        tokenizer=None,
        processor=None,
    )
    prompt, negative = matrix._embeds((1, 8, 16), (1, 8, 16))
    call = {
        "prompt_embeds": prompt,
        "prompt_embeds_mask": matrix._ones(1, 8),
        "negative_prompt_embeds": negative,
        "negative_prompt_embeds_mask": matrix._ones(1, 8),
        "image": _image(),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(shift=3.0)


# ------------------------------------------------------------------------------------------------ VisualCloze
@functools.cache
def _visualcloze_parts() -> dict[str, Any]:
    """Flux parts over 1-channel latents: the transformer sees the latents, the masked-image latents and the mask (12
    packed channels); a one-layer CLIP and T5 over `_word_tokenizer`'s vocabulary."""
    transformer = _seeded(
        lambda: diffusers.FluxTransformer2DModel(
            patch_size=1,
            in_channels=12,
            out_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=6,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[2, 2, 2],
        )
    )
    clip = _seeded(
        lambda: transformers.CLIPTextModel(
            transformers.CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=0,
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=1,
                vocab_size=8,
                projection_dim=32,
            )
        )
    )
    t5 = _seeded(
        lambda: transformers.T5EncoderModel(
            transformers.T5Config(vocab_size=8, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4)
        )
    )
    return {"transformer": transformer, "text_encoder": clip, "text_encoder_2": t5, "vae": _kl_vae(1)}


def visualcloze_generation() -> Built:
    """VisualClozeGenerationPipeline (one in-context row and the query row, at 32x32 a cell) with tiny offline text
    encoders and tokenizers: `check_inputs` requires `task_prompt` and refuses it together with `prompt_embeds`."""
    parts = _visualcloze_parts()
    factory = _factory(
        diffusers.VisualClozeGenerationPipeline,
        transformer=parts["transformer"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=_word_tokenizer(77),
        text_encoder_2=parts["text_encoder_2"],
        tokenizer_2=_word_tokenizer(),
        resolution=32,
    )
    image = [[_image(seed=1), _image(seed=2)], [_image(seed=3), None]]
    call = {
        "task_prompt": "a cat",
        "content_prompt": "a cat",
        "image": image,
        "guidance_scale": 5.0,
        "max_sequence_length": 16,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**matrix.FLUX_SHIFTING)


# ------------------------------------------------------------------------------------------------ PRX pixel
@functools.cache
def _prx_pixel_transformer() -> torch.nn.Module:
    """Pixel-space PRX: RGB in, a bottleneck `img_in`, resolution embeddings."""
    return _seeded(
        lambda: diffusers.PRXTransformer2DModel(
            patch_size=1,
            in_channels=3,
            context_in_dim=16,
            hidden_size=8,
            mlp_ratio=2.0,
            num_heads=2,
            depth=1,
            axes_dim=[2, 2],
            bottleneck_size=8,
            resolution_embeds=True,
        )
    )


def prx_pixel() -> Built:
    """PRXPixelPipeline: no VAE, it denoises pixels (from `randn * noise_scale`, its x-prediction made a velocity)."""
    factory = _factory(
        diffusers.PRXPixelPipeline,
        transformer=_prx_pixel_transformer(),
        text_encoder=None,
        tokenizer=None,
        prompt_max_tokens=16,
    )
    prompt, negative = matrix._embeds((1, 8, 16), (1, 8, 16))
    call = {
        "prompt_embeds": prompt,
        "prompt_attention_mask": matrix._ones(1, 8),
        "negative_prompt_embeds": negative,
        "negative_prompt_attention_mask": matrix._ones(1, 8),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "use_resolution_binning": False,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow()


# ------------------------------------------------------------------------------------------------ Bria Fibo 2
@functools.cache
def _bria_fibo2_transformer() -> torch.nn.Module:
    """One block, cross-attending (injection) at layer 0; a one-layer Perceiver turning the text into 4 gist tokens."""
    return _seeded(
        lambda: diffusers.BriaFibo2Transformer2DModel(
            in_channels=4,
            patch_size=2,
            dim=32,
            n_layers=1,
            n_refiner_layers=1,
            n_heads=2,
            cap_feat_dim=16,
            injection_layer_ids=(0,),
            perceiver_num_layers=1,
            min_num_gist_tokens=4,
            max_num_gist_tokens=8,
            gist_step=4,
            gist_min_text_len=4,
            gist_max_text_len=16,
            axes_dims=(8, 4, 4),
            axes_lens=(64, 32, 32),
        )
    )


def bria_fibo2() -> Built:
    """BriaFibo2Pipeline (text to image); its prompt embeddings are bundles of text-encoder layers, (batch, bundles,
    tokens, features): bundle 0 feeds the Perceiver, bundle 1 the injection layer."""
    factory = _factory(
        diffusers.BriaFibo2Pipeline,
        transformer=_bria_fibo2_transformer(),
        vae=matrix._flux2_parts()["vae"],
        text_encoder=None,
        processor=None,
    )
    prompt, negative = matrix._embeds((1, 2, 8, 16), (1, 2, 8, 16))
    call = {
        "prompt_embeds": prompt,
        "prompt_embeds_mask": matrix._ones(1, 8),
        "negative_prompt_embeds": negative,
        "negative_prompt_embeds_mask": matrix._ones(1, 8),
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "num_inference_steps": STEPS,
        "output_type": "latent",
    }
    return factory, call, _flow(**matrix.FLUX_SHIFTING)


# ------------------------------------------------------------------------------------------------ registry
BUILDERS: dict[str, Callable[[], Built]] = {
    "StableDiffusion3ControlNetInpaintingPipeline": sd3_controlnet_inpainting,
    "StableDiffusion3PAGImg2ImgPipeline": sd3_pag_img2img,
    "FluxControlNetImg2ImgPipeline": flux_controlnet_img2img,
    "FluxControlNetInpaintPipeline": flux_controlnet_inpaint,
    "ChromaInpaintPipeline": chroma_inpaint,
    "Flux2KleinInpaintPipeline": flux2_klein_inpaint,
    "Flux2KleinKVPipeline": flux2_klein_kv,
    "QwenImageControlNetPipeline": qwenimage_controlnet,
    "QwenImageControlNetInpaintPipeline": qwenimage_controlnet_inpaint,
    "QwenImageEditInpaintPipeline": qwenimage_edit_inpaint,
    "QwenImageEditPlusPipeline": qwenimage_edit_plus,
    "QwenImageLayeredPipeline": qwenimage_layered,
    "QwenImage21Pipeline": qwenimage21,
    "ZImageControlNetPipeline": z_image_controlnet,
    "ZImageControlNetInpaintPipeline": z_image_controlnet_inpaint,
    "ZImageOmniPipeline (no condition image)": z_image_omni,
    "ZImageOmniPipeline (condition image)": z_image_omni_edit,
    "Kandinsky5I2IPipeline": kandinsky5_i2i,
    "HunyuanImageRefinerPipeline": hunyuan_image_refiner,
    "LongCatImagePipeline": longcat_image,
    "ErnieImagePipeline": ernie_image,
    "JoyImageEditPipeline": joyimage_edit,
    "VisualClozeGenerationPipeline": visualcloze_generation,
    "PRXPixelPipeline": prx_pixel,
    "BriaFibo2Pipeline": bria_fibo2,
}
