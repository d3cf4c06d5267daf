"""A jointly Gaussian world where every information quantity has a closed form.

Let (x, y) be jointly Gaussian, x ∈ R^d ("the image"), y ∈ R^k ("the prompt"):

    [x; y] ~ N([μ_x; μ_y], [[Σ_xx, Σ_xy], [Σ_yx, Σ_yy]]).

Then everything the MI estimators of :mod:`minitune.mi` approximate is known exactly:

* the conditional p(x|y) = N(μ_{x|y}, Σ_{x|y}) with μ_{x|y} = μ_x + Σ_xy Σ_yy⁻¹ (y − μ_y) and
  Σ_{x|y} = Σ_xx − Σ_xy Σ_yy⁻¹ Σ_yx (Schur complement, the same for every y);
* the optimal ε-denoiser of any Gaussian N(μ, Σ) under VP noising z_t = √ᾱ x + √(1−ᾱ) ε:
  since z_t ~ N(√ᾱ μ, ᾱΣ + (1−ᾱ)I) and Cov(ε, z_t) = √(1−ᾱ) I,

      ε̂(z_t) = E[ε | z_t] = √(1−ᾱ) (ᾱΣ + (1−ᾱ)I)⁻¹ (z_t − √ᾱ μ);

  the conditional denoiser ε̂_c uses (μ_{x|y}, Σ_{x|y}), the unconditional ε̂_u uses (μ_x, Σ_xx);
* the point-wise mutual information log p(x|y) − log p(x) (two Gaussian log-densities);
* I(X; Y=y) = KL(p(x|y) ‖ p(x)), the average of the point-wise MI over x ~ p(x|y);
* the noise-averaged integrands of both estimator forms at any noise level, so a student can see
  the exact curve that a Monte Carlo estimate scatters around.

Everything is float64: this is ground truth, not a model.
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal, kl_divergence

from ..mi import tile_batch


def eps_matrix(alpha_bar: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """A = √(1−ᾱ) (ᾱ cov + (1−ᾱ) I)⁻¹ for each noise level ᾱ [m]: [m, d, d].

    The optimal denoiser is affine, ε̂(z_t) = A (z_t − √ᾱ μ); with z_t = √ᾱ x + σ ε it reads
    ε̂ = √ᾱ A (x − μ) + σ A ε, the form every closed-form integrand below starts from.
    """
    a = alpha_bar.to(cov.dtype)[:, None, None]
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return (1 - a).sqrt() * torch.linalg.inv(a * cov + (1 - a) * eye)


def gaussian_eps(z_t: torch.Tensor, alpha_bar: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Optimal ε-prediction E[ε | z_t] for data x ~ N(mu, cov) noised to z_t = √ᾱ x + √(1−ᾱ) ε.

    z_t: [n, d]; alpha_bar: [n] (one noise level per row); mu: [d] or [n, d]; cov: [d, d].
    One matrix is built per distinct noise level and applied row by row with an element-wise
    product and sum, so a row's result does not depend on the other rows (no batch-size-dependent
    BLAS kernels).
    """
    levels, row = torch.unique(alpha_bar, return_inverse=True)
    residual = z_t - alpha_bar.sqrt()[:, None] * mu
    return (eps_matrix(levels, cov).index_select(0, row) * residual[:, None, :]).sum(-1)


