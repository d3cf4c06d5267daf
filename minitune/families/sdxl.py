"""Stable Diffusion XL: two text encoders, pooled text embeddings and size/crop ids as added conditioning."""

from __future__ import annotations

import torch

from .base import Conditioning
from .vp import LatentEpsilonFamily


class StableDiffusionXL(LatentEpsilonFamily):
    """``StableDiffusionXLPipeline``: sampled and evaluated at CFG 7.5 with 50 steps, as Stable Diffusion, with the
    pipeline's own scheduler; half precision on CUDA unless a dtype is given (the paper's recipe asks for fp32)."""

    guidance_scale = 7.5
    num_inference_steps = 50
    accelerator_dtype = torch.float16

    @torch.no_grad()
    def encode(self, prompts):
        p = self.pipe
        c, u, pooled_c, pooled_u = p.encode_prompt(prompts, device=self.device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=True)
        size = (p.default_sample_size * p.vae_scale_factor,) * 2
        proj = p.text_encoder_2.config.projection_dim if p.text_encoder_2 is not None else int(pooled_c.shape[-1])
        ids = p._get_add_time_ids(size, (0, 0), size, dtype=c.dtype, text_encoder_projection_dim=proj)
        ids = ids.to(self.device).expand(len(prompts), -1)
        return Conditioning(c, u, {"text_embeds": pooled_c, "time_ids": ids}, {"text_embeds": pooled_u, "time_ids": ids})
