"""The Shapes model's family: the adapter the core finds through ``ShapesPipeline.minitune_family``."""

from __future__ import annotations

import torch

from .. import GUIDANCE_SCALE
from ..families.base import Conditioning
from ..families.vp import EpsilonFamily


class Shapes(EpsilonFamily):
    """The Shapes-world pipeline: pixel space, ``encode_prompt(prompts, device)``, the empty prompt as
    unconditional input; sampled at its documented guidance scale with 25 DDPM steps."""

    guidance_scale = GUIDANCE_SCALE
    num_inference_steps = 25

    @torch.no_grad()
    def encode(self, prompts):
        cond = self.pipe.encode_prompt(prompts, self.device)
        uncond = self.pipe.encode_prompt([""], self.device).expand_as(cond)
        return Conditioning(cond.to(self.unet.dtype), uncond.to(self.unet.dtype))
