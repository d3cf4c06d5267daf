"""Point-wise mutual information for rectified-flow (flow-matching) models such as SD3 / SD3.5 (RFMI).

Notation. A clean image (or latent) x is carried to noise along the straight path

    z_t = (1−t) x + t ε,    ε ~ N(0, I),    t ∈ [0, 1]   (t = 1 is pure noise),

which is diffusers' ``FlowMatchEulerDiscreteScheduler`` convention (its σ is t; the transformer is
called with the timestep 1000·t). The model predicts the velocity of the path,
v̂(z_t, t) ≈ E[u | z_t] with u = dz_t/dt = ε − x, with the prompt (v̂_c) and without it (v̂_u).

**Velocity and ε-prediction are affine in each other at fixed (z_t, t).** Taking E[· | z_t] of the
path gives z_t = (1−t) x̂ + t ε̂ and v̂ = ε̂ − x̂, hence

    ε̂ = z_t + (1−t) v̂,    x̂ = z_t − t v̂,    v̂ = (ε̂ − z_t) / (1−t).

The same algebra on the realised draw gives ε − ε̂ = (1−t)(u − v̂), and for two predictions at the
same z_t, ε̂_c − ε̂_u = (1−t)(v̂_c − v̂_u): every ε-integrand of :mod:`minitune.mi` is (1−t)² times
its velocity counterpart.

**The path is a rescaled VP path.** With s_t = √((1−t)² + t²), z_t = s_t (α_t x + σ_t ε) where
α_t = (1−t)/s_t and σ_t = t/s_t satisfy α² + σ² = 1. Conditioning on z_t or on z_t/s_t is the same, so
E[ε | z_t] is the VP ε-prediction at z_t/s_t and ᾱ(t) = α_t² = (1−t)² / ((1−t)² + t²):

    SNR_t = ((1−t)/t)²,    λ_t = log SNR_t = 2 log((1−t)/t),    dλ/dt = −2 / (t(1−t)).

**The exact weights.** Changing variable in the VP identities of :mod:`minitune.mi`,
½ ∫ f_ε dλ = ∫₀¹ f_ε / (t(1−t)) dt = ∫₀¹ ((1−t)/t) f_v dt, so

    log p(x|y) − log p(x) = ∫₀¹ (1−t)/t · E_ε[‖u − v̂_u‖² − ‖u − v̂_c‖²] dt      (point-wise, unbiased)
    I(X; Y=y)             = ∫₀¹ (1−t)/t · E_{x,ε}[‖v̂_c − v̂_u‖²] dt             (orthogonal form)

The weight per unit t is exactly (1−t)/t on the velocity integrand (1/(t(1−t)) on the ε one).
Both integrands vanish at the ends: at t = 1 through the weight, at t → 0 because v̂_c − v̂_u = O(t)
for data with a smooth density.

**The official weighting** (the authors' SD3 code, ``pipeline_gen_mi_1phase_sd3.py``) takes the MEAN
over the guided Euler steps with 0.05 < t < 1 of (1−t)/t · ⟨v_cfg, v_cfg − v̂_u⟩, with
v_cfg = v̂_u + g(v̂_c − v̂_u), summed over latent elements. Against the identity above:

* the integrand: ⟨v_cfg, v_cfg − v̂_u⟩ = g²‖d‖² + g⟨v̂_u, d⟩ with d = v̂_c − v̂_u. Even at g = 1 it is
  ‖d‖² + ⟨v̂_u, d⟩, not ‖d‖²; the cross term has no zero mean in general (on the Gaussian test case
  its weighted integral is −0.44 × the KL), and the score can be negative.
  At g = 7 (the official setting) the square term is scaled by 49 and the cross term by 7, so the
  value ranks candidates by a different quantity from the MI, not a rescaled MI;
* the measure: a mean over steps is a Riemann sum in the step index, not in t. It is ∫ dt / 0.95
  only on a uniform t-grid. SD3.5's shift 3 places t = 3s/(1 + 2s) for uniform s, so the mean
  weighs the integrand per unit t by ds/dt = 3/(3 − 2t)²: the low-SNR end (t near 1) counts up to
  9 times more than the high-SNR end;
* the range: steps with t ≤ 0.05 (λ > 5.9, the high-SNR band) are dropped, as the VP code drops
  t ≤ 50 of 1000.

On the Gaussian test case (tests/test_flow_gaussian.py, KL 1.569 nats, SD3.5's grid) the official
score's expectation at guidance 1 is 0.41–0.42 × the KL at 28 or 200 steps; with ‖d‖² in place of
its integrand, 0.62 ×; the trapezoid below is 0.8 % under the KL at 28 steps and 0.014 % at 200.

The exact counterpart offered here is the trapezoidal rule in t of (1−t)/t ‖d‖² over the visited
times, closed with the integrand's zeros at t = 0 and t = 1, and summed (:func:`quadrature_weights`).

Everything talks to the model through a **velocity-pair predictor**: any callable
``velocity_pair(z_t, t) -> (v_c, v_u)`` with z_t [n, ...] on the straight path and t a float tensor
[n] of flow times in (0, 1]. :func:`eps_pair_of` turns it into an ε-pair predictor on a VP table
(:func:`vp_table`), so the re-noising estimators, proposals and contrast of :mod:`minitune.mi` run
unchanged (:func:`renoise_mi`, :func:`fit_proposal`, :func:`contrast_mi`, :func:`renoise_mi_fn`,
:func:`mi_curve`).
The SD3 family's adapter (:mod:`minitune.families.sd3`) and the closed-form Gaussian
(:meth:`minitune.toy.gaussian.JointGaussian.velocity_pair`) are velocity-pair predictors.

Usage::

    from minitune import flow
    from minitune.families import denoiser_for
    den = denoiser_for(pipe)                                    # a StableDiffusion3Pipeline
    cond = den.encode(["a red cube left of a blue ball"])
    z_T = torch.randn(1, *den.latent_shape, generator=torch.Generator().manual_seed(0))
    res = flow.flow_sample_loop(den.velocity_pair(cond), pipe.scheduler, z_T, num_inference_steps=28,
                                guidance_scale=7.0, mi_weights="quadrature")   # res.sample, res.mi
    est, se = flow.renoise_mi(den.velocity_pair(cond), res.sample, n_samples=64,
                              generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from . import mi


# --------------------------------------------------------------------------- the change of variable


def log_snr(t) -> torch.Tensor:
    """λ_t = 2 log((1−t)/t) of the straight path, elementwise (float64)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return 2 * (torch.log1p(-t) - t.log())


