"""Point-wise mutual information between an image and its prompt, read off a diffusion denoiser.

Notation (VP / DDPM). A clean image (or latent) x is noised to z_t = √ᾱ_t x + √(1−ᾱ_t) ε,
ε ~ N(0, I), at a discrete timestep t = 0..T−1 with cumulative product ᾱ_t. The log
signal-to-noise ratio λ_t = log SNR_t = log(ᾱ_t / (1−ᾱ_t)) falls as t grows. The denoiser predicts
the noise with the prompt, ε̂_c = ε̂(z_t, t, y), and without it, ε̂_u = ε̂(z_t, t, ∅).

The two identities this module estimates (Kong et al. 2023; Franzese et al. 2024, MINDE):

    log p(x|y) − log p(x) = ½ ∫ E_ε[‖ε − ε̂_u‖² − ‖ε − ε̂_c‖²] dλ     (point-wise, unbiased)
    I(X; Y=y)             = ½ ∫ E_{x,ε}[‖ε̂_c − ε̂_u‖²] dλ             ("orthogonal" form)

The first holds for each x; the second only on average over x ~ p(x|y) (for optimal denoisers
ε − ε̂_c is orthogonal to anything computed from z_t, which turns the first integrand into the
second), but its integrand is never negative and usually has less variance, which is why MI-TUNE
uses it. The point-wise integrand is a difference of two denoising errors, and each alone gives a
log-density: over a finite range of λ, ½ ∫ E_ε[−‖ε − ε̂_c‖²] dλ = log p(x|y) + C, with C set by the
range and the dimension alone, and likewise log p(x) (the denoising bound, tight for optimal
denoisers, up to the ends of the range): :func:`renoise_mi` returns them as the forms
``"conditional"`` and ``"unconditional"``, which say whether an image's MI is high because the
prompt makes it likely or because it is unlikely without one.

Everything here talks to the model through an **ε-pair predictor**: any callable
``eps_pair(z_t, t) -> (eps_c, eps_u)`` with z_t [n, ...] and t a tensor [n] of integer timesteps
that index ``alphas_cumprod``; the prompt is bound inside the callable. A UNet adapter and the
closed-form Gaussian of :mod:`minitune.toy.gaussian` are both ε-pair predictors. When an estimator
stacks m noise draws of B images into one call, row j·B + b is image b (m stacked copies of the
batch); a predictor whose prompts are bound for B images tiles them with :func:`tile_batch`.

Antithetic noise (``renoise_mi(..., antithetic=True)``), an option for the point-wise form. With
d = ε̂_c − ε̂_u the point-wise integrand splits as

    f_p = ‖ε − ε̂_u‖² − ‖ε − ε̂_c‖² = ‖d‖² + 2⟨d, ε − ε̂_c⟩ = f_o + 2⟨d, ε − ε̂_c⟩,

f_o = ‖d‖² being the orthogonal integrand. Its noise at one noise level is mostly the cross term, the
denoising error ε − ε̂_c projected on d, which is why f_p is so much noisier than f_o at the same
network calls. The orthogonal integrand cannot serve as a control variate for one image: a control
variate needs a known mean, and E_ε[f_o | x] is as unknown as E_ε[f_p | x]; the two means differ by
2 E_ε⟨d, ε − ε̂_c⟩, which vanishes only on average over x ~ p(x|y) (for an optimal ε̂_c, ε − ε̂_c has
mean zero given z_t), so f_p − c (f_o − mean) with an estimated mean is the orthogonal form again,
biased for each image. Antithetic noise needs no known mean. ε and −ε have the same law, so
f̄ = ½(f(ε) + f(−ε)) at one t is unbiased for each x and is the even part of f in ε; with f = f₊ + f₋
(even and odd parts in ε, uncorrelated because f₊(ε) f₋(ε) is odd):

    Var f̄ = Var f₊,      against      ½ (Var f₊ + Var f₋)      for two independent draws.

It wins where the odd part dominates. At low noise it does: z_t = √ᾱ x + σε with σ small, so
ε̂(z_t) ≈ ε̂(√ᾱ x) + σ J ε and the cross term is linear in ε up to O(σ), and it cancels in the pair.
A trained network's point-wise integrand stays large at low noise, where its ε noise is mostly odd;
at middle noise levels the noise is mostly even, the spread of ‖d‖² itself over noise draws, which
the orthogonal form has too and which no pairing removes. The pairs also buy a finer stratification
of t (one pair per stratum), which matters for an integrand that changes fast at the low-noise end.
On the Gaussian the denoisers are affine, f is a quadratic in ε, and the even part is the
quadratic form εᵀMε with M = (I − σA_u)ᵀ(I − σA_u) − (I − σA_c)ᵀ(I − σA_c), which does not depend on x,
while the odd part grows with the distance of x from the two means; there antithetic pairs win only
for an x with a large point-wise MI (an unlikely x under the unconditional law). :func:`renoise_mi`
keeps ``antithetic=False`` by default: whether pairs pay on a trained model is measured, image by
image, in ``book/results/renoise_variance.md``; fit a proposal for them with
``fit_proposal(..., antithetic=True)``.

Re-noising (:func:`renoise_mi`): how the noise levels are drawn. Proposals: ``"uniform"`` is
uniform over t. ``"importance"`` is a logistic density in λ with location 0 and scale 2,
q ∝ |Δλ_t| sech²(λ_t/4): it has the bell shape of the typical integrand, its e^{−|λ|/2} tails are
heavier than the integrand's e^{−|λ|}, so w/q stays bounded, and being defined in λ it does not
depend on the noise schedule (under the cosine schedule uniform in t already is a sech density in λ).
``benchmarks/perf/renoise_variance.py`` compares it with uniform-in-t, uniform-in-λ and other logistic
scales on the Gaussian case. A learned denoiser's
integrand need not have that shape; a tensor from :func:`fit_proposal`, fitted to the model on a few
images, is the third choice.

Draws are stratified: the proposal's probability mass is cut into n_samples // 2 equal strata with
two independent draws each (three in the last one when n_samples is odd); the estimate is the mean
of the stratum means and the standard error comes from the within-stratum variances, which keeps it
unbiased (hence n_samples ≥ 2). Most of the remaining variance is the ε noise at a fixed t, which no
choice of t removes; it shrinks as the information spreads over more elements
(``book/results/renoise_variance.md`` gives the spread per draw). How low any choice of t could take it
on a trained model, (Σ_t w_t σ_t)² / n with σ_t the spread of one draw at t, is what
``benchmarks/studies/renoise_floor.py`` measures (``book/results/renoise_floor.md``). Antithetic pairs
(below) are stratified twice as finely, one pair in each of n_samples // 2 strata of equal mass
(u = (h + U)/H): the estimate is the plain mean of the pairs, still unbiased, and the standard error
pools neighbouring strata in twos (slightly conservative: it also counts the difference between
their means).

From a sum over timesteps to the integral over log SNR, two weightings:

* **paper weights** (MI-TUNE Alg. 2 and its official code): κ_t = β_t·T / (2(1−ᾱ_t)) with
  β_t = 1 − ᾱ_t/ᾱ_{t−1}, zero for t ≤ truncation (50 of 1000), and the MI is the MEAN of
  κ_t ‖ε̂_c − ε̂_u‖² over the kept steps. Why this is the integral: d log ᾱ/dt ≈ −β_t, hence
  dλ/dt ≈ −β_t/(1−ᾱ_t), so β_t/(1−ᾱ_t) ≈ |dλ| per unit of t, and the mean over n steps spaced
  T/n apart, (1/n) Σ κ_t f_t = Σ (T/n) · ½ β_t/(1−ᾱ_t) f_t, is a Riemann sum of ½ ∫ f dλ.
  Caveats: the steps with t ≤ truncation (the high-SNR end) are dropped, and the mean divides by
  the kept count, which rescales the result by about T/(T − truncation) (≈ 1.05 for 50 of 1000).
* **quadrature weights** (scheduler-agnostic): ½|Δλ| by the trapezoidal rule on the visited
  timesteps — each step owns half of the log-SNR gap to each neighbour — and the MI is the SUM
  of w_i ‖ε̂_c − ε̂_u‖². Nothing is rescaled; only the integral beyond the first and last visited
  λ is missing (for DDPM's linear schedule λ runs from +9.2 to −10.1 and the integrand decays like
  e^{−|λ|} at both ends; on the Gaussian test case the sum over all 1000 steps is within 0.1 % of
  the integral, over 50 steps within 5 %).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm


def alphas_cumprod_of(scheduler_or_tensor) -> torch.Tensor:
    """The ᾱ_t table of a diffusers scheduler (or of a tensor/array/list), as 1-D float64 on CPU."""
    table = getattr(scheduler_or_tensor, "alphas_cumprod", scheduler_or_tensor)
    if not isinstance(table, (torch.Tensor, list, tuple)) and not hasattr(table, "__array__"):
        raise ValueError(
            f"{type(table).__name__} has no alphas_cumprod; MI estimation needs a DDPM-family (VP) scheduler "
            "such as DDPMScheduler/DDIMScheduler, so build one from the model's scheduler config."
        )
    table = torch.as_tensor(table).detach().to("cpu", torch.float64)
    if table.ndim != 1 or table.numel() < 2 or not bool(((table > 0) & (table < 1)).all()):
        raise ValueError(f"alphas_cumprod must be a 1-D table of values in (0, 1), got shape {tuple(table.shape)}; "
                         "pass scheduler.alphas_cumprod.")
    return table


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """λ = log(ᾱ / (1 − ᾱ)), elementwise (log1p keeps it accurate where ᾱ is close to 1)."""
    alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return alphas_cumprod.log() - torch.log1p(-alphas_cumprod)


def _as_timesteps(timesteps, T: int) -> torch.Tensor:
    """Timesteps as a CPU LongTensor, checked to index a table of length T."""
    t = torch.as_tensor(timesteps).detach().cpu().reshape(-1)
    t = t.round().long() if t.is_floating_point() else t.long()
    if t.numel() == 0 or t.min() < 0 or t.max() >= T:
        raise ValueError(f"timesteps must be non-empty and lie in 0..{T - 1} (the scheduler's training range), "
                         f"got {t.tolist()[:8]}.")
    return t


def paper_weights(alphas_cumprod, timesteps, truncation: int = 50) -> torch.Tensor:
    """MI-TUNE's κ_t = β_t·T / (2(1−ᾱ_t)) at each given timestep, zero where t ≤ truncation.

    Use with a MEAN over the kept (non-zero) steps, as :class:`TrajectoryMI` does with mode="mean".
    """
    ab = alphas_cumprod_of(alphas_cumprod)
    t = _as_timesteps(timesteps, len(ab))
    prev = torch.cat([ab.new_ones(1), ab[:-1]])  # ᾱ_{t−1}, with ᾱ_{−1} = 1
    beta = 1 - ab / prev
    kappa = beta * len(ab) / (2 * (1 - ab))
    return torch.where(t > truncation, kappa[t], torch.zeros(()))


def quadrature_weights(alphas_cumprod, timesteps) -> torch.Tensor:
    """Trapezoidal weights ½|Δλ| for the visited timesteps (strictly monotone, e.g. a sampler's
    descending schedule): step i gets ½ · (|λ_i − λ_{i−1}| + |λ_{i+1} − λ_i|) / 2, a missing
    neighbour counting as zero. Use with a SUM: Σ_i w_i f_i ≈ ½ ∫ f dλ over the visited λ range.
    """
    ab = alphas_cumprod_of(alphas_cumprod)
    t = _as_timesteps(timesteps, len(ab))
    dt = t.diff()
    if t.numel() < 2 or not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError("quadrature_weights needs at least two strictly increasing or decreasing timesteps, "
                         "e.g. scheduler.timesteps.")
    gaps = log_snr(ab[t]).diff().abs()
    zero = gaps.new_zeros(1)
    return (torch.cat([zero, gaps]) + torch.cat([gaps, zero])) / 4


def tile_batch(cond: torch.Tensor, n: int) -> torch.Tensor:
    """Tile per-image conditioning [B, ...] to n = m·B rows in the estimators' layout (row j·B + b is
    image b), e.g. inside an ε-pair predictor called on m stacked noise draws of B images."""
    if n % cond.shape[0]:
        raise ValueError(f"cannot tile conditioning for {cond.shape[0]} images to {n} rows; "
                         "the batch must be a multiple of the number of images.")
    return cond.repeat(n // cond.shape[0], *([1] * (cond.ndim - 1)))


class SampleResult(NamedTuple):
    """What a guided sampling loop returns: the final samples and the trajectory MI it recorded on the way."""

    sample: torch.Tensor  # x0 (image or latent) after the last step, [B, ...]
    mi: torch.Tensor  # trajectory MI per sample, [B]
    curve: torch.Tensor | None  # per-step integrand, [B, steps], if keep_curve
    timesteps: torch.Tensor  # the visited timesteps (flow times for a flow model), [steps]


class TrajectoryMI:
    """Accumulates MI along a sampling trajectory from the ε̂_c, ε̂_u that CFG computes anyway.

    ``weights`` [steps]: one weight per sampler step (:func:`paper_weights` or
    :func:`quadrature_weights` of the visited timesteps). ``mode="mean"`` divides the weights by the
    number of non-zero ones (the paper's mean over kept steps); ``mode="sum"`` uses them as they are
    (quadrature). ``update`` stays on the device and never reads a value back to the host, so it adds
    no synchronisation to the sampling loop. With ``keep_curve=True`` the unweighted integrand
    ‖ε̂_c − ε̂_u‖² of every step is kept in ``curve`` [B, steps].
    """

    def __init__(self, weights: torch.Tensor, mode: str = "sum", keep_curve: bool = False):
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if mode not in ("mean", "sum"):
            raise ValueError(f'mode must be "mean" (paper weights) or "sum" (quadrature weights), got {mode!r}.')
        if mode == "mean":
            kept = int((weights != 0).sum())
            if kept == 0:
                raise ValueError("every step is at or below the truncation, so the mean is empty; "
                                 "lower truncation or sample more steps.")
            weights = weights / kept
        self.weights, self.keep_curve = weights, keep_curve
        self.total = self.curve = None

    def term(self, eps_c: torch.Tensor, eps_u: torch.Tensor) -> torch.Tensor:
        """The integrand of one step, [B]: ‖ε̂_c − ε̂_u‖² summed over all non-batch elements."""
        return (eps_c - eps_u).to(torch.promote_types(eps_c.dtype, torch.float32)).square().flatten(1).sum(1)

    def update(self, i: int, eps_c: torch.Tensor, eps_u: torch.Tensor) -> None:
        """Add weight_i · the integrand (:meth:`term`) for step i."""
        sq = self.term(eps_c, eps_u)
        if self.total is None:  # first step: move the weights to the model's device once
            self.weights = self.weights.to(sq.device, sq.dtype)
            self.total = torch.zeros_like(sq)
            if self.keep_curve:
                self.curve = sq.new_zeros(sq.shape[0], len(self.weights))
        self.total = self.total + self.weights[i] * sq
        if self.keep_curve:
            self.curve[:, i] = sq

    def value(self) -> torch.Tensor:
        """The accumulated MI estimate, [B] (nats)."""
        if self.total is None:
            raise ValueError(f"{type(self).__name__}.value() was called before any update(); run at least one "
                             "sampler step.")
        return self.total


def banded_mi(curve, weights, timesteps, bands, *, mean_over: str | None = "trajectory") -> dict:
    """Trajectory MI restricted to bands of noise levels: {(lo, hi): [B]}, the steps with lo ≤ t < hi of each band.

    ``curve`` [B, steps] is the per-step integrand ‖ε̂_c − ε̂_u‖² a sampler kept (``keep_curve=True``),
    ``weights`` [steps] the weights of its timesteps (:func:`paper_weights` or :func:`quadrature_weights`)
    and ``timesteps`` [steps] the timesteps themselves. A band's value is Σ weight · integrand over its
    steps, divided according to ``mean_over``:

    * ``"trajectory"``: by the kept (non-zero weight) steps of the whole trajectory, as
      :class:`TrajectoryMI` does with the paper's mean: each band is its share of the paper's MI, and
      bands that tile the kept steps add up to it;
    * ``"band"``: by the kept steps of the band itself: the paper's estimator as if the band were the
      whole trajectory, on the scale of the paper's MI whatever the band's width (0 for a band
      without kept steps);
    * ``None``: not at all, for quadrature weights (a sum): each band is its part of the integral.
    """
    curve = torch.as_tensor(curve)
    weights = torch.as_tensor(weights).to(curve)
    t = torch.as_tensor(timesteps).to(weights.device)
    if mean_over not in ("trajectory", "band", None):
        raise ValueError(f'mean_over must be "trajectory", "band" or None, got {mean_over!r}.')
    if curve.ndim != 2 or not curve.shape[1] == len(weights) == len(t):
        raise ValueError(f"curve must be [B, steps] with one weight and one timestep per step, got {tuple(curve.shape)}, "
                         f"{len(weights)} weights and {len(t)} timesteps.")
    out = {}
    for lo, hi in bands:
        w = weights * ((t >= lo) & (t < hi)).to(weights)
        kept = {"trajectory": (weights != 0).sum(), "band": (w != 0).sum().clamp(min=1), None: 1}[mean_over]
        out[lo, hi] = (curve * w).sum(1) / kept
    return out


def _draw(sampler, shape, generator, device, dtype) -> torch.Tensor:
    """``sampler`` (torch.rand or torch.randn) of ``shape`` through ``generator``, or through a list of
    generators, one per row of shape[0] (so a row's draws do not depend on the rest of the batch).
    Draws happen on the generator's device and are then moved, as diffusers does."""
    if generator is None:
        raise ValueError("generator is None; pass generator=torch.Generator().manual_seed(0) "
                         "(or a list, one per image) so every draw is reproducible.")
    if not isinstance(generator, (list, tuple)):
        return sampler(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; "
                         "pass one generator per image or a single one.")
    rows = [sampler((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
    return torch.cat(rows).to(device)


def _check_x0(x0) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise ValueError("x0 must be a batch tensor [B, ...] of images or latents; "
                         "add a batch dimension with x0[None].")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or inf; check how the images or latents were produced.")


FORMS = ("pointwise", "orthogonal", "conditional", "unconditional")


def _forms(form) -> tuple[str, ...]:
    forms = (form,) if isinstance(form, str) else tuple(form)
    if not forms or any(f not in FORMS for f in forms):
        raise ValueError(f"form must be one of {', '.join(FORMS)} or a tuple of them, got {form!r}.")
    return forms


def _term(form: str, eps, eps_c, eps_u, diff, sum_dims) -> torch.Tensor:
    if form == "pointwise":
        return (diff * (2 * eps - eps_c - eps_u)).sum(sum_dims)
    if form == "orthogonal":
        return diff.square().sum(sum_dims)
    return -(eps - (eps_c if form == "conditional" else eps_u)).square().sum(sum_dims)


def _noise(x0, draws: int, generator, antithetic: bool) -> torch.Tensor:
    """Noise for ``draws`` stacked copies of x0's batch, drawn draw by draw; with ``antithetic`` each fresh
    draw ε is followed by −ε (draws must then be even)."""
    if not antithetic:
        return torch.cat([_draw(torch.randn, x0.shape, generator, x0.device, x0.dtype) for _ in range(draws)])
    fresh = [_draw(torch.randn, x0.shape, generator, x0.device, x0.dtype) for _ in range(draws // 2)]
    return torch.cat([e for eps in fresh for e in (eps, -eps)])


def _integrand(eps_pair, x0, alphas_cumprod, t, generator, form, batch_size, sum_dims,
               antithetic: bool = False) -> torch.Tensor:
    """Re-noise x0 at the timesteps t [n, B] (fresh ε per draw) and return the integrand [n, B, ...]
    (for a tuple of forms, [len(form), n, B, ...] from the same network evaluations).

    ``antithetic=True`` pairs the draws: draw 2i + 1 reuses draw 2i's noise with the sign flipped
    (−ε), so only every other draw takes fresh noise (n must be even; t should repeat within a pair).

    Draw j of every image sits in rows j·B..j·B+B−1 of a network call; ``batch_size`` bounds the rows
    per call (whole draws of the batch, at least one). Noise is drawn draw by draw, so the values do
    not depend on ``batch_size``. The element-wise terms are summed over ``sum_dims`` (None: all
    non-batch dimensions).

    pointwise: ‖ε − ε̂_u‖² − ‖ε − ε̂_c‖², computed as the equal ⟨ε̂_c − ε̂_u, 2ε − ε̂_c − ε̂_u⟩
               (a difference of squares without subtracting two large, nearly equal sums);
    orthogonal: ‖ε̂_c − ε̂_u‖²;
    conditional / unconditional: −‖ε − ε̂_c‖² / −‖ε − ε̂_u‖² (their difference is the point-wise term).
    """
    forms = _forms(form)
    n, B = t.shape
    sum_dims = tuple(range(1, x0.ndim)) if sum_dims is None else sum_dims
    per_call = n if batch_size is None else max(1, batch_size // B)
    if antithetic:  # whole pairs per call, so the noise does not depend on batch_size
        per_call = max(2, per_call - per_call % 2)
    scale = (-1,) + (1,) * (x0.ndim - 1)
    signal, noise = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    out = []
    for j in range(0, n, per_call):
        tj = t[j : j + per_call].reshape(-1)
        eps = _noise(x0, len(tj) // B, generator, antithetic)
        z = signal[tj].to(x0).view(scale) * x0.repeat(len(tj) // B, *scale[1:]) + noise[tj].to(x0).view(scale) * eps
        eps_c, eps_u = eps_pair(z, tj.to(x0.device))
        if eps_c.shape != z.shape or eps_u.shape != z.shape:
            raise ValueError(
                f"eps_pair returned shapes {tuple(eps_c.shape)} and {tuple(eps_u.shape)} "
                f"for z_t of shape {tuple(z.shape)}; "
                "it must return (eps_c, eps_u) shaped like z_t, with its prompts bound for the same images as x0."
            )
        acc = torch.promote_types(eps_c.dtype, torch.float32)
        eps, eps_c, eps_u = eps.to(acc), eps_c.to(acc), eps_u.to(acc)
        diff = eps_c - eps_u
        out.append(torch.stack([_term(f, eps, eps_c, eps_u, diff, sum_dims) for f in forms]))
    f = torch.cat(out, 1).view(len(forms), n, B, *out[0].shape[2:])
    if not bool(torch.isfinite(f).all()):
        raise ValueError("the denoiser returned NaN or inf for some noised inputs; "
                         "check the model's dtype (fp16 overflow) and its inputs.")
    return f[0] if isinstance(form, str) else f


def _grid(ab: torch.Tensor, t_min: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps t_min..T−1 that re-noising draws from, and their trapezoidal weights ½|Δλ|."""
    if not 0 <= t_min < len(ab) - 1:
        raise ValueError(f"t_min must lie in 0..{len(ab) - 2} so that at least two timesteps remain, got {t_min}.")
    grid = torch.arange(t_min, len(ab))
    return grid, quadrature_weights(ab, grid)


def _inverse_cdf(q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Grid indices of the proposal q's quantiles u."""
    return torch.searchsorted(q.cumsum(0), u.contiguous()).clamp(max=len(q) - 1)


def _proposal(proposal, ab, grid, w) -> torch.Tensor:
    """The proposal's probabilities over the grid (float64, summing to 1)."""
    if isinstance(proposal, torch.Tensor):
        q = proposal.detach().to("cpu", torch.float64)
        if q.shape != grid.shape or not bool(torch.isfinite(q).all()) or bool((q <= 0).any()):
            raise ValueError(f"a proposal tensor must hold {len(grid)} positive, finite weights, one per timestep "
                             f"t = {int(grid[0])}..{int(grid[-1])} (as fit_proposal returns for this t_min), "
                             f"got shape {tuple(q.shape)}.")
    elif proposal == "importance":
        q = w / torch.cosh(log_snr(ab[grid]) / 4) ** 2
    elif proposal == "uniform":
        q = torch.ones_like(w)
    else:
        raise ValueError(f'proposal must be "importance", "uniform" or a tensor from fit_proposal, got {proposal!r}.')
    return q / q.sum()


def fit_proposal(eps_pair, x0, alphas_cumprod, *, n_samples: int = 64, generator, form: str = "orthogonal",
                 t_min: int = 1, defensive: float = 0.3, batch_size: int | None = None,
                 antithetic: bool = False) -> torch.Tensor:
    """A proposal over t fitted to this model's integrand, for :func:`renoise_mi`'s ``proposal``.

    The variance-minimising proposal for a sum Σ_t w_t E f(t) draws t with probability ∝
    w_t · √E[f(t)²]. A pilot measures √E[f²] on the images x0 (a few are enough, e.g. renders or
    candidates of the kind to be scored) at ``n_samples`` timesteps, the quantiles of the default
    logistic proposal, with fresh noise per image; between those timesteps it is interpolated
    linearly in λ. A share ``defensive`` of the default proposal is mixed in, so that w/q stays
    bounded where the pilot saw nothing. Fit once per model (and form), then pass the tensor to
    every call: the estimator stays unbiased whatever the pilot measured; only its variance changes.
    Costs n_samples ε-pair evaluations per pilot image. With ``antithetic=True`` (for
    :func:`renoise_mi` with ``antithetic=True``) the pilot draws n_samples // 2 antithetic pairs and
    measures the root mean square of the pair means, the quantity that estimator averages.
    """
    ab = alphas_cumprod_of(alphas_cumprod)
    if not 0 < defensive <= 1:
        raise ValueError(f"defensive must lie in (0, 1], got {defensive}.")
    if isinstance(form, bool) or not isinstance(form, str):
        raise ValueError(f"form must be one of {', '.join(FORMS)} (the proposal is fitted to one form), got {form!r}.")
    if antithetic and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2 or n_samples % 2):
        raise ValueError(f"with antithetic=True n_samples must be an even integer ≥ 2 (whole pairs), got {n_samples!r}.")
    _check_x0(x0)
    grid, w = _grid(ab, t_min)
    base = _proposal("importance", ab, grid, w)
    rep = 2 if antithetic else 1
    levels = n_samples // rep
    idx = _inverse_cdf(base, (torch.arange(levels, dtype=torch.float64) + 0.5) / levels).unique()
    t = grid[idx].repeat_interleave(rep)[:, None].expand(-1, x0.shape[0])
    f = _integrand(eps_pair, x0, ab, t, generator, form, batch_size, None, antithetic).double()
    rms = f.view(len(idx), rep, x0.shape[0]).mean(1).square().mean(1).sqrt().cpu()
    lam, at = log_snr(ab[grid]).double(), log_snr(ab[grid[idx]]).double()  # λ falls as t grows
    profile = torch.from_numpy(np.interp(-lam.numpy(), -at.numpy(), rms.numpy()))
    fitted = w * profile
    if not bool(fitted.sum() > 0):
        return base
    return (1 - defensive) * fitted / fitted.sum() + defensive * base


def renoise_mi(eps_pair, x0, alphas_cumprod, *, n_samples: int = 64, generator, form: str | tuple[str, ...] = "pointwise",
               proposal: str | torch.Tensor = "importance", t_min: int = 1, batch_size: int | None = None,
               antithetic: bool = False):
    """MI of any image (or latent) x0 [B, ...] with the prompt bound in ``eps_pair``: (estimate, stderr), both [B].

    Monte Carlo over noise levels. The target is the trapezoidal sum Σ_t w_t E_ε f(t) over the grid
    t = t_min..T−1 with w_t = ½|Δλ| (:func:`quadrature_weights`), which approximates the integral
    over log SNR (on the Gaussian test case, DDPM's linear schedule, the sum is 0.1–0.2 % below the
    integral, most of it the high-SNR end below t_min = 1). Each draw picks t ~ q(t),
    noises z_t = √ᾱ_t x0 + √(1−ᾱ_t) ε with fresh ε, and contributes g = (w_t / q(t)) f(t), an unbiased
    draw of the target:

    * ``form="pointwise"``: f = ‖ε − ε̂_u‖² − ‖ε − ε̂_c‖², estimating log p(x0|y) − log p(x0);
    * ``form="orthogonal"``: f = ‖ε̂_c − ε̂_u‖² (never negative, less noise; equals the point-wise value
      only on average over x0 ~ p(x|y));
    * ``form="conditional"`` / ``"unconditional"``: f = −‖ε − ε̂_c‖² / −‖ε − ε̂_u‖², the two halves of
      the point-wise form (conditional − unconditional = point-wise, draw by draw). Each estimates
      log p(x0|y) / log p(x0) *up to an additive constant* that depends on the schedule, t_min and
      the image size but not on x0 or y, apart from the part of the integral outside the grid; the
      integrand itself does not decay at high SNR, so a single value means nothing and its noise is
      large. Compare images only under common random numbers: the same generator seed for each of
      them, so they share t and ε, and the constant and most of the noise cancel in the difference.
      With ``t_min`` around 50 the far high-SNR end, where the bound diverges for near-discrete
      pixels, is left out.

    ``proposal``: how t is drawn, ``"importance"`` (a logistic density in λ), ``"uniform"`` (in t) or a
    tensor from :func:`fit_proposal`. The draws are stratified, two per stratum of the proposal's mass,
    hence n_samples ≥ 2 (see "Re-noising" in the module docstring for both). ``antithetic=True`` spends
    the evaluations on n_samples // 2 antithetic pairs, ε and −ε at one t (n_samples even and ≥ 4; see
    "Antithetic noise" there); on the shipped Shapes model it did not pay, so it is off by default.

    ``n_samples`` is the number of ε-pair evaluations per image. ``generator``: one torch.Generator,
    or a list with one per image (then an image's estimate does not depend on the rest of the batch).
    The draws do not depend on ``form`` or ``batch_size`` (rows per network call, whole draws of the
    batch). ``form=("pointwise", "orthogonal")`` computes both forms from the same network
    evaluations and returns {form: (estimate, stderr)}, equal to two calls with reseeded generators.
    """
    ab = alphas_cumprod_of(alphas_cumprod)
    _check_n_samples(n_samples, antithetic)
    _check_x0(x0)
    grid, w = _grid(ab, t_min)
    q = _proposal(proposal, ab, grid, w)
    rep = 2 if antithetic else 1
    B, units = x0.shape[0], n_samples // rep  # a unit: one draw, or one antithetic pair (ε, −ε) at one t
    group = (torch.arange(units) // 2).clamp(max=units // 2 - 1)  # two units per group, three in the last if odd
    strata = units if antithetic else units // 2  # antithetic: one pair per stratum, groups pool two strata
    stratum = torch.arange(units) if antithetic else group
    u = (stratum[:, None] + _draw(torch.rand, (B, units), generator, "cpu", torch.float32).T.double()) / strata
    idx = _inverse_cdf(q, u)  # [units, B]
    forms = _forms(form)
    f = _integrand(eps_pair, x0, ab, grid[idx].repeat_interleave(rep, 0), generator, forms, batch_size, None, antithetic)
    g = (w / q)[idx].to(f) * f.view(len(forms), units, rep, B).mean(2)  # [forms, units, B]
    stats = dict(zip(forms, _collapsed_mean(g) if antithetic else _stratified_mean(g, group, units // 2)))
    return stats[form] if isinstance(form, str) else stats


def _check_n_samples(n_samples, antithetic: bool) -> None:
    """n_samples must give every stratum two units (draws, or antithetic pairs)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError("n_samples must be an integer ≥ 2 (two draws per stratum give the standard error), "
                         f"got {n_samples!r}.")
    if antithetic and (n_samples < 4 or n_samples % 2):
        raise ValueError("with antithetic=True n_samples must be an even integer ≥ 4 (two antithetic pairs give the "
                         f"standard error), got {n_samples}.")


def _collapsed_mean(g: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, standard error) per form from g [forms, units, B], one unit per stratum of equal mass.

    The standard error collapses neighbouring strata in pairs (three in the last group when the count
    is odd): k/(k−1) Σ (g_h − ḡ)² over a group of k strata estimates the sum of their variances plus
    the spread of their means, so the error is slightly conservative, never optimistic on average.
    """
    units = g.shape[1]
    group = (torch.arange(units, device=g.device) // 2).clamp(max=units // 2 - 1)
    count = torch.bincount(group, minlength=units // 2).to(g)[:, None]
    group_mean = g.new_zeros(g.shape[0], units // 2, g.shape[2]).index_add_(1, group, g) / count
    spread = g.new_zeros(g.shape[0], units // 2, g.shape[2]).index_add_(1, group, (g - group_mean[:, group]).square())
    var = (spread * count / (count - 1)).sum(1) / units**2
    return [(m, v.sqrt()) for m, v in zip(g.mean(1), var)]


def _stratified_mean(g: torch.Tensor, stratum: torch.Tensor, H: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean of the stratum means, its standard error from the within-stratum variances) per form, from the
    unit values g [forms, units, B] and each unit's stratum [units] (at least two units per stratum)."""
    stratum, count = stratum.to(g.device), torch.bincount(stratum, minlength=H).to(g)[:, None]
    mean = g.new_zeros(g.shape[0], H, g.shape[2]).index_add_(1, stratum, g) / count
    var = g.new_zeros(g.shape[0], H, g.shape[2]).index_add_(1, stratum, (g - mean[:, stratum]).square()) / (count - 1)
    return [(m.mean(0), (v / count).sum(0).sqrt() / H) for m, v in zip(mean, var)]


def _curve(eps_pair, x0, alphas_cumprod, timesteps, n_noise, generator, form, batch_size, sum_dims):
    """Integrand at each given timestep averaged over n_noise draws: [B, len(timesteps), ...]."""
    if not isinstance(form, str):
        raise ValueError(f"form must be one of {', '.join(FORMS)} (one form per curve or map), got {form!r}.")
    ab = alphas_cumprod_of(alphas_cumprod)
    t = _as_timesteps(timesteps, len(ab))
    if isinstance(n_noise, bool) or not isinstance(n_noise, int) or n_noise < 1:
        raise ValueError(f"n_noise must be a positive integer, got {n_noise!r}.")
    _check_x0(x0)
    rows = t.repeat_interleave(n_noise)[:, None].expand(-1, x0.shape[0])
    f = _integrand(eps_pair, x0, ab, rows, generator, form, batch_size, sum_dims)
    return f.view(len(t), n_noise, *f.shape[1:]).mean(1).movedim(1, 0)


def mi_curve(eps_pair, x0, alphas_cumprod, timesteps, *, n_noise: int = 1, generator, form: str = "pointwise",
             batch_size: int | None = None) -> torch.Tensor:
    """The MI integrand against noise level: [B, len(timesteps)], averaged over ``n_noise`` ε draws.

    Plot it against ``log_snr(alphas_cumprod[timesteps])`` to see at which noise levels the prompt
    matters; ``(quadrature_weights(ab, timesteps) * curve).sum(-1)`` turns it back into an MI estimate.
    """
    return _curve(eps_pair, x0, alphas_cumprod, timesteps, n_noise, generator, form, batch_size, None)


def mi_pixel_map(eps_pair, x0, alphas_cumprod, timesteps, *, n_noise: int = 1, generator, form: str = "pointwise",
                 batch_size: int | None = None) -> torch.Tensor:
    """Where in the image the prompt carries information: the integrand per pixel, [B, len(timesteps), H, W].

    x0 must be [B, C, H, W] (or [B, C, *spatial]); the element-wise terms are summed over channels
    only, so summing the map over pixels gives :func:`mi_curve`. Weight it with
    :func:`quadrature_weights` and sum over timesteps for one MI map per image.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim < 3:
        raise ValueError("mi_pixel_map needs images or latents shaped [B, C, H, W]; use mi_curve for flat vectors.")
    return _curve(eps_pair, x0, alphas_cumprod, timesteps, n_noise, generator, form, batch_size, (1,))


def word_attribution(mi_fn, prompt: str, replacement: str | None = None) -> list[tuple[str, float]]:
    """How much MI each word of ``prompt`` carries: [(word, MI(prompt) − MI(prompt without that word))].

    ``mi_fn(prompts) -> tensor [n]`` computes the MI of ONE fixed image under each prompt (e.g.
    ``renoise_mi`` with a predictor built for that list, reseeding the generator so every variant
    sees the same noise); it is called once with the full prompt followed by one variant per word.
    ``replacement`` substitutes a word instead of dropping it (e.g. "thing" for a noun).
    """
    words = prompt.split()
    if not words:
        raise ValueError("the prompt has no words to attribute; pass a non-empty prompt.")
    swap = [] if replacement is None else [replacement]
    variants = [prompt] + [" ".join(words[:i] + swap + words[i + 1 :]) for i in range(len(words))]
    values = torch.as_tensor(mi_fn(variants)).detach().double().cpu().reshape(-1)
    if len(values) != len(variants):
        raise ValueError(f"mi_fn returned {len(values)} values for {len(variants)} prompts; "
                         "it must return one MI per prompt.")
    return [(word, float(values[0] - values[i + 1])) for i, word in enumerate(words)]


def prompt_swap_test(mi_fn, true_prompts: list[str], edited_prompts: list[str]) -> dict:
    """Does the model's density know what the prompt says? Compare MI under true and edited prompts.

    ``mi_fn(prompts) -> tensor [n]`` gives the MI of image i under prompts[i] for n fixed images (e.g.
    ground-truth renders); ``edited_prompts[i]`` changes one fact of ``true_prompts[i]`` (colours or
    shapes swapped, relation flipped). If the model has learnt that fact, the true prompt wins on most
    images; at chance (½) the MI cannot select for it. Returns the per-image values, their means and
    medians, and ``true_wins``, the fraction of images whose true prompt has the strictly higher MI.
    """
    if not true_prompts or len(true_prompts) != len(edited_prompts):
        raise ValueError("need equally many true and edited prompts, "
                         f"at least one, got {len(true_prompts)} and {len(edited_prompts)}.")
    def as_values(prompts):
        return torch.as_tensor(mi_fn(list(prompts))).detach().double().cpu().reshape(-1)
    true, edited = as_values(true_prompts), as_values(edited_prompts)
    if len(true) != len(true_prompts) or len(edited) != len(true_prompts):
        raise ValueError(f"mi_fn returned {len(true)} and {len(edited)} values for {len(true_prompts)} prompts; "
                         "it must return one MI per prompt.")
    return {
        "true": true, "edited": edited,
        "true_mean": float(true.mean()), "true_median": float(true.quantile(0.5)),
        "edited_mean": float(edited.mean()), "edited_median": float(edited.quantile(0.5)),
        "true_wins": float((true > edited).double().mean()),
    }


def image_swap_test(score, images, prompts: list[str], scenes: list[int], kinds: list[str], *, seed: int = 0,
                    aligned: str = "aligned", batch_size: int = 32, progress: bool = True) -> dict:
    """Does a score prefer an aligned image to the same scene with one thing wrong, under the scene's prompt?

    Selection's own question: one prompt, several images (where :func:`prompt_swap_test` holds the image
    and changes the prompt, so that log p(x) cancels; here it does not). Row i of ``images`` [n, ...]
    belongs to scene ``scenes[i]``, whose prompt is ``prompts[i]``; ``kinds[i]`` is ``aligned`` for the
    scene's aligned image, else the name of the edit the row shows (e.g. the edits of
    :func:`minitune.toy.world.render_edits`). ``score(images, prompts, seeds) -> {signal: [m]}`` scores m
    rows at a time, at most ``batch_size``, under their prompts, with any number of signals (e.g.
    :func:`renoise_score_fn`); ``seeds[j]`` is ``seed`` + the row's scene, so that the images of a scene
    are scored on the same noise and their differences are not Monte Carlo noise between draws.

    Returns ``{"scores": {signal: array [n]}, "edits": {edit: {"pairs": count, "wins": {signal: w},
    "median_gap": {signal: g}, "mean_gap": {signal: g}}}}``, edits in order of first appearance: ``w`` is
    the fraction of scenes whose aligned image scores higher than its edited copy (ties count half; ½ is
    blind to the edit, below ½ prefers it), ``g`` the gap aligned − edited. ``progress`` shows a bar over
    the batches.
    """
    n = len(images)
    if not n or not len(prompts) == len(scenes) == len(kinds) == n:
        raise ValueError(f"got {n} images, {len(prompts)} prompts, {len(scenes)} scenes and {len(kinds)} kinds; "
                         "pass one of each per image, at least one.")
    parts = [score(images[s : s + batch_size], list(prompts[s : s + batch_size]),
                   [seed + int(c) for c in scenes[s : s + batch_size]])
             for s in tqdm(range(0, n, batch_size), desc="scoring", disable=not progress)]
    scores = {k: torch.cat([torch.as_tensor(p[k]).detach().cpu().reshape(-1) for p in parts]).numpy() for k in parts[0]}
    first = {}
    for i, (c, kind) in enumerate(zip(scenes, kinds)):
        if kind == aligned:
            first.setdefault(c, i)
    missing = sorted({c for c, kind in zip(scenes, kinds) if kind != aligned and c not in first})
    if missing:
        raise ValueError(f"scene {missing[0]} has edits but no {aligned!r} image ({len(missing)} scene(s) in all); "
                         "give every scene its aligned image.")
    edits = {}
    for edit in dict.fromkeys(kind for kind in kinds if kind != aligned):
        a, e = np.array([(first[c], i) for i, (c, kind) in enumerate(zip(scenes, kinds)) if kind == edit]).T
        wins = {k: np.where(v[a] > v[e], 1.0, np.where(v[a] == v[e], 0.5, 0.0)) for k, v in scores.items()}
        edits[edit] = {"pairs": len(a), "wins": {k: float(w.mean()) for k, w in wins.items()},
                       "median_gap": {k: float(np.median(v[a] - v[e])) for k, v in scores.items()},
                       "mean_gap": {k: float(np.mean(v[a] - v[e])) for k, v in scores.items()}}
    return {"scores": scores, "edits": edits}


def renoise_mi_fn(denoiser, x0, *, n_samples: int = 32, seed: int = 0, form: str = "pointwise",
                  proposal: str | torch.Tensor = "importance", batch_size: int | None = 256):
    """An ``mi_fn`` for :func:`word_attribution` and :func:`prompt_swap_test`: prompts -> re-noising MI [n].

    ``denoiser``: a :mod:`minitune.families` adapter (anything with ``encode(prompts)``,
    ``eps_pair(conditioning)`` and ``scheduler``). ``x0`` [B, ...] in the space the denoiser works in:
    with one image, it is scored under every prompt of a call; with B images, a call needs B prompts
    and scores image b under prompt b. Image b is always re-noised with the generator seeded
    ``seed + b`` (the single image with ``seed``), so every prompt sees the same noise and
    differences between prompts are not Monte Carlo noise between draws. Values are cached per list
    of prompts, so repeating the true prompts (as :func:`prompt_swap_test` does per edit) costs nothing.
    ``proposal`` is :func:`renoise_mi`'s (e.g. a tensor from :func:`fit_proposal`).
    """
    _check_x0(x0)
    cache = {}

    def mi_fn(prompts) -> torch.Tensor:
        prompts = tuple(prompts)
        if x0.shape[0] not in (1, len(prompts)):
            raise ValueError(f"got {len(prompts)} prompts for {x0.shape[0]} images; "
                             "pass one prompt per image, or a single image to score under every prompt.")
        if prompts not in cache:
            x = x0.expand(len(prompts), *x0.shape[1:])
            gens = [torch.Generator().manual_seed(seed + (b if x0.shape[0] > 1 else 0)) for b in range(len(prompts))]
            pair = denoiser.eps_pair(denoiser.encode(list(prompts)))
            cache[prompts] = renoise_mi(pair, x, denoiser.scheduler, n_samples=n_samples, generator=gens, form=form,
                                        proposal=proposal, batch_size=batch_size)[0].detach().cpu()
        return cache[prompts]

    return mi_fn


def renoise_score_fn(denoiser, *, n_samples: int = 32, forms: dict[str, str] | None = None,
                     proposal: str | torch.Tensor = "importance", batch_size: int | None = None):
    """A ``score`` for :func:`image_swap_test`: ``(images, prompts, seeds) -> {signal: [m]}``, re-noising MI.

    Image j (in the space the denoiser works in) is scored under ``prompts[j]`` by :func:`renoise_mi` with
    the generator ``torch.Generator().manual_seed(seeds[j])``, so images given the same seed share their
    noise draws. ``forms`` names the signals, {name: form} (default ``{"pointwise": "pointwise"}``); all
    of them come from the same network evaluations. ``denoiser`` is a :mod:`minitune.families` adapter.
    """
    forms = dict(forms or {"pointwise": "pointwise"})

    def score(images, prompts, seeds) -> dict:
        texts = list(dict.fromkeys(prompts))  # each distinct prompt encoded once
        cond = denoiser.encode(texts).take(torch.tensor([texts.index(p) for p in prompts]))
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        est = renoise_mi(denoiser.eps_pair(cond), images.to(denoiser.device), denoiser.scheduler, n_samples=n_samples,
                         generator=gens, form=tuple(forms.values()), proposal=proposal, batch_size=batch_size)
        return {name: est[form][0].detach().cpu() for name, form in forms.items()}

    return score


def contrast_mi(denoiser, x0, prompts: list[str], near_misses: list[list[str]], *, seeds: list[int],
                n_samples: int = 16, proposal: str | torch.Tensor = "importance",
                batch_size: int | None = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """How much better its own prompt explains each image than the best of its near misses.

    Returns ``(contrast, pointwise)``, both [B] in nats: ``pointwise`` is the unbiased re-noising MI
    log p(x_b|y_b) − log p(x_b) (:func:`renoise_mi`), and ``contrast`` is
    log p(x_b|y_b) − max_j log p(x_b|y'_bj) = pointwise − max_j MI(x_b, y'_bj). The log p(x) term cancels,
    so whatever the unconditional model finds likely (e.g. more ink) does not count; only what tells
    the prompt apart from ``near_misses[b]`` (other prompts, such as :func:`minitune.toy.world.near_misses`:
    one fact wrong, one object more or fewer) does. It is the log-likelihood ratio of a diffusion
    classifier between the prompt and its closest rival.

    Image b is re-noised with the generator seeded ``seeds[b]`` under every prompt, so the
    differences are not Monte Carlo noise between draws, and its values do not depend on the rest of
    the batch. The rivals need only their conditional predictions, two per network call
    (:meth:`~minitune.families.Conditioning.paired`): an image costs (1 + ⌈R/2⌉) × ``n_samples``
    ε-pair evaluations for R near misses. ``proposal`` is :func:`renoise_mi`'s (e.g. a tensor from
    :func:`fit_proposal`).
    """
    _check_x0(x0)
    B = x0.shape[0]
    if not (len(prompts) == len(near_misses) == len(seeds) == B):
        raise ValueError(f"got {B} images, {len(prompts)} prompts, {len(near_misses)} near-miss lists and "
                         f"{len(seeds)} seeds; pass one of each per image.")
    for prompt, rivals in zip(prompts, near_misses):
        if not rivals:
            raise ValueError(f"the prompt {prompt!r} has no near-miss prompts to contrast with; give it at least one.")
    texts = list(dict.fromkeys([*prompts, *(r for rivals in near_misses for r in rivals)]))
    index = {t: i for i, t in enumerate(texts)}
    conds = denoiser.encode(texts)
    def rows_of(ts):
        return conds.take(torch.tensor([index[t] for t in ts]))
    ab = alphas_cumprod_of(denoiser.scheduler)

    def estimate(images: list[int], cond, forms: tuple[str, str]):
        gens = [torch.Generator(denoiser.device).manual_seed(seeds[b]) for b in images]
        est = renoise_mi(denoiser.eps_pair(cond), x0[images], ab, n_samples=n_samples, generator=gens, form=forms,
                         proposal=proposal, batch_size=batch_size)
        return [est[f][0] for f in forms]

    pointwise, own = estimate(list(range(B)), rows_of(prompts), ("pointwise", "conditional"))
    jobs = [(b, rivals[k], rivals[min(k + 1, len(rivals) - 1)])  # (image, rival, rival): two per call
            for b, rivals in enumerate(near_misses) for k in range(0, len(rivals), 2)]
    first, second = estimate([b for b, _, _ in jobs], rows_of([r for _, r, _ in jobs]).paired(rows_of([r for _, _, r in jobs])),
                             ("conditional", "unconditional"))
    image_of_job = torch.tensor([b for b, _, _ in jobs], device=own.device)
    best = torch.full_like(own, -float("inf")).scatter_reduce(0, image_of_job, torch.maximum(first, second), "amax")
    return own - best, pointwise
