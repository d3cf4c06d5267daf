"""Stable Diffusion 3 / 3.5, a rectified-flow family, seen through the flow ↔ VP change of variable.

The adapter encodes prompts once (two CLIP encoders and, when present, T5; the pooled CLIP
projections as ``pooled_projections``) and turns them into a **velocity-pair predictor**
``velocity_pair(z_t, t) -> (v̂_c, v̂_u)`` (t the flow times in (0, 1]) that runs the SD3 transformer
ONCE on the doubled batch ``[z_t, z_t]``. Sampling is guided Euler with the trajectory MI of
:func:`minitune.flow.flow_sample_loop`; the ε-pair of the estimators is :func:`minitune.flow.eps_pair_of`
on a VP table; fine-tuning uses the flow-matching loss ‖v̂(z_t, t) − (ε − x0)‖² at logit-normal times.

Precision: the transformer runs in its own dtype (bf16 on a GPU); velocities, guidance sums and MI
terms are accumulated in float32 or wider.
"""

from __future__ import annotations

import torch

from .. import flow
from .base import Conditioning, Family, StackedInputs

POOLED = "pooled_projections"


def draw_times(n: int, generator: torch.Generator, shift: float) -> torch.Tensor:
    """Logit-normal flow times (SD3's training density), shifted as the scheduler shifts its sigmas."""
    return _shifted(torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64)), shift)


def _shifted(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


class StableDiffusion3(Family):
    """``StableDiffusion3Pipeline``: VAE latents (shifted and scaled), CLIP ×2 (+ T5) text, the SD3 transformer.

    Its defaults are the official RFMI code's: candidates sampled at CFG 7.5 with 100 steps; a LoRA of
    rank 32 on the attention projections of both streams of every joint block, lr 5e-6 with a linear
    warm-up of 400 steps, gradient norm clipped at 5e-3, weight decay 1e-4, 2000 steps; half precision on
    CUDA, as the official evaluation runs. The official batch (8 images on each of 6 GPUs, 5 accumulation
    steps) and its x0-parameterised loss are the ``paper-sd3`` preset's (:mod:`minitune.recipes`); without it a
    step trains on one image with the velocity loss.
    """

    guidance_scale = 7.5
    num_inference_steps = 100
    sample_batch_size = 16
    lora_targets = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")
    lora_owner = "transformer"
    network = "an SD3 transformer"
    accelerator_dtype = torch.float16
    finetune_defaults = {"lr": 5e-6, "steps": 2000, "batch_size": 1, "warmup": 400, "max_grad_norm": 5e-3,
                         "weight_decay": 1e-4}
    loss_options = ("precondition",)

    def __init__(self, pipe, max_sequence_length: int = 256):
        flow.flow_scheduler_check(pipe.scheduler)
        super().__init__(pipe, pipe.transformer)
        self.transformer = pipe.transformer
        self.max_sequence_length = max_sequence_length  # T5 tokens; 256 is the pipeline's own default

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Conditioning:
        """Conditional and unconditional (empty prompt) embeddings and pooled projections, one row per prompt."""
        c, u, pooled_c, pooled_u = self.pipe.encode_prompt(list(prompts), None, None, device=self.device,
                                                           do_classifier_free_guidance=True,
                                                           max_sequence_length=self.max_sequence_length)
        dtype = self.transformer.dtype
        return Conditioning(c.to(dtype), u.to(dtype), {POOLED: pooled_c.to(dtype)}, {POOLED: pooled_u.to(dtype)})

    def velocity_pair(self, cond: Conditioning):
        """The velocity-pair predictor for these B prompts: one transformer forward on the doubled batch per call.

        It accepts B latents or m·B stacked draws (row j·B + b belongs to prompt b), as the re-noising
        estimators pass them; t are flow times, given to the transformer as 1000·t as the scheduler does.
        """
        tr = self.transformer
        scale = self.scheduler.config.num_train_timesteps

        def inputs(c):
            return torch.cat([c.cond, c.uncond]), torch.cat([c.added_cond[POOLED], c.added_uncond[POOLED]])

        stacked = StackedInputs(cond, inputs)

        @torch.no_grad()
        def predict(z: torch.Tensor, t: torch.Tensor):
            hidden, pooled = stacked(z)
            t = torch.as_tensor(t, device=z.device, dtype=torch.float32).reshape(-1).expand(len(z))
            out = tr(hidden_states=torch.cat([z, z]).to(tr.dtype), timestep=torch.cat([t, t]) * scale,
                     encoder_hidden_states=hidden, pooled_projections=pooled, return_dict=False)[0]
            return out.to(torch.promote_types(z.dtype, torch.float32)).chunk(2)

        return predict

    def as_vp(self, times=None) -> flow.AsVP:
        """This adapter through the ε seam (``eps_pair``, a VP ``scheduler`` table) for :mod:`minitune.mi`."""
        return flow.AsVP(self, times)

    def eps_pair(self, cond: Conditioning):
        """The ε-pair on the default re-noising grid (:func:`minitune.flow.eps_pair_of`); its VP table is
        ``as_vp().scheduler``."""
        return self.as_vp().eps_pair(cond)

    def sample_loop(self, cond, scheduler, noise, *, truncation, **options):
        return flow.flow_sample_loop(self.velocity_pair(cond), scheduler, noise,
                                     truncation=truncation / scheduler.config.num_train_timesteps, **options)

    @property
    def _shift(self) -> float:
        return float(self.scheduler.config.shift)

    def training_times(self, n, generator):
        return draw_times(n, generator, self._shift)

    def validation_times(self, strata, n_strata):
        return _shifted(strata.double() / n_strata, self._shift)

    def train_prediction(self, net, x0, noise, t, hidden, added, dtype, precondition: bool = False):
        """The velocity and its target ε − x0; with `precondition` the implied clean latent z_t − t·v̂ and x0 (the
        official RFMI script's preconditioned outputs: the velocity loss weighted by t²)."""
        tt = t.to(x0.device, x0.dtype).view(-1, *[1] * (x0.ndim - 1))
        z = (1 - tt) * x0 + tt * noise
        scale = self.scheduler.config.num_train_timesteps
        pred = net(hidden_states=z.to(dtype), timestep=(t * scale).to(z.device, torch.float32), encoder_hidden_states=hidden,
                   pooled_projections=added[POOLED], return_dict=False)[0].float()
        return (z - tt * pred, x0) if precondition else (pred, noise - x0)

    @torch.no_grad()
    def to_latents(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """Images in [-1, 1] -> (VAE latent − shift_factor) · scaling_factor, what the transformer denoises."""
        vae = self.pipe.vae
        z = vae.encode(images.to(self.device, vae.dtype)).latent_dist.sample(generator)
        return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    @torch.no_grad()
    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        z = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return vae.decode(z).sample.clamp(-1, 1)