def alpha_bar(t) -> torch.Tensor:
    """ᾱ(t) = (1−t)² / ((1−t)² + t²), the VP noise level with the same SNR as flow time t (float64)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 - t) ** 2 / ((1 - t) ** 2 + t**2)


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    return t.reshape(-1, *[1] * (like.ndim - 1)) if t.ndim else t


def eps_from_velocity(z_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """ε̂ = z_t + (1−t) v̂ (exact at fixed z_t, t; t a scalar or one per row)."""
    return z_t + (1 - _view(t, z_t)) * v


def velocity_from_eps(z_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """v̂ = (ε̂ − z_t) / (1−t), for t < 1."""
    return (eps - z_t) / (1 - _view(t, z_t))


# --------------------------------------------------------------------------- schedulers and weights


def flow_scheduler_check(scheduler) -> None:
    """Refuse a scheduler that is not a flow-matching one, or whose shift is not a positive number."""
    name = type(scheduler).__name__
    if not name.startswith("FlowMatch"):
        raise ValueError(f"{name} is not a flow-matching scheduler; rectified-flow MI needs a FlowMatchEulerDiscreteScheduler "
                         "(SD3/SD3.5), so build one from the model's scheduler config.")
    shift = scheduler.config.get("shift", 1.0)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"the scheduler's shift must be a positive number (SD3.5 uses 3.0), got {shift!r}.")
    if scheduler.config.get("invert_sigmas", False):
        raise ValueError("the scheduler has invert_sigmas=True, which runs the path backwards; "
                         "build it with invert_sigmas=False.")


def _as_times(times) -> torch.Tensor:
    t = torch.as_tensor(times).detach().to("cpu", torch.float64).reshape(-1)
    if t.numel() == 0 or not bool(((t > 0) & (t <= 1)).all()):
        raise ValueError("flow times must be non-empty and lie in (0, 1] (scheduler.sigmas[:-1], not the timesteps ×1000), "
                         f"got {t.tolist()[:8]}.")
    return t


def paper_weights(times, truncation: float = 0.05) -> torch.Tensor:
    """The official weights (1−t)/t at each visited flow time, zero where t ≤ truncation or t = 1.

    Use with a MEAN over the kept steps and the official integrand ⟨v_cfg, v_cfg − v̂_u⟩
    (:class:`FlowTrajectoryMI` with ``mode="mean", integrand="paper"``).
    """
    t = _as_times(times)
    if not 0 <= truncation < 1:
        raise ValueError(f"truncation is a flow time and must lie in [0, 1), got {truncation}.")
    return torch.where((t > truncation) & (t < 1), (1 - t) / t, torch.zeros(()))


def quadrature_weights(times) -> torch.Tensor:
    """Trapezoidal weights of ∫₀¹ (1−t)/t f(t) dt at the visited flow times (strictly monotone).

    Step i gets (1−t_i)/t_i · (|t_i − t_{i−1}| + |t_{i+1} − t_i|) / 2, where the neighbours beyond the
    visited range are t = 0 and t = 1, at which the weighted integrand is zero. Use with a SUM:
    Σ_i w_i ‖v̂_c − v̂_u‖² ≈ I(X; Y=y) along a guided trajectory.
    """
    t = _as_times(times)
    dt = t.diff()
    if t.numel() >= 2 and not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError("quadrature_weights needs strictly increasing or decreasing flow times, e.g. scheduler.sigmas[:-1].")
    descending = t.numel() < 2 or bool(dt[0] < 0)
    points = torch.cat([t.new_ones(1), t if descending else t.flip(0), t.new_zeros(1)])
    gaps = -points.diff()
    w = (1 - points[1:-1]) / points[1:-1] * (gaps[:-1] + gaps[1:]) / 2
    return w if descending else w.flip(0)


def vp_table(times) -> torch.Tensor:
    """The ᾱ table (for :mod:`minitune.mi`) of a grid of flow times in (0, 1), increasing (λ falls along it)."""
    t = _as_times(times)
    if bool((t >= 1).any()) or (t.numel() > 1 and not bool((t.diff() > 0).all())):
        raise ValueError("a re-noising grid needs strictly increasing flow times inside (0, 1), e.g. flow.renoise_grid().")
    return mi.alphas_cumprod_of(alpha_bar(t))


def renoise_grid(n: int = 1000, max_log_snr: float = 14.0) -> torch.Tensor:
    """n flow times, uniform in λ from +max_log_snr to −max_log_snr: t = 1 / (1 + e^{λ/2}), increasing."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 3 or not max_log_snr > 0:
        raise ValueError(f"need an integer n ≥ 3 and max_log_snr > 0, got n={n!r}, max_log_snr={max_log_snr!r}.")
    lam = torch.linspace(max_log_snr, -max_log_snr, n, dtype=torch.float64)
    return torch.sigmoid(-lam / 2)


