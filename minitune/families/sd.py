"""Stable Diffusion (1.x, 2.x): one CLIP text encoder, a UNet on VAE latents."""

from __future__ import annotations

import torch

from .base import Conditioning
from .vp import LatentEpsilonFamily


class StableDiffusion(LatentEpsilonFamily):
    """``StableDiffusionPipeline``: sampled and evaluated at diffusers' own default, CFG 7.5 with 50 steps, with the
    pipeline's own scheduler; half precision on CUDA unless a dtype is given (the paper's recipe asks for fp32)."""

    guidance_scale = 7.5
    num_inference_steps = 50
    accelerator_dtype = torch.float16

    @torch.no_grad()
    def encode(self, prompts):
        c, u = self.pipe.encode_prompt(prompts, self.device, 1, True)  # unconditional: the empty prompt
        return Conditioning(c, u)
