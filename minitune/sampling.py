"""Classifier-free guidance sampling that records each candidate's MI, for every model family.

:func:`sample_with_mi` encodes the prompts once and asks the pipeline's family
(:func:`minitune.families.family_of`) for its guided sampling step, which feeds the two
predictions CFG makes anyway to a trajectory-MI accumulator (:func:`minitune.families.vp.cfg_sample_loop`
for ε-prediction models, :func:`minitune.flow.flow_sample_loop` for rectified flow). The named
samplers swap a pipeline's scheduler for another of the same noise table.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from .families import denoiser_for


# --------------------------------------------------------------------------- samplers

# Named samplers, each a diffusers scheduler built from the model's own scheduler config (same ᾱ table), with
# the overrides it needs. "ddim" turns x0 clipping off: with clip_sample (the Shapes model's config) DDIM
# clips the guided x0 but keeps the unclipped ε for the step, and the two disagree most at high noise, where
# the layout is decided, and DDIM loses the prompt (book/results/sampler.md, the ddim-clipped row). DDPM's
# ancestral step recomputes its mean from the clipped x0 and is not hit.
SAMPLERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {"clip_sample": False}),
    "dpmpp-2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmpp-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
}


def use_sampler(pipe, name: str | None):
    """Give `pipe` the named sampler (see ``SAMPLERS``), built from its scheduler's config; returns `pipe`.

    ``None`` keeps the pipeline's own scheduler. Like diffusers' ``pipe.scheduler = X.from_config(...)``,
    this changes how the pipeline samples, not the model: fine-tuning always noises with the DDPM table.
    """
    if name is None:
        return pipe
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}.")
    cls, overrides = SAMPLERS[name]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)
    return pipe


def use_channels_last(pipe):
    """Store the denoiser's weights channels-last (NHWC), which PyTorch's CPU convolutions run faster; returns `pipe`.

    ``book/results/unet_throughput.md`` measures how much faster, and how close ε̂ stays to the default
    layout; a run's numbers change only by that rounding, so the documented results keep the default layout.
    """
    net = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if net is None:
        raise ValueError(f"{type(pipe).__name__} has no UNet or transformer to store channels-last.")
    net.to(memory_format=torch.channels_last)
    return pipe


# --------------------------------------------------------------------------- pipelines


def candidate_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of candidate `index` of `prompt`: stable across runs, batchings and prompt lists."""
    return int(hashlib.sha1(f"{seed}:{prompt}:{index}".encode()).hexdigest()[:12], 16)


@dataclass
class Candidates:
    """N candidates per prompt, prompt-major: row p·N + k is candidate k of prompt p."""

    prompts: list[str]  # one per row
    seeds: list[int]
    images: torch.Tensor  # [P·N, 3, H, W] in [-1, 1], on the CPU
    latents: torch.Tensor  # [P·N, C, h, w] what the UNet denoised (= images for pixel-space models)
    mi: torch.Tensor  # trajectory MI per candidate [P·N]
    curve: torch.Tensor | None  # per-step ‖ε̂_c − ε̂_u‖², [P·N, steps], if keep_curve
    timesteps: torch.Tensor  # visited timesteps [steps]
    n_per_prompt: int

    def grouped(self, values) -> torch.Tensor:
        """Reshape a per-row quantity to [P, N]."""
        return torch.as_tensor(values).reshape(-1, self.n_per_prompt)


def check_sampling(n_per_prompt, guidance_scale, num_inference_steps, batch_size) -> None:
    """Raise one sentence for a sampling setting no sampler can use, before the model runs: a count below 1
    (zero steps would divide by zero inside the scheduler) or a negative or NaN guidance scale."""
    for name, value in (("candidates per prompt", n_per_prompt), ("sampling steps", num_inference_steps),
                        ("batch size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"The number of {name} must be an integer of at least 1, got {value!r}.")
    if not guidance_scale >= 0:  # also refuses NaN
        raise ValueError(f"The guidance scale must be 0 or more (1: no guidance; Stable Diffusion's is 7.5), "
                         f"got {guidance_scale!r}.")


def sample_with_mi(pipe, prompts: list[str], n_per_prompt: int = 4, *, guidance_scale: float | None = None,
                   num_inference_steps: int | None = None, seed: int = 0, batch_size: int | None = None,
                   mi_weights: str = "paper", truncation: int = 50, keep_curve: bool = False,
                   progress: bool = True) -> Candidates:
    """Sample N candidates per prompt with CFG and record each one's trajectory MI.

    Works for every family :func:`~minitune.families.family_of` knows; ``guidance_scale``,
    ``num_inference_steps`` and ``batch_size`` (the images per network call, the memory bound) default to
    the family's. Prompts are encoded once; each candidate has its own generator seeded by
    :func:`candidate_seed` and its initial noise drawn as the pipeline's ``prepare_latents`` draws it, so a
    candidate's image and MI do not depend on how the work was batched, and MI is a free by-product of the
    guidance (for the Shapes pipeline the images equal ``pipe(prompt, generator=...)`` with the same
    generators). `truncation` is in training timesteps (the official 50 of 1000; a flow time t·1000 for
    rectified flow); ``mi_weights`` is ``"paper"`` (the official score) or ``"quadrature"``.
    """
    if not prompts:
        raise ValueError("No prompts to sample: give at least one prompt.")
    check = getattr(pipe, "check_prompt", None)  # the Shapes pipeline's, as its __call__: a prompt its oracle cannot judge
    for p in prompts if callable(check) else ():
        if p != "":  # "" samples unconditionally
            check(p)
    den = denoiser_for(pipe)
    guidance_scale, num_inference_steps = den.sampling(guidance_scale, num_inference_steps)
    options = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, mi_weights=mi_weights,
                   keep_curve=keep_curve)
    batch_size = den.sample_batch_size if batch_size is None else batch_size
    check_sampling(n_per_prompt, guidance_scale, num_inference_steps, batch_size)
    device = den.device
    conds = den.encode(list(prompts))
    rows = [(i, k) for i in range(len(prompts)) for k in range(n_per_prompt)]
    seeds = [candidate_seed(seed, prompts[i], k) for i, k in rows]
    scheduler = copy.deepcopy(den.scheduler)  # leave the pipeline's own scheduler untouched
    parts = []
    for start in tqdm(range(0, len(rows), batch_size), desc="candidates", disable=not progress):
        chunk = slice(start, start + batch_size)
        gens = [torch.Generator(device).manual_seed(s) for s in seeds[chunk]]
        cond = conds.take(torch.tensor([i for i, _ in rows[chunk]]))
        z = randn_tensor((len(gens), *den.latent_shape), generator=gens, device=device, dtype=cond.cond.dtype)
        res = den.sample_loop(cond, scheduler, z, generator=gens, truncation=truncation, progress=False, **options)
        parts.append((res.sample.cpu(), den.to_images(res.sample).float().cpu(), res.mi.cpu(), res.curve, res.timesteps))
    return Candidates(
        prompts=[prompts[i] for i, _ in rows], seeds=seeds,
        images=torch.cat([p[1] for p in parts]), latents=torch.cat([p[0] for p in parts]),
        mi=torch.cat([p[2] for p in parts]),
        curve=torch.cat([p[3].cpu() for p in parts]) if keep_curve else None,
        timesteps=parts[0][4].cpu(), n_per_prompt=n_per_prompt,
    )
