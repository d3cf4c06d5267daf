"""Classifier-free guidance sampling that measures MI as a free by-product.

CFG already evaluates the denoiser twice per step, with the prompt (ε̂_c) and without (ε̂_u), and
steps with ε̂ = ε̂_u + g(ε̂_c − ε̂_u). The gap ε̂_c − ε̂_u is exactly what the MI integrand needs,
so :func:`cfg_sample_loop` feeds the same two predictions to a :class:`~minitune.mi.TrajectoryMI`
accumulator: no extra network evaluation and no host synchronisation inside the loop (MI-TUNE,
Alg. 2). With guidance 1 and the exact denoiser, the chain visits z_t ~ p(z_t | y) (up to the
sampler's discretisation), so on average over chains the accumulated value estimates I(X; Y=y).
"""

from __future__ import annotations

import inspect
import copy
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from . import GUIDANCE_SCALE
from .mi import TrajectoryMI, alphas_cumprod_of, paper_weights, quadrature_weights


class SampleResult(NamedTuple):
    sample: torch.Tensor  # x0 (image or latent) after the last step, [B, ...]
    mi: torch.Tensor  # trajectory MI per sample, [B]
    curve: torch.Tensor | None  # per-step integrand ‖ε̂_c − ε̂_u‖², [B, steps], if keep_curve
    timesteps: torch.Tensor  # the visited timesteps, [steps]


def cfg_sample_loop(eps_pair, scheduler, latents: torch.Tensor, *, num_inference_steps: int, guidance_scale: float,
                    generator=None, mi_weights: str = "paper", truncation: int = 50, keep_curve: bool = False,
                    progress: bool = True) -> SampleResult:
    """Run a diffusers scheduler with CFG from ``latents`` and return the sample and its trajectory MI.

    eps_pair: ``(z_t, t) -> (eps_c, eps_u)`` with t a [B] tensor of the current timestep (see
    :mod:`minitune.mi`). scheduler: a DDPM-family scheduler (it is reset by ``set_timesteps``).
    latents: the initial noise [B, ...], already scaled by ``scheduler.init_noise_sigma`` as
    diffusers' ``prepare_latents`` does. generator: the scheduler's step noise, one
    torch.Generator or a list with one per sample (then a sample does not depend on its batch).
    mi_weights: ``"paper"`` (κ_t, zero for t ≤ truncation, mean over kept steps) or ``"quadrature"``
    (½|Δλ| trapezoid over all visited steps, summed); see :mod:`minitune.mi` for how they relate.
    eps_pair always predicts ε; for a v-prediction scheduler the guided ε is turned into
    v = (ε − √(1−ᾱ) z_t) / √ᾱ before the step (exact, as the map is affine in the prediction).
    """
    if mi_weights not in ("paper", "quadrature"):
        raise ValueError(f'mi_weights must be "paper" or "quadrature", got {mi_weights!r}.')
    alphas_cumprod = alphas_cumprod_of(scheduler)
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"the scheduler expects {kind!r} predictions; "
                         "cfg_sample_loop supports epsilon and v_prediction schedulers.")
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    timesteps = scheduler.timesteps
    if mi_weights == "paper":
        acc = TrajectoryMI(paper_weights(alphas_cumprod, timesteps, truncation), "mean", keep_curve)
    else:
        acc = TrajectoryMI(quadrature_weights(alphas_cumprod, timesteps), "sum", keep_curve)
    ab = alphas_cumprod[timesteps.cpu().double().round().long()]  # per step, on the device before the loop
    signal, noise = (v.to(latents.device, latents.dtype) for v in (ab.sqrt(), (1 - ab).sqrt()))
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    z = latents
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling")):
        z_in = scheduler.scale_model_input(z, t) if hasattr(scheduler, "scale_model_input") else z
        eps_c, eps_u = eps_pair(z_in, t.expand(z.shape[0]))
        if eps_c.shape != z.shape or eps_u.shape != z.shape:
            raise ValueError(
                f"eps_pair returned shapes {tuple(eps_c.shape)} and {tuple(eps_u.shape)} "
                f"for latents of shape {tuple(z.shape)}; "
                "it must return (eps_c, eps_u) shaped like its input, with one prompt per latent."
            )
        acc.update(i, eps_c, eps_u)
        out = eps_u + guidance_scale * (eps_c - eps_u)
        if kind == "v_prediction":
            out = (out - noise[i] * z_in) / signal[i]
        z = scheduler.step(out, t, z, **step_kwargs).prev_sample
    mi = acc.value()
    if not bool(torch.isfinite(mi).all()):  # the loop's only host sync, after the last step
        raise ValueError("the denoiser returned NaN or inf during sampling; "
                         "check the model's dtype (fp16 overflow) and the latents.")
    return SampleResult(z, mi, acc.curve, timesteps)


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

    On 2 CPU threads the shipped UNet's guided forward runs 1.26× faster at batch 64 with ε̂ within
    1e-6 (relative) of the default layout (``book/results/unet_throughput.md``). The numbers of a
    run change only by that rounding, so the documented results keep the default layout.
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


