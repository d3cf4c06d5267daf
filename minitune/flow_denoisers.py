"""The rectified-flow family: an adapter for ``StableDiffusion3Pipeline``, MI-tracked sampling and LoRA.

:class:`SD3Denoiser` encodes prompts once (two CLIP encoders and, when present, T5; the pooled CLIP
projections as ``pooled_projections``) and turns them into a **velocity-pair predictor**
``velocity_pair(z_t, t) -> (v̂_c, v̂_u)`` (t the flow times in (0, 1]) that runs the SD3 transformer
ONCE on the doubled batch ``[z_t, z_t]``, the forward pass classifier-free guidance makes anyway.
The estimators of :mod:`minitune.flow` take it as they are; :class:`minitune.flow.AsVP` shows it to
the ε-side code of :mod:`minitune.mi`.

Usage (the official RFMI setting on SD3.5-medium: 28 Euler steps, CFG 7, shift 3)::

    pipe = StableDiffusion3Pipeline.from_pretrained("stabilityai/stable-diffusion-3.5-medium", torch_dtype=torch.bfloat16)
    prompts = ["a red cube left of a blue ball", "two green apples"]
    cands = flow_denoisers.sample_with_mi(pipe.to(device), prompts, n_per_prompt=8)
    rows = torch.arange(len(prompts)) * 8 + cands.grouped(cands.mi).argmax(1)   # the top-1 of each prompt
    den = flow_denoisers.SD3Denoiser(pipe)                                       # re-scored by re-noising:
    est, se = flow.renoise_mi(den.velocity_pair(den.encode(prompts)), cands.latents[rows].to(device), n_samples=64,
                              generator=torch.Generator().manual_seed(0))
    flow_denoisers.finetune_lora(pipe, cands.latents[rows], prompts, "lora")    # then, on a fresh pipeline,
    fresh.load_lora_weights("lora")                                              # (or flow_denoisers.load_lora)

:func:`minitune.sampling.sample_with_mi` and :func:`minitune.selection.build` hand an SD3 pipeline to
:func:`sample_with_mi` here, so ``build`` writes its pool and sets, and :func:`finetune_set` trains on a set.

Precision: the transformer runs in its own dtype (bf16 on a GPU); velocities, guidance sums and MI
terms are accumulated in float32 or wider, and nothing names a device: inputs follow
``pipe._execution_device``.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import flow
from .denoisers import Conditioning, PipelineAdapter, StackedInputs

ADAPTER = "minitune"
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
# The attention projections of both streams of every joint block (image: to_*, text: add_*_proj, to_add_out), as the
# official SD3 recipe adapts them.
TARGET_MODULES = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                  "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
SD35_DEFAULTS = {"num_inference_steps": 28, "guidance_scale": 7.0}  # the official RFMI sampler
POOLED = "pooled_projections"


class SD3Denoiser(PipelineAdapter):
    """StableDiffusion3Pipeline: VAE latents (shifted and scaled), CLIP ×2 (+ T5) text, the SD3 transformer."""

    family = "flow"

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


def is_flow_pipeline(pipe) -> bool:
    """Whether ``pipe`` is a rectified-flow pipeline this module serves (SD3 / SD3.5)."""
    return type(pipe).__name__.startswith("StableDiffusion3")


# --------------------------------------------------------------------------- MI-tracked sampling


def sample_with_mi(pipe, prompts: list[str], n_per_prompt: int = 4, *, guidance_scale: float = 7.0,
                   num_inference_steps: int = 28, seed: int = 0, batch_size: int = 16, mi_weights: str = "paper",
                   truncation: float = 0.05, keep_curve: bool = False, progress: bool = True):
    """N candidates per prompt from an SD3 pipeline, each with its trajectory MI: :class:`minitune.sampling.Candidates`.

    As :func:`minitune.sampling.sample_with_mi`: prompts encoded once, one generator per candidate seeded
    by :func:`~minitune.sampling.candidate_seed` (a candidate does not depend on the batching), the
    initial noise drawn as the pipeline's ``prepare_latents`` draws it, so with the same generator
    ``pipe(prompt, latents=...)`` gives the same latents. ``mi_weights``: ``"paper"`` (the official
    score) or ``"quadrature"`` (the exact orthogonal form); see :mod:`minitune.flow`.
    """
    from diffusers.utils.torch_utils import randn_tensor

    from .sampling import Candidates, candidate_seed

    if not prompts:
        raise ValueError("No prompts to sample: give at least one prompt.")
    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be at least 1, got {n_per_prompt}.")
    den = SD3Denoiser(pipe)
    conds = den.encode(list(prompts))
    rows = [(i, k) for i in range(len(prompts)) for k in range(n_per_prompt)]
    seeds = [candidate_seed(seed, prompts[i], k) for i, k in rows]
    scheduler = copy.deepcopy(den.scheduler)
    parts = []
    for start in tqdm(range(0, len(rows), batch_size), desc="candidates", disable=not progress):
        chunk = slice(start, start + batch_size)
        gens = [torch.Generator(den.device).manual_seed(s) for s in seeds[chunk]]
        cond = conds.take(torch.tensor([i for i, _ in rows[chunk]]))
        z = randn_tensor((len(gens), *den.latent_shape), generator=gens, device=den.device, dtype=cond.cond.dtype)
        res = flow.flow_sample_loop(den.velocity_pair(cond), scheduler, z, num_inference_steps=num_inference_steps,
                                    guidance_scale=guidance_scale, generator=gens, mi_weights=mi_weights,
                                    truncation=truncation, keep_curve=keep_curve, progress=False)
        parts.append((res.sample.cpu(), den.to_images(res.sample).float().cpu(), res.mi.cpu(), res.curve, res.timesteps))
    return Candidates(prompts=[prompts[i] for i, _ in rows], seeds=seeds, images=torch.cat([p[1] for p in parts]),
                      latents=torch.cat([p[0] for p in parts]), mi=torch.cat([p[2] for p in parts]),
                      curve=torch.cat([p[3].cpu() for p in parts]) if keep_curve else None,
                      timesteps=parts[0][4], n_per_prompt=n_per_prompt)


# --------------------------------------------------------------------------- LoRA on the transformer


def add_lora(pipe, rank: int = 32, alpha: float | None = None) -> list[torch.nn.Parameter]:
    """Freeze the SD3 transformer and add a LoRA adapter (peft) on its attention projections of both streams
    (:data:`TARGET_MODULES`); returns the adapter's parameters."""
    from peft import LoraConfig

    tr = pipe.transformer
    if getattr(tr, "peft_config", None):
        raise ValueError("The pipeline's transformer already carries a LoRA adapter; call pipe.unload_lora_weights() first.")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}.")
    tr.requires_grad_(False)
    tr.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES),
                   adapter_name=ADAPTER)
    return [p for name, p in tr.named_parameters() if "lora_" in name]