# --------------------------------------------------------------------------- trajectory accumulator


class FlowTrajectoryMI(mi.TrajectoryMI):
    """Accumulates MI along a guided Euler trajectory from the v̂_c, v̂_u that CFG computes anyway.

    ``integrand="orthogonal"``: ‖v̂_c − v̂_u‖² (with :func:`quadrature_weights` and ``mode="sum"``, the
    exact form); ``integrand="paper"``: the official ⟨v_cfg, v_cfg − v̂_u⟩ at ``guidance_scale`` (with
    :func:`paper_weights` and ``mode="mean"``). Both summed over the non-batch elements. Accumulation,
    ``keep_curve`` and ``value`` are :class:`minitune.mi.TrajectoryMI`'s.
    """

    def __init__(self, weights, mode: str = "sum", keep_curve: bool = False, integrand: str = "orthogonal",
                 guidance_scale: float = 1.0):
        if integrand not in ("orthogonal", "paper"):
            raise ValueError(f'integrand must be "orthogonal" or "paper", got {integrand!r}.')
        super().__init__(weights, mode, keep_curve)
        self.integrand, self.guidance_scale = integrand, float(guidance_scale)

    def term(self, v_c: torch.Tensor, v_u: torch.Tensor) -> torch.Tensor:
        if self.integrand == "orthogonal":
            return super().term(v_c, v_u)
        dtype = torch.promote_types(v_c.dtype, torch.float32)
        d, g = (v_c - v_u).to(dtype), self.guidance_scale
        return ((v_u.to(dtype) + g * d) * (g * d)).flatten(1).sum(1)


# --------------------------------------------------------------------------- guided Euler sampling


def _set_timesteps(scheduler, num_inference_steps: int, device, mu) -> None:
    flow_scheduler_check(scheduler)
    if getattr(scheduler, "order", 1) != 1:
        raise ValueError(f"{type(scheduler).__name__} is a higher-order sampler; flow_sample_loop takes one velocity per step, "
                         "so use FlowMatchEulerDiscreteScheduler.")
    if scheduler.config.get("use_dynamic_shifting", False) and mu is None:
        raise ValueError("the scheduler uses dynamic shifting (Flux-style), so pass mu, the log-shift for this image size.")
    kwargs = {"mu": mu} if mu is not None else {}
    scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)


