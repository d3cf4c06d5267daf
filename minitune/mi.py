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
second), but its integrand is never negative and has less variance, which is why MI-TUNE uses it.

Everything here talks to the model through an **ε-pair predictor**: any callable
``eps_pair(z_t, t) -> (eps_c, eps_u)`` with z_t [n, ...] and t a LongTensor [n] of timesteps that
index ``alphas_cumprod``; the prompt is bound inside the callable. A UNet adapter and the
closed-form Gaussian of :mod:`minitune.toy.gaussian` are both ε-pair predictors. When an estimator
stacks m noise draws of B images into one call, row j·B + b is image b (m stacked copies of the
batch); a predictor whose prompts are bound for B images tiles them with :func:`tile_batch`.

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
  λ is missing (for DDPM's linear schedule λ runs from about +9.2 to −10.1, and the integrand
  decays like e^{−|λ|} at both ends, so the tails are ~1e-4 of the total).
"""

from __future__ import annotations

import torch


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
        raise ValueError(f"alphas_cumprod must be a 1-D table of values in (0, 1), got shape {tuple(table.shape)}; pass scheduler.alphas_cumprod.")
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
        raise ValueError(f"timesteps must be non-empty and lie in 0..{T - 1} (the scheduler's training range), got {t.tolist()[:8]}.")
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
        raise ValueError("quadrature_weights needs at least two strictly increasing or decreasing timesteps, e.g. scheduler.timesteps.")
    gaps = log_snr(ab[t]).diff().abs()
    zero = gaps.new_zeros(1)
    return (torch.cat([zero, gaps]) + torch.cat([gaps, zero])) / 4


def tile_batch(cond: torch.Tensor, n: int) -> torch.Tensor:
    """Tile per-image conditioning [B, ...] to n = m·B rows in the estimators' layout (row j·B + b is
    image b), e.g. inside an ε-pair predictor called on m stacked noise draws of B images."""
    if n % cond.shape[0]:
        raise ValueError(f"cannot tile conditioning for {cond.shape[0]} images to {n} rows; the batch must be a multiple of the number of images.")
    return cond.repeat(n // cond.shape[0], *([1] * (cond.ndim - 1)))


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
                raise ValueError("every step is at or below the truncation, so the mean is empty; lower truncation or sample more steps.")
            weights = weights / kept
        self.weights, self.keep_curve = weights, keep_curve
        self.total = self.curve = None

    def update(self, i: int, eps_c: torch.Tensor, eps_u: torch.Tensor) -> None:
        """Add weight_i · ‖ε̂_c − ε̂_u‖² (summed over all non-batch elements) for step i."""
        sq = (eps_c - eps_u).to(torch.promote_types(eps_c.dtype, torch.float32)).square().flatten(1).sum(1)
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
            raise ValueError("TrajectoryMI.value() was called before any update(); run at least one sampler step.")
        return self.total


def _draw(sampler, shape, generator, device, dtype) -> torch.Tensor:
    """``sampler`` (torch.rand or torch.randn) of ``shape`` through ``generator``, or through a list of
    generators, one per row of shape[0] (so a row's draws do not depend on the rest of the batch).
    Draws happen on the generator's device and are then moved, as diffusers does."""
    if generator is None:
        raise ValueError("generator is None; pass generator=torch.Generator().manual_seed(0) (or a list, one per image) so every draw is reproducible.")
    if not isinstance(generator, (list, tuple)):
        return sampler(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one generator per image or a single one.")
    return torch.cat([sampler((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]).to(device)


def _integrand(eps_pair, x0, alphas_cumprod, t, generator, form, batch_size, sum_dims) -> torch.Tensor:
    """Re-noise x0 at the timesteps t [n, B] (fresh ε per draw) and return the integrand [n, B, ...].

    Draw j of every image sits in rows j·B..j·B+B−1 of a network call; ``batch_size`` bounds the rows
    per call (whole draws of the batch, at least one). Noise is drawn draw by draw, so the values do
    not depend on ``batch_size``. The integrand is summed over ``sum_dims`` of the element-wise terms.

    pointwise: ‖ε − ε̂_u‖² − ‖ε − ε̂_c‖², computed as the equal ⟨ε̂_c − ε̂_u, 2ε − ε̂_c − ε̂_u⟩
               (a difference of squares without subtracting two large, nearly equal sums);
    orthogonal: ‖ε̂_c − ε̂_u‖².
    """
    if form not in ("pointwise", "orthogonal"):
        raise ValueError(f'form must be "pointwise" or "orthogonal", got {form!r}.')
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise ValueError("x0 must be a batch tensor [B, ...] of images or latents; add a batch dimension with x0[None].")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or inf; check how the images or latents were produced.")
    n, B = t.shape
    per_call = n if batch_size is None else max(1, batch_size // B)
    scale = (-1,) + (1,) * (x0.ndim - 1)
    signal, noise = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    out = []
    for j in range(0, n, per_call):
        tj = t[j : j + per_call].reshape(-1)
        eps = torch.cat([_draw(torch.randn, x0.shape, generator, x0.device, x0.dtype) for _ in range(len(tj) // B)])
        z = signal[tj].to(x0).view(scale) * x0.repeat(len(tj) // B, *scale[1:]) + noise[tj].to(x0).view(scale) * eps
        eps_c, eps_u = eps_pair(z, tj.to(x0.device))
        if eps_c.shape != z.shape or eps_u.shape != z.shape:
            raise ValueError(
                f"eps_pair returned shapes {tuple(eps_c.shape)} and {tuple(eps_u.shape)} for z_t of shape {tuple(z.shape)}; "
                "it must return (eps_c, eps_u) shaped like z_t, with its prompts bound for the same images as x0."
            )
        acc = torch.promote_types(eps_c.dtype, torch.float32)
        eps, eps_c, eps_u = eps.to(acc), eps_c.to(acc), eps_u.to(acc)
        diff = eps_c - eps_u
        terms = diff * (2 * eps - eps_c - eps_u) if form == "pointwise" else diff.square()
        out.append(terms.sum(sum_dims))
    f = torch.cat(out).view(n, B, *out[0].shape[1:])
    if not bool(torch.isfinite(f).all()):
        raise ValueError("the denoiser returned NaN or inf for some noised inputs; check the model's dtype (fp16 overflow) and its inputs.")
    return f


def _proposal(alphas_cumprod, grid, kind):
    lam = log_snr(alphas_cumprod[grid])
    w = quadrature_weights(alphas_cumprod, grid)
    shapes = {
        "uniform": torch.ones_like(lam) ,
        "loguniform": w,
        "logistic1": w / torch.cosh(lam / 2) ** 2,
        "logistic2": w / torch.cosh(lam / 4) ** 2,
        "logistic3": w / torch.cosh(lam / 6) ** 2,
        "sech": w / torch.cosh(lam / 2),
    }
    q = shapes[kind]
    return w, q / q.sum()


def renoise_mi(eps_pair, x0, alphas_cumprod, *, n_samples=64, generator, form="pointwise", proposal="importance",
               t_min=1, batch_size=None, _per_stratum=2):
    ab = alphas_cumprod_of(alphas_cumprod)
    T = len(ab)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer ≥ 2 (two draws per stratum give the standard error), got {n_samples!r}.")
    if not 0 <= t_min < T - 1:
        raise ValueError(f"t_min must lie in 0..{T - 2} so that at least two timesteps remain, got {t_min}.")
    grid = torch.arange(t_min, T)
    kind = {"importance": "logistic2"}.get(proposal, proposal)
    w, q = _proposal(ab, grid, kind)
    B = x0.shape[0]
    H = n_samples // _per_stratum
    stratum = (torch.arange(n_samples) // _per_stratum).clamp(max=H - 1)
    u = (stratum[:, None] + _draw(torch.rand, (B, n_samples), generator, "cpu", torch.float64).T) / H
    idx = torch.searchsorted(q.cumsum(0), u).clamp(max=len(grid) - 1)
    f = _integrand(eps_pair, x0, ab, grid[idx], generator, form, batch_size, tuple(range(1, x0.ndim)))
    g = (w / q)[idx].to(f) * f
    counts = torch.bincount(stratum, minlength=H).to(g)[:, None]
    mean_h = g.new_zeros(H, B).index_add_(0, stratum.to(g.device), g) / counts
    if _per_stratum == 1:
        d = (g[0::2][: H // 2] - g[1::2][: H // 2]).square().sum(0)
        return mean_h.mean(0), d.sqrt() / H
    var_h = g.new_zeros(H, B).index_add_(0, stratum.to(g.device), (g - mean_h[stratum]).square()) / (counts - 1)
    return mean_h.mean(0), (var_h / counts).sum(0).sqrt() / H