def save_lora(pipe, folder: str | os.PathLike) -> Path:
    """Write the transformer's adapter as diffusers LoRA weights (atomically): ``pipe.load_lora_weights(folder)`` loads it."""
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tr = pipe.transformer
    layers = get_peft_model_state_dict(tr, adapter_name=ADAPTER)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".saving") as tmp:
        type(pipe).save_lora_weights(tmp, transformer_lora_layers=layers,
                                     transformer_lora_adapter_metadata=tr.peft_config[ADAPTER].to_dict())
        os.replace(Path(tmp) / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    return folder


def load_lora(pipe, folder: str | os.PathLike):
    """``pipe.load_lora_weights(folder)`` after checking that the adapter was trained for a transformer (SD3 family)."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No LoRA adapter at {folder}: the folder must contain {WEIGHTS_NAME}, as save_lora writes it.")
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
    if not any(k.startswith("transformer.") for k in keys):
        raise ValueError(f"The adapter in {folder} is not for an SD3 transformer (its layers are {keys[0].split('.')[0]!r}, "
                         "e.g. a UNet LoRA of Stable Diffusion/SDXL); load it into a pipeline of that family.")
    pipe.load_lora_weights(folder, adapter_name=ADAPTER)
    return pipe


def _draw_times(n: int, generator: torch.Generator, shift: float) -> torch.Tensor:
    """Logit-normal flow times (SD3's training density), shifted as the scheduler shifts its sigmas."""
    u = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64))
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(velocity, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """‖v̂(z_t, t) − (ε − x0)‖² averaged over elements, z_t = (1−t) x0 + t ε (the rectified-flow objective)."""
    tt = t.to(x0.device, x0.dtype).view(-1, *[1] * (x0.ndim - 1))
    z = (1 - tt) * x0 + tt * noise
    return F.mse_loss(velocity(z, t).float(), (noise - x0).float())


def _conditional_velocity(tr, cond: Conditioning, scale: float):
    """The transformer's conditional velocity (with gradients) for the rows of ``cond``: ``(z_t, t) -> v̂_c``."""
    def velocity(z, t):
        return tr(hidden_states=z.to(tr.dtype), timestep=(t * scale).to(z.device, torch.float32),
                  encoder_hidden_states=cond.cond, pooled_projections=cond.added_cond[POOLED], return_dict=False)[0]
    return velocity


def finetune_lora(pipe, latents: torch.Tensor, prompts: list[str], output_dir, *, rank: int = 32, alpha: float | None = None,
                  steps: int = 2000, lr: float = 5e-6, warmup: int = 400, max_grad_norm: float = 5e-3, batch_size: int = 1,
                  seed: int = 0, progress: bool = True) -> Path:
    """Train a LoRA on the transformer's attention with the flow-matching loss on (latent, prompt) pairs and save it.

    Defaults are the official RFMI recipe for SD3.5 (rank 32, lr 5e-6 with a linear warm-up of 400 steps,
    gradient norm clipped at 5e-3, 2000 steps, logit-normal times). Step s draws its images, times and
    noise from a generator seeded (seed, s), so a run is reproducible. The adapter is left on the
    transformer and saved to ``output_dir`` (see :func:`save_lora`).
    """
    if len(latents) != len(prompts) or not prompts:
        raise ValueError(f"got {len(latents)} latents and {len(prompts)} prompts; pass one prompt per latent, at least one.")
    den = SD3Denoiser(pipe)
    cond = den.encode(list(prompts))
    params = add_lora(pipe, rank, alpha)
    for p in params:  # train the adapter in fp32 even on a bf16 transformer (peft casts its input to match)
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    tr, shift, scale = pipe.transformer, float(den.scheduler.config.shift), den.scheduler.config.num_train_timesteps
    tr.train()
    for step in tqdm(range(steps), desc="lora", disable=not progress):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        rows = torch.randint(len(prompts), (batch_size,), generator=g)
        t = _draw_times(batch_size, g, shift)
        noise = torch.randn(batch_size, *den.latent_shape, generator=g).to(den.device, torch.float32)
        loss = flow_matching_loss(_conditional_velocity(tr, cond.take(rows), scale), latents[rows].to(den.device, torch.float32),
                                  t, noise)
        if not math.isfinite(loss.item()):
            raise ValueError(f"the loss is not finite at step {step}; lower the learning rate or check the latents.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
    tr.eval()
    return save_lora(pipe, output_dir)


def finetune_set(pipe, data_dir, output_dir, *, seed: int = 0, **options) -> Path:
    """:func:`finetune_lora` on an ``imagefolder`` fine-tuning set (as ``selection.build`` writes it): its PNG images
    are encoded by the pipeline's VAE (latent draws seeded by ``seed``) and paired with their ``text``."""
    from .finetune import load_finetune_set

    data = load_finetune_set(data_dir)
    den = SD3Denoiser(pipe)
    latents = den.to_latents(data.images, torch.Generator(den.device).manual_seed(seed)).float()
    if tuple(latents.shape[1:]) != den.latent_shape:
        raise ValueError(f"the set's images encode to latents {tuple(latents.shape[1:])}, but the transformer denoises "
                         f"{den.latent_shape}; build the set with this pipeline.")
    return finetune_lora(pipe, latents, data.prompts, output_dir, seed=seed, **options)