def flow_sample_loop(velocity_pair, scheduler, latents: torch.Tensor, *, num_inference_steps: int, guidance_scale: float,
                     generator=None, mi_weights: str = "paper", truncation: float = 0.05, keep_curve: bool = False,
                     mu: float | None = None, progress: bool = True):
    """Guided Euler sampling with a flow-matching scheduler that records each sample's MI on the way.

    velocity_pair: ``(z_t, t) -> (v_c, v_u)`` with t the [B] flow times. scheduler: a
    ``FlowMatchEulerDiscreteScheduler`` (reset by ``set_timesteps``; ``mu`` for dynamic shifting).
    latents: the initial noise [B, ...] (t = 1 needs no scaling). Each step moves along
    v_cfg = v̂_u + g(v̂_c − v̂_u) and feeds the same two predictions to a :class:`FlowTrajectoryMI`:
    ``mi_weights="paper"`` is the official score (mean over 0.05 < t < 1 of (1−t)/t ⟨v_cfg, v_cfg − v̂_u⟩),
    ``"quadrature"`` the exact orthogonal form (trapezoid in t, summed). No extra network evaluation,
    no host sync inside the loop. Returns :class:`minitune.mi.SampleResult` whose
    ``timesteps`` are the visited flow times (scheduler.sigmas[:-1]).
    """
    if mi_weights not in ("paper", "quadrature"):
        raise ValueError(f'mi_weights must be "paper" or "quadrature", got {mi_weights!r}.')
    _set_timesteps(scheduler, num_inference_steps, latents.device, mu)
    times = scheduler.sigmas[:-1].detach()
    if mi_weights == "paper":
        acc = FlowTrajectoryMI(paper_weights(times, truncation), "mean", keep_curve, "paper", guidance_scale)
    else:
        acc = FlowTrajectoryMI(quadrature_weights(times), "sum", keep_curve)
    step_kwargs = {"generator": generator} if scheduler.config.get("stochastic_sampling", False) else {}
    t_dev = times.to(latents.device, latents.dtype)
    z = latents
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="sampling")):
        v_c, v_u = velocity_pair(z, t_dev[i].expand(z.shape[0]))
        if v_c.shape != z.shape or v_u.shape != z.shape:
            raise ValueError(f"velocity_pair returned shapes {tuple(v_c.shape)} and {tuple(v_u.shape)} for latents of shape "
                             f"{tuple(z.shape)}; it must return (v_c, v_u) shaped like its input, one prompt per latent.")
        acc.update(i, v_c, v_u)
        z = scheduler.step(v_u + guidance_scale * (v_c - v_u), t, z, **step_kwargs).prev_sample
    value = acc.value()
    if not bool(torch.isfinite(value).all()):  # the loop's only host sync, after the last step
        raise ValueError("the model returned NaN or inf during sampling; check its dtype (fp16 overflow) and the latents.")
    return mi.SampleResult(z, value, acc.curve, times.cpu())


# --------------------------------------------------------------------------- re-noising, through mi.py


def eps_pair_of(velocity_pair, times):
    """The ε-pair predictor of :mod:`minitune.mi` on ``vp_table(times)`` for a velocity-pair predictor.

    mi's estimators call it with VP latents z' = √ᾱ_k x + √(1−ᾱ_k) ε and grid indices k; the straight-path
    latent at t = times[k] is z_t = s_t z' (s_t = √((1−t)² + t²)), and ε̂ = z_t + (1−t) v̂ (exact).
    """
    grid = _as_times(times)
    scale = ((1 - grid) ** 2 + grid**2).sqrt()

    def predict(z: torch.Tensor, k: torch.Tensor):
        k = torch.as_tensor(k).reshape(-1).cpu().long()
        k = k.expand(z.shape[0]) if k.numel() == 1 else k
        t = grid[k].to(z.device, z.dtype)
        z_t = _view(scale[k], z) * z
        v_c, v_u = velocity_pair(z_t, t)
        acc = torch.promote_types(v_c.dtype, torch.float32)
        z_t, w = z_t.to(acc), 1 - _view(t, z_t).to(acc)
        return z_t + w * v_c.to(acc), z_t + w * v_u.to(acc)

    return predict


def _grid_times(times):
    return renoise_grid() if times is None else _as_times(times)


