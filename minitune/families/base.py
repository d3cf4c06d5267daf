"""What every model family provides: one adapter interface over a pipeline, and the prompt inputs it shares.

An adapter encodes prompts once (conditional and unconditional embeddings, plus whatever added
conditioning the family needs) and turns them into an **ε-pair predictor**
``eps_pair(z_t, t) -> (ε̂_c, ε̂_u)`` that runs the denoising network ONCE on the doubled batch
``[z_t, z_t]``, the same forward pass classifier-free guidance makes anyway. Around that seam it
holds what differs between families: the guided sampling step, the training prediction and its
target, the LoRA targets and how their weights are saved, latents ↔ images, and the family's own
defaults (sampling steps, guidance scale, fine-tuning options).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Conditioning:
    """Per-prompt conditional and unconditional inputs to the network (batch dimension first)."""

    cond: torch.Tensor
    uncond: torch.Tensor
    added_cond: dict = field(default_factory=dict)  # SDXL: text_embeds and time_ids; SD3: pooled_projections
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

    @staticmethod
    def concat(parts: list["Conditioning"]) -> "Conditioning":
        """The rows of several conditionings, in order."""
        def cat(key):
            return {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in getattr(parts[0], key)}
        return Conditioning(torch.cat([p.cond for p in parts]), torch.cat([p.uncond for p in parts]),
                            cat("added_cond"), cat("added_uncond"))

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


class Family:
    """One model family's adapter over a pipeline: its denoising network ``net`` (a UNet, or SD3's transformer),
    its scheduler, the device it runs on and the shape of one latent, and the family's defaults.

    Subclasses implement the seam (:meth:`encode`, :meth:`eps_pair`, :meth:`sample_loop`, the training
    draws and prediction) and set the class attributes below.
    """

    guidance_scale: float  # the guidance scale of an unparameterised sampling call
    num_inference_steps: int  # the sampling steps of an unparameterised sampling call
    sampler: str | None = None  # the named sampler (minitune.sampling.SAMPLERS) of a call; None: the pipeline's own
    accelerator_dtype = torch.float32  # the weights' dtype of ``dtype="auto"`` on CUDA (the CPU is always float32)
    sample_batch_size = 64  # images per network call when sampling, the memory bound
    lora_targets: tuple[str, ...]  # the network's modules a LoRA adapter adapts
    lora_owner = "unet"  # the network's name in a diffusers LoRA file
    network = "a UNet"  # the network in words, for messages
    finetune_defaults: dict = {}  # FinetuneConfig options the family trains with when given none
    loss_options: tuple[str, ...] = ()  # FinetuneConfig switches that train_prediction takes as keywords

    def __init__(self, pipe, net):
        self.pipe, self.net, self.scheduler = pipe, net, pipe.scheduler

    @classmethod
    def sampling(cls, guidance_scale: float | None = None, num_inference_steps: int | None = None) -> tuple[float, int]:
        """The guidance scale and sampling steps of a call: those given, else the family's."""
        return (cls.guidance_scale if guidance_scale is None else guidance_scale,
                cls.num_inference_steps if num_inference_steps is None else num_inference_steps)

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c, s = self.net.config.in_channels, self.net.config.sample_size
        return (c, *((s, s) if isinstance(s, int) else tuple(s)))

    def encode(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    def eps_pair(self, cond: Conditioning):
        """The ε-pair predictor ``(z_t, t) -> (ε̂_c, ε̂_u)`` for these B prompts (B latents or m·B stacked draws)."""
        raise NotImplementedError

    def as_vp(self):
        """This adapter as :mod:`minitune.mi`'s estimators take it: ``encode``, ``eps_pair``, a VP ``scheduler``
        table and ``device`` (itself for an ε-prediction family)."""
        return self

    def sample_loop(self, cond: Conditioning, scheduler, noise: torch.Tensor, *, truncation: int, **options):
        """Guided sampling from the unit-variance `noise` with the trajectory MI recorded on the way: a
        :class:`minitune.mi.SampleResult`. `truncation` is in training timesteps (of ``num_train_timesteps``)."""
        raise NotImplementedError

    def training_times(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The noise levels of n training draws, in the form :meth:`train_prediction` takes."""
        raise NotImplementedError

    def validation_times(self, strata: torch.Tensor, n_strata: int) -> torch.Tensor:
        """Stratified noise levels for the held-out loss: stratum s + u (u uniform in [0, 1)) of `n_strata`."""
        raise NotImplementedError

    def train_prediction(self, net, x0, noise, t, hidden, added, dtype, **loss_options):
        """`net`'s prediction (float32) for x0 noised with `noise` at `t`, and the target of the training loss
        (`loss_options`: the family's :attr:`loss_options` that a run switches on)."""
        raise NotImplementedError

    def to_latents(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """Images in [-1, 1] -> the space the network denoises (identity in pixel space)."""
        return images

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        return latents.clamp(-1, 1)

    def lora_layers(self, state: dict) -> dict:
        """A peft state dict of the network's adapter, as the family's LoRA file stores it."""
        return state

    def lora_from_saved(self, weights: dict) -> dict:
        """The layers of a saved LoRA file (prefix removed), as peft names them."""
        return weights
