"""One small adapter per pipeline family, so the MI code never looks inside a pipeline.

An adapter encodes prompts once (conditional and unconditional embeddings, plus SDXL's pooled
text and size/crop "time ids"), and turns them into an **ε-pair predictor**
``eps_pair(z_t, t) -> (ε̂_c, ε̂_u)`` that runs the UNet ONCE on the doubled batch
``[z_t, z_t]`` — the same forward pass classifier-free guidance makes anyway.

Supported: a pipeline that brings its own adapter (``pipe.mi_denoiser()``, e.g. the Shapes-world
:class:`~minitune.toy.pipeline.ShapesPipeline`, pixel space: :class:`ToyDenoiser`),
``StableDiffusionPipeline`` and ``StableDiffusionXLPipeline`` (latent space, through their VAE).
``StableDiffusion3Pipeline`` (rectified flow) gets :class:`~minitune.flow_denoisers.SD3Denoiser`,
whose seam is a velocity pair (:mod:`minitune.flow`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Conditioning:
    """Per-prompt conditional and unconditional inputs to the UNet (batch dimension first)."""

    cond: torch.Tensor
    uncond: torch.Tensor
    added_cond: dict = field(default_factory=dict)  # SDXL: text_embeds and time_ids
    added_uncond: dict = field(default_factory=dict)

    def take(self, index: torch.Tensor) -> "Conditioning":
        """Rows `index` of every tensor, e.g. ``torch.arange(P).repeat_interleave(N)`` for N candidates each."""
        def pick(d):
            return {k: v[index.to(v.device)] for k, v in d.items()}
        return Conditioning(self.cond[index.to(self.cond.device)], self.uncond[index.to(self.uncond.device)],
                            pick(self.added_cond), pick(self.added_uncond))

    def paired(self, other: "Conditioning") -> "Conditioning":
        """These prompts' conditional inputs on the conditional side and `other`'s on the unconditional side.

        ``eps_pair`` of the result predicts ε̂ under two prompts in one forward: what
        :func:`minitune.mi.contrast_mi` uses to score an image under two rival prompts per call.
        """
        return Conditioning(self.cond, other.cond, self.added_cond, other.added_cond)

    def __len__(self) -> int:
        return len(self.cond)


class StackedInputs:
    """A network's doubled-batch inputs ``[conditional, unconditional]`` for B prompts, given B latents or m·B
    stacked draws (row j·B + b belongs to prompt b), built once per m by ``build(conditioning)``."""

    def __init__(self, cond: Conditioning, build):
        self.cond, self.build, self.cache = cond, build, {}

    def __call__(self, z: torch.Tensor):
        B = len(self.cond)
        if len(z) % B:
            raise ValueError(f"Got {len(z)} latents for {B} prompts; pass B latents or a multiple of B stacked draws.")
        m = len(z) // B
        if m not in self.cache:
            self.cache[m] = self.build(self.cond if m == 1 else self.cond.take(torch.arange(B).repeat(m)))
        return self.cache[m]


class PipelineAdapter:
    """What every adapter holds: the pipeline, its denoising network ``net`` (a UNet, or SD3's transformer) and
    its scheduler, with the device it runs on and the shape of one latent."""

    def __init__(self, pipe, net):
        self.pipe, self.net, self.scheduler = pipe, net, pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c, s = self.net.config.in_channels, self.net.config.sample_size
        return (c, *((s, s) if isinstance(s, int) else tuple(s)))


class Denoiser(PipelineAdapter):
    """Base adapter of the ε-prediction (VP) family: holds the pipeline's UNet and scheduler; subclasses encode prompts."""

    def __init__(self, pipe):
        super().__init__(pipe, pipe.unet)
        self.unet = pipe.unet

    def encode(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    def eps_pair(self, cond: Conditioning):
        """The ε-pair predictor for these B prompts: one UNet forward on the doubled batch per call.

        It accepts B latents, or m·B stacked in the estimators' layout (row j·B + b belongs to
        prompt b), as :func:`minitune.mi.renoise_mi` passes them.
        """
        unet = self.unet
        kind = self.scheduler.config.get("prediction_type", "epsilon")
        if kind not in ("epsilon", "v_prediction"):
            raise ValueError(f"The scheduler predicts {kind!r}; MI estimation needs an ε- or v-prediction model.")
        alpha_bar = getattr(self.scheduler, "alphas_cumprod", None)

        def inputs(c):
            added = {k: torch.cat([c.added_cond[k], c.added_uncond[k]]) for k in c.added_cond} or None
            return torch.cat([c.cond, c.uncond]), added

        stacked = StackedInputs(cond, inputs)

        @torch.no_grad()
        def predict(z: torch.Tensor, t: torch.Tensor):
            hidden, added = stacked(z)
            t = torch.as_tensor(t, device=z.device)
            t = t.expand(len(z)) if t.ndim == 0 else t
            tt, zz = torch.cat([t, t]), torch.cat([z, z])
            out = unet(zz.to(unet.dtype), tt, encoder_hidden_states=hidden, added_cond_kwargs=added).sample.to(z.dtype)
            if kind == "v_prediction":  # ε = √ᾱ v + √(1−ᾱ) z
                a = alpha_bar.to(z.device, z.dtype)[tt].view(-1, *[1] * (z.ndim - 1))
                out = a.sqrt() * out + (1 - a).sqrt() * zz
            return out.chunk(2)

        return predict

    def to_latents(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """Images in [-1, 1] -> the space the UNet denoises (identity in pixel space)."""
        return images

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        return latents.clamp(-1, 1)


class ToyDenoiser(Denoiser):
    """The Shapes-world pipeline (its ``mi_denoiser``): pixel space, ``encode_prompt(prompts, device)``, the empty
    prompt as unconditional input."""

    @torch.no_grad()
    def encode(self, prompts):
        cond = self.pipe.encode_prompt(prompts, self.device)
        uncond = self.pipe.encode_prompt([""], self.device).expand_as(cond)
        return Conditioning(cond.to(self.unet.dtype), uncond.to(self.unet.dtype))


class _LatentDenoiser(Denoiser):
    """Stable Diffusion family: the UNet works on VAE latents scaled by `scaling_factor`."""

    @torch.no_grad()
    def to_latents(self, images, generator=None):
        vae = self.pipe.vae
        dist = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        return dist.sample(generator) * vae.config.scaling_factor

    @torch.no_grad()
    def to_images(self, latents):
        vae = self.pipe.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.clamp(-1, 1)


class StableDiffusionDenoiser(_LatentDenoiser):
    @torch.no_grad()
    def encode(self, prompts):
        c, u = self.pipe.encode_prompt(prompts, self.device, 1, True)  # unconditional: the empty prompt
        return Conditioning(c, u)


class StableDiffusionXLDenoiser(_LatentDenoiser):
    """SDXL: two text encoders, pooled text embeddings and size/crop ids as added conditioning."""

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


def denoiser_for(pipe) -> Denoiser:
    """Pick the adapter for a pipeline: its own ``mi_denoiser()`` if it has one (the Shapes pipeline), else
    one by pipeline family; unsupported pipelines get a clear error."""
    own = getattr(pipe, "mi_denoiser", None)
    if callable(own):
        return own()
    name = type(pipe).__name__
    if name.startswith("StableDiffusion3"):  # rectified flow: a velocity-pair adapter (minitune.flow_denoisers)
        from .flow_denoisers import SD3Denoiser

        return SD3Denoiser(pipe)
    if getattr(pipe, "text_encoder_2", None) is not None or name.startswith("StableDiffusionXL"):
        return StableDiffusionXLDenoiser(pipe)
    if name.startswith("StableDiffusion") and hasattr(pipe, "vae"):
        return StableDiffusionDenoiser(pipe)
    raise ValueError(
        f"Unsupported pipeline {name}: minitune measures MI with ShapesPipeline, StableDiffusionPipeline, "
        f"StableDiffusionXLPipeline (UNet ε-prediction models with a DDPM-family scheduler) or StableDiffusion3Pipeline "
        f"(rectified flow)."
    )