def renoise_mi(velocity_pair, x0, *, n_samples: int = 64, generator, form="pointwise", proposal="importance",
               times=None, batch_size: int | None = None):
    """MI of any image/latent x0 [B, ...] with the prompt bound in ``velocity_pair``: (estimate, stderr), both [B].

    :func:`minitune.mi.renoise_mi` on the straight path: t is drawn from ``times`` (default
    :func:`renoise_grid`, 1000 flow times uniform in λ over ±14) by the proposal (``"importance"``, a
    logistic density in λ, ``"uniform"``, or a tensor from :func:`fit_proposal`), x0 is noised to
    z_t = (1−t) x0 + t ε, and the forms are mi's: ``"pointwise"`` estimates
    ∫ (1−t)/t E_ε[‖u − v̂_u‖² − ‖u − v̂_c‖²] dt = log p(x0|y) − log p(x0), ``"orthogonal"``
    ∫ (1−t)/t ‖v̂_c − v̂_u‖² dt (equal on average over x0 ~ p(x|y)), and the two halves
    ``"conditional"`` / ``"unconditional"``. A tuple of forms returns {form: (estimate, stderr)}.
    """
    times = _grid_times(times)
    return mi.renoise_mi(eps_pair_of(velocity_pair, times), x0, vp_table(times), n_samples=n_samples, generator=generator,
                         form=form, proposal=proposal, batch_size=batch_size)


def fit_proposal(velocity_pair, x0, *, n_samples: int = 64, generator, form: str = "orthogonal", times=None,
                 defensive: float = 0.3, batch_size: int | None = None) -> torch.Tensor:
    """:func:`minitune.mi.fit_proposal` on the straight path: a proposal over ``times`` for :func:`renoise_mi`."""
    times = _grid_times(times)
    return mi.fit_proposal(eps_pair_of(velocity_pair, times), x0, vp_table(times), n_samples=n_samples, generator=generator,
                           form=form, defensive=defensive, batch_size=batch_size)


class AsVP:
    """A flow adapter seen through the ε seam: ``encode``, ``eps_pair(cond)``, a VP ``scheduler`` table and
    ``device``, which is all :func:`minitune.mi.contrast_mi` and :func:`minitune.mi.renoise_mi_fn` use."""

    def __init__(self, denoiser, times=None):
        self.denoiser, self.times = denoiser, _grid_times(times)
        self.scheduler = vp_table(self.times)

    @property
    def device(self):
        return self.denoiser.device

    def encode(self, prompts):
        return self.denoiser.encode(prompts)

    def eps_pair(self, cond):
        return eps_pair_of(self.denoiser.velocity_pair(cond), self.times)


def contrast_mi(denoiser, x0, prompts: list[str], near_misses: list[list[str]], *, seeds: list[int], n_samples: int = 16,
                proposal="importance", times=None, batch_size: int | None = 256):
    """:func:`minitune.mi.contrast_mi` for a flow adapter: (contrast, pointwise), both [B] in nats.

    contrast = log p(x_b|y_b) − max_j log p(x_b|y'_bj), the log p(x) term cancelled; ``denoiser`` has
    ``encode``, ``velocity_pair(cond)`` and ``device`` (e.g. :class:`~minitune.families.sd3.StableDiffusion3`).
    """
    return mi.contrast_mi(AsVP(denoiser, times), x0, prompts, near_misses, seeds=seeds, n_samples=n_samples,
                          proposal=proposal, batch_size=batch_size)


def renoise_mi_fn(denoiser, x0, *, n_samples: int = 32, seed: int = 0, form: str = "pointwise", proposal="importance",
                  times=None, batch_size: int | None = 256):
    """:func:`minitune.mi.renoise_mi_fn` for a flow adapter: prompts -> re-noising MI [n], for word attribution."""
    return mi.renoise_mi_fn(AsVP(denoiser, times), x0, n_samples=n_samples, seed=seed, form=form, proposal=proposal,
                            batch_size=batch_size)


def mi_curve(velocity_pair, x0, times, *, n_noise: int = 1, generator, form: str = "pointwise",
             batch_size: int | None = None) -> torch.Tensor:
    """The MI integrand in velocity form at the flow times ``times`` (strictly increasing, inside (0, 1)): [B, len(times)].

    pointwise: E_ε[‖u − v̂_u‖² − ‖u − v̂_c‖²]; orthogonal: ‖v̂_c − v̂_u‖² (each averaged over ``n_noise`` draws).
    ``(quadrature_weights(times) * curve).sum(-1)`` turns it back into an MI estimate; plot it against
    t or :func:`log_snr` to see at which noise levels the prompt matters.
    """
    times = _as_times(times)
    curve = mi.mi_curve(eps_pair_of(velocity_pair, times), x0, vp_table(times), torch.arange(len(times)), n_noise=n_noise,
                        generator=generator, form=form, batch_size=batch_size)
    return curve / (1 - times).to(curve) ** 2  # ε-form integrand = (1−t)² × velocity form
