"""The ε-prediction (VP) families: the guided DDPM-family sampling loop and the denoising loss.

CFG already evaluates the denoiser twice per step, with the prompt (ε̂_c) and without (ε̂_u), and
steps with ε̂ = ε̂_u + g(ε̂_c − ε̂_u). The gap ε̂_c − ε̂_u is exactly what the MI integrand needs,
so :func:`cfg_sample_loop` feeds the same two predictions to a :class:`~minitune.mi.TrajectoryMI`
accumulator: no extra network evaluation and no host synchronisation inside the loop (MI-TUNE,
Alg. 2). With guidance 1 and the exact denoiser, the chain visits z_t ~ p(z_t | y) (up to the
sampler's discretisation), so on average over chains the accumulated value estimates I(X; Y=y).
"""

from __future__ import annotations

import inspect

import torch
from tqdm.auto import tqdm

from ..mi import SampleResult, TrajectoryMI, alphas_cumprod_of, paper_weights, quadrature_weights
from .base import Conditioning, Family, StackedInputs


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


class EpsilonFamily(Family):
    """Base adapter of the ε-prediction (VP) families: the pipeline's UNet and DDPM-family scheduler; subclasses
    encode prompts (and, for latent models, map images to latents)."""

    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, pipe):
        super().__init__(pipe, pipe.unet)
        self.unet = pipe.unet
        self._training = None

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

    def sample_loop(self, cond, scheduler, noise, *, truncation, **options):
        return cfg_sample_loop(self.eps_pair(cond), scheduler, noise * scheduler.init_noise_sigma, truncation=truncation,
                               **options)

    @property
    def training_scheduler(self):
        """The DDPM scheduler built from the model's scheduler config (the same ᾱ table): fine-tuning always noises
        with it, whatever sampler the pipeline uses."""
        if self._training is None:
            from diffusers import DDPMScheduler

            self._training = DDPMScheduler.from_config(self.scheduler.config)
            kind = self._training.config.prediction_type
            if kind not in ("epsilon", "v_prediction"):
                raise ValueError(f"The scheduler predicts {kind!r}; fine-tuning supports ε- and v-prediction models.")
        return self._training

    def training_times(self, n, generator):
        return torch.randint(0, self.training_scheduler.config.num_train_timesteps, (n,), generator=generator)

    def validation_times(self, strata, n_strata):
        return (strata * self.training_scheduler.config.num_train_timesteps / n_strata).long()

    def train_prediction(self, net, x0, noise, t, hidden, added, dtype):
        sched = self.training_scheduler
        pred = net(sched.add_noise(x0, noise, t).to(dtype), t, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
        return pred.float(), target

    def lora_layers(self, state):
        from diffusers.utils import convert_state_dict_to_diffusers

        return convert_state_dict_to_diffusers(state)

    def lora_from_saved(self, weights):
        from diffusers.utils import convert_unet_state_dict_to_peft

        return convert_unet_state_dict_to_peft(weights)


class LatentEpsilonFamily(EpsilonFamily):
    """Stable Diffusion families: the UNet works on VAE latents scaled by `scaling_factor`."""

    @torch.no_grad()
    def to_latents(self, images, generator=None):
        vae = self.pipe.vae
        dist = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        return dist.sample(generator) * vae.config.scaling_factor

    @torch.no_grad()
    def to_images(self, latents):
        vae = self.pipe.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.clamp(-1, 1)