class JointGaussian:
    """Jointly Gaussian (x, y) with closed-form denoisers, point-wise MI and KL.

    Build one from explicit moments, or a random well-conditioned one with
    ``JointGaussian.random(d=4, k=2, seed=0)``. Methods that take y accept [k] or [B, k];
    methods that take x take [B, d] (one x per y row, or many x for a single y).
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, d: int):
        mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
        if cov.shape != (mean.numel(), mean.numel()) or not 0 < d < mean.numel():
            raise ValueError(f"need mean [d+k], cov [d+k, d+k] and 0 < d < d+k, "
                             f"got mean {tuple(mean.shape)}, cov {tuple(cov.shape)}, d={d}.")
        self.d, self.k = d, mean.numel() - d
        self.mean_x, self.mean_y = mean[:d], mean[d:]
        self.cov_xx, self.cov_xy, self.cov_yy = cov[:d, :d], cov[:d, d:], cov[d:, d:]
        self.reg = torch.linalg.solve(self.cov_yy, self.cov_xy.T).T  # regression of x on y, Σ_xy Σ_yy⁻¹ [d, k]
        self.cov_cond = self.cov_xx - self.reg @ self.cov_xy.T  # Σ_{x|y}

    @classmethod
    def random(cls, d: int = 4, k: int = 2, seed: int = 0, noise=(0.05, 0.5)) -> "JointGaussian":
        """A random, informative joint law built as x = μ_x + W (y − μ_y) + n.

        y ~ N(μ_y, Σ_yy) with eigenvalues of Σ_yy in [0.5, 2]; W ~ N(0, 1/k) entrywise; the noise
        n ~ N(0, Σ_n) with eigenvalues log-uniform in ``noise``, so p(x|y) = N(μ_x + W(y − μ_y), Σ_n)
        and each of the k informative directions carries roughly ½ log(1 + 1/noise) nats.
        Means ~ N(0, ¼). The default (d=4, k=2, seed=0) gives KLs of 1–3 nats.
        """
        g = torch.Generator().manual_seed(seed)
        def randn(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64)

        def spd(n, lo, hi):  # random rotation times eigenvalues log-uniform in [lo, hi]
            q, _ = torch.linalg.qr(randn(n, n))
            u = torch.rand(n, generator=g, dtype=torch.float64)
            return q @ torch.diag(lo * (hi / lo) ** u) @ q.T

        cov_yy, W, cov_n = spd(k, 0.5, 2.0), randn(d, k) / k**0.5, spd(d, *noise)
        cov = torch.cat([torch.cat([W @ cov_yy @ W.T + cov_n, W @ cov_yy], 1), torch.cat([cov_yy @ W.T, cov_yy], 1)])
        return cls(0.5 * randn(d + k), cov, d)

    def cond_mean(self, y: torch.Tensor) -> torch.Tensor:
        """μ_{x|y} = μ_x + Σ_xy Σ_yy⁻¹ (y − μ_y), shape [..., d]."""
        return self.mean_x + (torch.as_tensor(y, dtype=torch.float64) - self.mean_y) @ self.reg.T

    def conditional(self, y: torch.Tensor) -> MultivariateNormal:
        """p(x|y) as a torch distribution (batched over the rows of y)."""
        return MultivariateNormal(self.cond_mean(y), self.cov_cond)

    def marginal(self) -> MultivariateNormal:
        """p(x), the distribution the unconditional denoiser is optimal for."""
        return MultivariateNormal(self.mean_x, self.cov_xx)

    def sample_x_given_y(self, y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of x ~ p(x|y) for a single y [k], shape [n, d]."""
        eps = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        return self.cond_mean(y) + eps @ torch.linalg.cholesky(self.cov_cond).T

    def pointwise_mi(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(x|y) − log p(x) in nats, shape [B]."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return self.conditional(y).log_prob(x) - self.marginal().log_prob(x)

    def kl(self, y: torch.Tensor) -> torch.Tensor:
        """I(X; Y=y) = KL(p(x|y) ‖ p(x)) in nats, shape [] or [B]."""
        return kl_divergence(self.conditional(y), self.marginal())

    def eps_pair(self, y: torch.Tensor, alphas_cumprod: torch.Tensor):
        """The ε-pair predictor ``(z_t, t) -> (ε̂_c, ε̂_u)`` of :mod:`minitune.mi` for prompt(s) y.

        y: [k] (one prompt for every row) or [B, k] (one per image; tiled with
        :func:`minitune.mi.tile_batch` when an estimator stacks several noise draws per image).
        t indexes ``alphas_cumprod``. Both predictions are exact, so any estimator error you see
        is Monte Carlo or discretisation error, never model error.
        """
        mu_c, table = self.cond_mean(y), torch.as_tensor(alphas_cumprod, dtype=torch.float64)

        def predict(z_t: torch.Tensor, t: torch.Tensor):
            ab = table[t.cpu()].to(z_t.device)
            mu = mu_c.to(z_t.device) if mu_c.ndim == 1 else tile_batch(mu_c.to(z_t.device), z_t.shape[0])
            return (gaussian_eps(z_t, ab, mu, self.cov_cond.to(z_t.device)),
                    gaussian_eps(z_t, ab, self.mean_x.to(z_t.device), self.cov_xx.to(z_t.device)))

        return predict

    def expected_integrand(self, x: torch.Tensor, y: torch.Tensor, alpha_bar: torch.Tensor,
                           form: str = "pointwise") -> torch.Tensor:
        """E_ε of the re-noising integrand at x, exactly, for each noise level: shape [B, m].

        With ε̂ = a + σAε (a = √ᾱ A(x − μ), σ = √(1−ᾱ)), E‖ε − ε̂‖² = ‖I − σA‖²_F + ‖a‖², so
        pointwise: ‖I − σA_u‖²_F + ‖a_u‖² − ‖I − σA_c‖²_F − ‖a_c‖²;
        orthogonal: ‖a_c − a_u‖² + σ²‖A_c − A_u‖²_F.
        Half its integral over log SNR is the point-wise MI (pointwise form).
        """
        if form not in ("pointwise", "orthogonal"):
            raise ValueError(f'form must be "pointwise" or "orthogonal", got {form!r}.')
        alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64)
        s, r = (1 - alpha_bar).sqrt()[:, None, None], alpha_bar.sqrt()[:, None]
        A_c, A_u = eps_matrix(alpha_bar, self.cov_cond), eps_matrix(alpha_bar, self.cov_xx)
        a_c = r * torch.einsum("mij,bj->bmi", A_c, x - self.cond_mean(y))
        a_u = r * torch.einsum("mij,bj->bmi", A_u, x - self.mean_x)
        eye = torch.eye(self.d, dtype=torch.float64)
        if form == "pointwise":
            frob = (eye - s * A_u).square().sum((1, 2)) - (eye - s * A_c).square().sum((1, 2))
            return frob + a_u.square().sum(-1) - a_c.square().sum(-1)
        return (a_c - a_u).square().sum(-1) + (s.square() * (A_c - A_u).square()).sum((1, 2))

    def kl_integrand(self, y: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """E over x ~ p(x|y) and ε of ‖ε̂_c − ε̂_u‖², exactly, for each noise level: shape [m] (y: [k]).

        z_t ~ N(√ᾱ μ_c, S) with S = ᾱΣ_{x|y} + (1−ᾱ)I, and
        ε̂_c − ε̂_u = (A_c − A_u)(z_t − √ᾱ μ_c) − √ᾱ A_u(μ_c − μ_x), so its mean square is
        tr((A_c − A_u) S (A_c − A_u)ᵀ) + ᾱ‖A_u(μ_c − μ_x)‖².
        Half its integral over log SNR is KL(p(x|y) ‖ p(x)).
        """
        alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
        a = alpha_bar[:, None, None]
        S = a * self.cov_cond + (1 - a) * torch.eye(self.d, dtype=torch.float64)
        A_c, A_u = eps_matrix(alpha_bar, self.cov_cond), eps_matrix(alpha_bar, self.cov_xx)
        D, shift = A_c - A_u, A_u @ (self.cond_mean(y) - self.mean_x)
        return torch.einsum("mij,mjk,mik->m", D, S, D) + alpha_bar * shift.square().sum(-1)

    def velocity_pair(self, y: torch.Tensor):
        """The velocity-pair predictor ``(z_t, t) -> (v̂_c, v̂_u)`` of :mod:`minitune.flow` for prompt(s) y.

        Straight path z_t = (1−t) x + t ε with t the [n] flow times; both velocities are exact
        (:func:`gaussian_velocity`). y: [k] or [B, k] (tiled like :meth:`eps_pair`).
        """
        mu_c = self.cond_mean(y)

        def predict(z_t: torch.Tensor, t: torch.Tensor):
            t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(z_t.shape[0]).cpu()
            mu = mu_c.to(z_t.device) if mu_c.ndim == 1 else tile_batch(mu_c.to(z_t.device), z_t.shape[0])
            return (gaussian_velocity(z_t, t, mu, self.cov_cond.to(z_t.device)),
                    gaussian_velocity(z_t, t, self.mean_x.to(z_t.device), self.cov_xx.to(z_t.device)))

        return predict


def velocity_matrix(t: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """M = (tI − (1−t) cov) S⁻¹ with S = (1−t)² cov + t² I, for each flow time t [m]: [m, d, d].

    Under the straight path z_t = (1−t) x + t ε with x ~ N(μ, cov), z_t ~ N((1−t)μ, S) and
    Cov(ε − x, z_t) = tI − (1−t) cov, so the optimal velocity E[ε − x | z_t] = −μ + M (z_t − (1−t)μ).
    """
    s = t.to(cov.dtype)[:, None, None]
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return (s * eye - (1 - s) * cov) @ torch.linalg.inv((1 - s) ** 2 * cov + s**2 * eye)


def gaussian_velocity(z_t: torch.Tensor, t: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Optimal velocity E[ε − x | z_t] for x ~ N(mu, cov) on the straight path z_t = (1−t) x + t ε.

    z_t: [n, d]; t: [n] flow times in [0, 1]; mu: [d] or [n, d]. As :func:`gaussian_eps`, one matrix per
    distinct t, applied row by row (a row's result does not depend on the other rows).
    """
    t = torch.as_tensor(t, dtype=torch.float64).to(z_t.device)
    levels, row = torch.unique(t, return_inverse=True)
    residual = z_t - (1 - t)[:, None].to(z_t) * mu
    return -mu + (velocity_matrix(levels, cov).index_select(0, row).to(z_t) * residual[:, None, :]).sum(-1)
