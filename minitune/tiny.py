"""Tiny, randomly initialised Stable Diffusion and SDXL pipelines built in code.

They have the real pipelines' structure (VAE, CLIP text encoders, UNet with cross-attention,
SDXL's added text/time conditioning) at a few hundred thousand parameters, so that every code
path for real models runs offline in seconds: in the tests and in the real-models chapter on CPU.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .toy.pipeline import build_tokenizer

_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16,
             pad_token_id=0, bos_token_id=1, eos_token_id=2, projection_dim=32)


def _vae():
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)


def _unet(**extra):
    return UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                                norm_num_groups=8, attention_head_dim=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **extra)


def tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A randomly initialised StableDiffusionPipeline producing 32×32 images (16×16×4 latents)."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), **_TEXT))
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=text, tokenizer=tok, unet=_unet(cross_attention_dim=32),
                                   scheduler=DDPMScheduler(clip_sample=False, steps_offset=1), safety_checker=None,
                                   feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A randomly initialised StableDiffusionXLPipeline (two text encoders, added text/time ids)."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), **_TEXT))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tok), **_TEXT))
    unet = _unet(cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=text, text_encoder_2=text_2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=DDPMScheduler(clip_sample=False, steps_offset=1))
    pipe.set_progress_bar_config(disable=True)
    return pipe
