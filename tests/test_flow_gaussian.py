"""The rectified-flow estimators against a jointly Gaussian world with exact velocity fields.

Set-up: the same x ∈ R^4, y ∈ R^2 as tests/test_mi_gaussian.py (KL(p(x|y) ‖ p(x)) = 1.569 nats),
the straight path z_t = (1−t) x + t ε and the exact velocity E[ε − x | z_t] of a Gaussian
(:func:`minitune.toy.gaussian.gaussian_velocity`). Every error left is Monte Carlo, quadrature or
Euler-sampler error; each test says which and how large it was measured to be.
"""

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from scipy.integrate import quad

from minitune import flow
from minitune.toy.gaussian import JointGaussian, gaussian_eps, gaussian_velocity, velocity_matrix

G = JointGaussian.random(d=4, k=2, seed=0)
Y = G.mean_y + torch.randn(2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
KL = float(G.kl(Y))
EYE = torch.eye(4, dtype=torch.float64)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()  # tiny tensors: one thread is faster on a shared machine
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sd35_times(steps: int) -> torch.Tensor:
    """The flow times SD3.5's sampler visits: shift 3, ``steps`` Euler steps."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas[:-1].double()


def affine(t: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor):
    """v̂(z) = M z + b for data N(mu, cov): M [m, d, d], b [m, d]."""
    M = velocity_matrix(t, cov)
    return M, -mu - (1 - t)[:, None] * torch.einsum("mij,j->mi", M, mu)


def velocity_pointwise_integrand(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E_ε[‖u − v̂_u‖² − ‖u − v̂_c‖²] at fixed x [d], in velocity form: with z = (1−t)x + tε and u = ε − x,
    v̂ − u = (M(1−t)x + b + x) + (tM − I)ε, so E‖v̂ − u‖² = ‖M(1−t)x + b + x‖² + ‖tM − I‖²_F."""
    def err(mu, cov):
        M, b = affine(t, mu, cov)
        a = (1 - t)[:, None] * torch.einsum("mij,j->mi", M, x) + b + x
        return a.square().sum(-1) + (t[:, None, None] * M - EYE).square().sum((1, 2))
    return err(G.mean_x, G.cov_xx) - err(G.cond_mean(Y), G.cov_cond)


def trajectory_terms(t: torch.Tensor, g: float = 1.0):
    """E over z_t ~ p_t(z|y) of the orthogonal integrand ‖d‖² and of the official ⟨v_cfg, v_cfg − v̂_u⟩ at guidance g,
    d = v̂_c − v̂_u (both affine in z_t, so E⟨Az + a, Bz + b⟩ = tr(A S Bᵀ) + ⟨Am + a, Bm + b⟩)."""
    (Mc, bc), (Mu, bu) = affine(t, G.cond_mean(Y), G.cov_cond), affine(t, G.mean_x, G.cov_xx)
    S = (1 - t)[:, None, None] ** 2 * G.cov_cond + t[:, None, None] ** 2 * EYE
    m = (1 - t)[:, None] * G.cond_mean(Y)

    def expect(A, a, B, b):
        left, right = torch.einsum("mij,mj->mi", A, m) + a, torch.einsum("mij,mj->mi", B, m) + b
        return torch.einsum("mij,mjk,mik->m", A, S, B) + (left * right).sum(-1)

    D, bd = Mc - Mu, bc - bu
    return expect(D, bd, D, bd), g * expect(Mu + g * D, bu + g * bd, D, bd)


def test_velocity_is_affine_in_the_eps_prediction():
    """ε̂ = z_t + (1−t) v̂ at fixed (z_t, t), and the straight path at t is the VP path at ᾱ = (1−t)²/((1−t)²+t²)
    rescaled by s_t = √((1−t)²+t²): the exact velocity and the exact VP ε-denoiser agree to rounding."""
    z = torch.randn(6, 4, generator=gen(0), dtype=torch.float64)
    t = torch.rand(6, generator=gen(1), dtype=torch.float64)
    v = gaussian_velocity(z, t, G.mean_x, G.cov_xx)
    s = ((1 - t) ** 2 + t**2).sqrt()
    eps = gaussian_eps(z / s[:, None], flow.alpha_bar(t), G.mean_x, G.cov_xx)
    assert torch.allclose(flow.eps_from_velocity(z, t, v), eps, atol=1e-12)
    assert torch.allclose(flow.velocity_from_eps(z, t, eps), v, atol=1e-12)
    assert torch.allclose(flow.log_snr(t), 2 * ((1 - t) / t).log(), atol=1e-12)
    assert torch.allclose(flow.alpha_bar(t), torch.sigmoid(flow.log_snr(t)), atol=1e-12)


def test_exact_weights_integrate_to_pointwise_mi_and_kl():
    """∫₀¹ (1−t)/t · E[integrand] dt is the point-wise MI (at fixed x, velocity form) and the KL (orthogonal form).

    The trapezoid in t on SD3.5's own grid (shift 3) is 0.79 % below the KL at 28 steps and 0.014 % at 200;
    the official weighting (mean over 0.05 < t < 1, with the orthogonal integrand) is 37–38 % below,
    and with its own integrand ⟨v_c, v_c − v̂_u⟩ (guidance 1) 58–59 % below: it is not the MI up to rounding."""
    x = G.sample_x_given_y(Y, 3, gen(2))
    for b in range(3):
        value = quad(lambda t: (1 - t) / t * float(velocity_pointwise_integrand(x[b], torch.tensor([t]))[0]), 0, 1, limit=200)[0]
        assert value == pytest.approx(G.pointwise_mi(x[b : b + 1], Y).item(), rel=1e-6)
    assert quad(lambda t: (1 - t) / t * float(trajectory_terms(torch.tensor([t]))[0][0]), 0, 1, limit=200)[0] == \
        pytest.approx(KL, rel=1e-6)
    for steps, rel in ((28, 0.01), (200, 2e-4)):
        t = sd35_times(steps)
        orth, official = trajectory_terms(t)
        assert float((flow.quadrature_weights(t) * orth).sum()) == pytest.approx(KL, rel=rel)
        w = flow.paper_weights(t)
        assert float((w * orth).sum() / (w != 0).sum()) / KL == pytest.approx(0.62, abs=0.02)
        assert float((w * official).sum() / (w != 0).sum()) / KL == pytest.approx(0.42, abs=0.02)


def test_renoise_pointwise_is_unbiased_for_fixed_x():
    """flow.renoise_mi (mi's estimator through the ε seam) matches log p(x|y) − log p(x) at three fixed x.

    2^15 draws give standard errors of 0.8–0.9 % (measured errors +1.3 %, +0.7 %, −1.0 %: +1.7, +0.8, −1.1 se);
    the λ-uniform grid's quadrature error (−7e-6 relative) is far below that."""
    x = torch.cat([G.cond_mean(Y)[None], G.sample_x_given_y(Y, 6, gen(2))[[2, 3]]])
    truth = G.pointwise_mi(x, Y)
    est, se = flow.renoise_mi(G.velocity_pair(Y), x, n_samples=2**15, generator=gen(0), batch_size=2**16)
    assert torch.all((est - truth).abs() <= 3 * se), (est, truth, se)
    assert torch.all((est - truth).abs() <= 0.03 * truth.abs()) and torch.all(se <= 0.012 * truth.abs())


@pytest.mark.parametrize("form", ["orthogonal", "pointwise"])
def test_renoise_averaged_over_x_gives_kl(form):
    """Averaged over 8192 x ~ p(x|y) (16 draws each) both forms estimate the KL; standard errors of the grand mean
    0.57 % (orthogonal) / 1.05 % (pointwise), measured errors +0.54 % / +1.1 %."""
    x = G.sample_x_given_y(Y, 8192, gen(3))
    est, _ = flow.renoise_mi(G.velocity_pair(Y), x, n_samples=16, generator=gen(4), form=form)
    mean, se = float(est.mean()), float(est.std()) / len(est) ** 0.5
    assert abs(mean - KL) <= 3 * se and abs(mean - KL) <= 0.035 * KL, (mean, se, KL)


def test_trajectory_mi_matches_its_closed_form_targets():
    """Guided Euler sampling at guidance 1 with the exact velocity (SD3.5's shift 3, 200 steps, 4000 chains).

    The chains visit z_t ~ p_t(z|y) up to Euler error, so the chain average estimates Σ_i w_i E[integrand(t_i)],
    computed here in closed form: quadrature (orthogonal) target 1.5683 = KL − 0.014 %, measured −0.60 %
    (0.4 se, se 1.5 %); official target 0.6438 = 0.41 KL, measured +1.4 % (0.7 se, se 2.0 %). At 28 steps the
    Euler error alone puts the quadrature chain average 5.3 % below its target, so few-step values are biased
    low. The tolerance is 3 standard errors plus 1 %."""
    x_T = torch.randn(4000, 4, generator=gen(6), dtype=torch.float64)
    for weights in ("quadrature", "paper"):
        out = flow.flow_sample_loop(G.velocity_pair(Y), FlowMatchEulerDiscreteScheduler(shift=3.0), x_T,
                                    num_inference_steps=200, guidance_scale=1.0, mi_weights=weights, keep_curve=True,
                                    progress=False)
        orth, official = trajectory_terms(out.timesteps)
        if weights == "quadrature":
            w, target_curve = flow.quadrature_weights(out.timesteps), orth
        else:
            w = flow.paper_weights(out.timesteps)
            w, target_curve = w / (w != 0).sum(), official
        assert torch.allclose(out.mi, (out.curve * w).sum(1), rtol=1e-10)  # the accumulator is the weighted curve
        target = float((w * target_curve).sum())
        mean, se = float(out.mi.mean()), float(out.mi.std()) / len(x_T) ** 0.5
        assert abs(mean - target) <= 3 * se + 0.01 * target, (weights, mean, se, target)
    assert (out.sample.mean(0) - G.cond_mean(Y)).abs().max() < 0.04  # the chains did sample p(x|y)


class _Rows:
    """Prompt vectors standing in for encoded prompts (take / paired as Conditioning has them)."""

    def __init__(self, y, other=None):
        self.y, self.other = y, other

    def take(self, index):
        return _Rows(self.y[index])

    def paired(self, other):
        return _Rows(self.y, other.y)


class _FlowGaussianDenoiser:
    """The closed-form Gaussian behind a flow adapter's interface: encode, velocity_pair, device."""

    device = torch.device("cpu")

    def __init__(self, named):
        self.named = named

    def encode(self, texts):
        return _Rows(torch.stack([self.named[t] for t in texts]))

    def velocity_pair(self, rows):
        if rows.other is None:
            return G.velocity_pair(rows.y)
        first, second = G.velocity_pair(rows.y), G.velocity_pair(rows.other)
        return lambda z, t: (first(z, t)[0], second(z, t)[0])


def test_contrast_mi_matches_the_closed_form_log_likelihood_ratio():
    """contrast = log p(x|y) − max_j log p(x|y'_j) for three x against one or two rivals (true 2.69, 8.34, 4.71
    nats); at 8192 draws the measured errors were 0.07, 0.007 and 0.014 nats (the point-wise MI itself:
    0.02–0.04); the test allows 0.2. renoise_mi_fn passes the same seed per image as renoise_mi."""
    rivals = {"near": Y + 0.5, "far": Y - 2.0}
    den = _FlowGaussianDenoiser({"true": Y, **rivals})
    x = G.sample_x_given_y(Y, 3, gen(30))
    near = [["near", "far"], ["far"], ["near"]]
    contrast, own = flow.contrast_mi(den, x, ["true"] * 3, near, seeds=[1, 2, 3], n_samples=2**13, batch_size=None)
    truth = G.pointwise_mi(x, Y) - torch.stack([max(G.pointwise_mi(x[b : b + 1], rivals[r])[0] for r in near[b])
                                                for b in range(3)])
    assert torch.allclose(contrast, truth, atol=0.2), (contrast, truth)
    assert torch.allclose(own, G.pointwise_mi(x, Y), atol=0.2)
    fn = flow.renoise_mi_fn(den, x[:1], n_samples=64, seed=1, batch_size=None)
    direct = flow.renoise_mi(G.velocity_pair(Y), x[:1], n_samples=64, generator=[gen(1)])[0]
    assert torch.allclose(fn(["true"]), direct, rtol=1e-12)


def test_determinism_and_batch_independence():
    """Same seeds give bit-identical values; per-image generators make an image's value independent of its batch."""
    x = G.sample_x_given_y(Y, 4, gen(8))
    alone = flow.renoise_mi(G.velocity_pair(Y), x[2:3], n_samples=8, generator=[gen(12)])
    batched = flow.renoise_mi(G.velocity_pair(Y), x, n_samples=8, generator=[gen(10 + b) for b in range(4)])
    assert torch.equal(alone[0], batched[0][2:3]) and torch.equal(alone[1], batched[1][2:3])
    x_T = torch.randn(4, 4, generator=gen(13), dtype=torch.float64)

    def sample(rows):
        return flow.flow_sample_loop(G.velocity_pair(Y), FlowMatchEulerDiscreteScheduler(shift=3.0), x_T[rows],
                                     num_inference_steps=28, guidance_scale=7.0, progress=False)
    four, one, again = sample([0, 1, 2, 3]), sample([1]), sample([0, 1, 2, 3])
    assert torch.equal(four.mi[1:2], one.mi) and torch.equal(four.sample[1:2], one.sample)
    assert torch.equal(four.mi, again.mi) and torch.equal(four.sample, again.sample)


def test_bad_input_gets_one_sentence():
    pair, x_T = G.velocity_pair(Y), torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="not a flow-matching scheduler"):
        flow.flow_sample_loop(pair, DDPMScheduler(), x_T, num_inference_steps=4, guidance_scale=1.0)
    for shift in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="shift must be a positive number"):
            flow.flow_sample_loop(pair, FlowMatchEulerDiscreteScheduler(shift=shift), x_T, num_inference_steps=4,
                                  guidance_scale=1.0)
    from diffusers import FlowMatchHeunDiscreteScheduler
    with pytest.raises(ValueError, match="higher-order sampler"):
        flow.flow_sample_loop(pair, FlowMatchHeunDiscreteScheduler(), x_T, num_inference_steps=4, guidance_scale=1.0)
    with pytest.raises(ValueError, match="pass mu"):
        flow.flow_sample_loop(pair, FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), x_T, num_inference_steps=4,
                              guidance_scale=1.0)
    with pytest.raises(ValueError, match="mean is empty"):
        flow.flow_sample_loop(pair, FlowMatchEulerDiscreteScheduler(), x_T, num_inference_steps=1, guidance_scale=1.0)
    with pytest.raises(ValueError, match=r"lie in \(0, 1\]"):
        flow.quadrature_weights(torch.tensor([1000.0, 500.0]))
    with pytest.raises(ValueError, match="strictly increasing"):
        flow.vp_table(torch.tensor([0.5, 0.2]))


def test_mi_curve_is_the_velocity_integrand():
    """flow.mi_curve at fixed x (the conditional mode) follows the closed-form velocity integrand (4096 draws per t,
    measured within 0.9 se at all 12 times); the trapezoid of the exact integrand on these 12 times is 2.446 against
    the point-wise MI 2.469 (−0.9 %), and of the measured curve 2.457."""
    x = G.cond_mean(Y)[None]
    t = torch.linspace(0.04, 0.96, 12, dtype=torch.float64)
    curve = flow.mi_curve(G.velocity_pair(Y), x.repeat(4096, 1), t, generator=gen(40))
    mean, se = curve.mean(0), curve.std(0) / 4096**0.5
    truth = velocity_pointwise_integrand(x[0], t)
    assert torch.all((mean - truth).abs() <= 4 * se + 1e-9), (mean, truth, se)
    exact = float((flow.quadrature_weights(t) * truth).sum())
    assert float((flow.quadrature_weights(t) * mean).sum()) == pytest.approx(exact, rel=0.03)
    assert exact == pytest.approx(G.pointwise_mi(x, Y).item(), rel=0.02)