def sample_with_mi(pipe, prompts: list[str], n_per_prompt: int = 4, *, guidance_scale: float = GUIDANCE_SCALE,
                   num_inference_steps: int = 25, seed: int = 0, batch_size: int = 64, mi_weights: str = "paper",
                   truncation: int = 50, keep_curve: bool = False, progress: bool = True) -> Candidates:
    """Sample N candidates per prompt with CFG and record each one's trajectory MI.

    Works for any pipeline :func:`~minitune.denoisers.denoiser_for` supports. Prompts are encoded
    once; candidates are sampled in batches of `batch_size` (the memory bound), each with its own
    generator seeded by :func:`candidate_seed`, so a candidate's image and MI do not depend on how
    the work was batched. For the Shapes pipeline the images equal ``pipe(prompt, generator=...)``
    with the same generators: MI is a free by-product of the guidance.
    """
    from .denoisers import denoiser_for
    from .flow_denoisers import is_flow_pipeline

    check_sampling(n_per_prompt, guidance_scale, num_inference_steps, batch_size)
    if is_flow_pipeline(pipe):  # rectified flow (SD3): guided Euler; the truncation in timesteps becomes a flow time
        from .flow_denoisers import sample_with_mi as sample_flow

        return sample_flow(pipe, prompts, n_per_prompt, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                           seed=seed, batch_size=batch_size, mi_weights=mi_weights,
                           truncation=truncation / pipe.scheduler.config.num_train_timesteps, keep_curve=keep_curve,
                           progress=progress)
    if not prompts:
        raise ValueError("No prompts to sample: give at least one prompt.")
    check = getattr(pipe, "check_prompt", None)  # the Shapes pipeline's, as its __call__: a prompt its oracle cannot judge
    for p in prompts if callable(check) else ():
        if p != "":  # "" samples unconditionally
            check(p)
    den = denoiser_for(pipe)
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
        res = cfg_sample_loop(den.eps_pair(cond), scheduler, z * scheduler.init_noise_sigma,
                              num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=gens,
                              mi_weights=mi_weights, truncation=truncation, keep_curve=keep_curve, progress=False)
        parts.append((res.sample, den.to_images(res.sample).float().cpu(), res.mi.cpu(), res.curve, res.timesteps))
    return Candidates(
        prompts=[prompts[i] for i, _ in rows], seeds=seeds,
        images=torch.cat([p[1] for p in parts]), latents=torch.cat([p[0].cpu() for p in parts]),
        mi=torch.cat([p[2] for p in parts]),
        curve=torch.cat([p[3].cpu() for p in parts]) if keep_curve else None,
        timesteps=parts[0][4].cpu(), n_per_prompt=n_per_prompt,
    )
