"""The MI estimators against a jointly Gaussian world whose answers are known in closed form.

Set-up: x ∈ R^4, y ∈ R^2 (JointGaussian.random(seed=0), KL(p(x|y) ‖ p(x)) = 1.569 nats for the fixed
y below), DDPM's linear β schedule with T = 1000, exact ε-denoisers. Every error left is Monte Carlo,
discretisation (a sum over timesteps instead of the integral over log SNR) or sampler error; each
test says which and how large it was measured to be.
"""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from scipy.integrate import quad

from minitune import mi
from minitune.families.vp import cfg_sample_loop
from minitune.toy.gaussian import JointGaussian

G = JointGaussian.random(d=4, k=2, seed=0)
Y = G.mean_y + torch.randn(2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
AB = mi.alphas_cumprod_of(DDPMScheduler(num_train_timesteps=1000))
GRID = torch.arange(1, 1000)  # renoise_mi's default grid, t_min = 1


def gen(seed):
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_closed_form_integrands_integrate_to_pointwise_mi_and_kl():
    """½∫ E_ε[integrand] dλ over the real line is the point-wise MI / the KL (the identities of §3);
    the trapezoidal sum on t = 1..999 misses only 0.04–0.2 % of it (mostly the high-SNR tail)."""
    x = G.sample_x_given_y(Y, 3, gen(2))
    def level(lam):
        return torch.tensor([1 / (1 + np.exp(-lam))], dtype=torch.float64)  # ᾱ at log SNR λ
    def integral(f):
        return quad(lambda lam: 0.5 * float(f(level(lam))), -40, 40, limit=200)[0]
    for b in range(3):
        pointwise = integral(lambda ab: G.expected_integrand(x[b : b + 1], Y, ab)[0, 0])
        assert pointwise == pytest.approx(G.pointwise_mi(x[b : b + 1], Y).item(), rel=1e-7)
    assert integral(lambda ab: G.kl_integrand(Y, ab)[0]) == pytest.approx(G.kl(Y).item(), rel=1e-7)
    w = mi.quadrature_weights(AB, GRID)
    discrete = (w * G.expected_integrand(x, Y, AB[GRID])).sum(-1)
    assert torch.allclose(discrete, G.pointwise_mi(x, Y), rtol=3e-3)
    assert float((w * G.kl_integrand(Y, AB[GRID])).sum()) == pytest.approx(G.kl(Y).item(), rel=2e-3)


def test_renoise_pointwise_is_unbiased_for_fixed_x():
    """The unbiased re-noising estimate matches log p(x|y) − log p(x) at three fixed x.

    x: the conditional mode and two draws from p(x|y) (MI 2.47, 2.29, 2.34 nats). In 4 dimensions
    the ε noise is large (one draw has a relative std of 1.3–1.6 here), so 2% needs many draws:
    n = 131072 gives standard errors of 0.37–0.44 % (measured errors −0.55 %, −0.17 %, −0.27 %, i.e.
    −1.5, −0.4, −0.6 se). We compare with the continuous truth: the discretisation error of the
    t-grid (the trapezoidal target is 0.15–0.16 % below it) is under half a standard error.
    """
    x = torch.cat([G.cond_mean(Y)[None], G.sample_x_given_y(Y, 6, gen(2))[[2, 3]]])
    truth = G.pointwise_mi(x, Y)
    est, se = mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=2**17, generator=gen(0), batch_size=2**16)
    assert torch.all((est - truth).abs() <= 3 * se), (est, truth, se)
    assert torch.all((est - truth).abs() <= 0.02 * truth.abs()), (est, truth)
    assert torch.all(se <= 0.006 * truth.abs())  # the sample size is what makes the 2 % meaningful


@pytest.mark.parametrize("form", ["orthogonal", "pointwise"])
def test_renoise_averaged_over_x_gives_kl(form):
    """Averaged over x ~ p(x|y), both forms estimate KL(p(x|y) ‖ p(x)) = 1.569 nats.

    16384 draws of x, 16 network evaluations each; the standard error of the grand mean (spread of
    the per-x estimates, so it includes the x and the ε noise) is 0.40 % (orthogonal) / 0.73 %
    (pointwise); measured errors −0.11 % / +0.40 %. The t-grid's discretisation error (−0.10 % for
    the KL) is small against that."""
    x = G.sample_x_given_y(Y, 16384, gen(3))
    est, _ = mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=16, generator=gen(4), form=form)
    mean, se, kl = est.mean(), est.std() / len(est) ** 0.5, G.kl(Y)
    assert abs(mean - kl) <= 3 * se and abs(mean - kl) <= 0.02 * kl, (mean, se, kl)


def test_importance_proposal_beats_uniform_in_t():
    """At 64 evaluations the logistic-in-λ proposal has a lower spread than uniform-in-t (measured
    relative std 16 % vs 23 % at the conditional mode, pointwise; 200 replicates)."""
    x = G.cond_mean(Y)[None].repeat(200, 1)
    spread = {p: mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=64, generator=gen(5), proposal=p)[0].std()
              for p in ("importance", "uniform")}
    assert spread["importance"] < 0.9 * spread["uniform"], spread


def test_trajectory_mi_matches_kl():
    """CFG sampling at guidance 1 with exact denoisers draws x ~ p(x|y); the trajectory MI averaged
    over 6000 chains (DDPM, 1000 steps) estimates Σ_t w_t E‖ε̂_c − ε̂_u‖², computed here exactly.

    Measured errors, stated honestly:
    * weights: the quadrature sum over the 1000 visited steps is 0.04 % below the KL; the paper
      weights (t > 50, mean over kept steps) are 8.9 % below it for this Gaussian — they drop the
      high-SNR band λ > 3.5 where its low-variance directions (conditional variances 0.07–0.3) still carry information,
      and rescale by T/(T−50);
    * sampler: DDPM's "fixed_small" ancestral step is slightly under-dispersed at low noise, which
      put the chain average 0.6–1.9 % below the exact target in three runs of 20000 chains;
      the tolerance is 3 standard errors (≈ 2.7 % at 6000 chains) plus 1.5 % for that bias.
      This run: quadrature 1.5696 vs target 1.5679 (+0.11 %), paper 1.4327 vs 1.4286 (+0.29 %),
      standard error 0.9 %.
    """
    x_T = torch.randn(6000, 4, generator=gen(6), dtype=torch.float64)
    kl = float(G.kl(Y))
    for weights, mode in (("quadrature", "sum"), ("paper", "mean")):
        scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
        out = cfg_sample_loop(G.eps_pair(Y, AB), scheduler, x_T, num_inference_steps=1000, guidance_scale=1.0,
                              generator=gen(7), mi_weights=weights, keep_curve=True, progress=False)
        w = mi.quadrature_weights(AB, out.timesteps) if weights == "quadrature" else mi.paper_weights(AB, out.timesteps)
        w = w / (w != 0).sum() if mode == "mean" else w
        assert torch.allclose(out.mi, (out.curve * w).sum(1), rtol=1e-10)  # the accumulator is the weighted curve
        target = float((w * G.kl_integrand(Y, AB[out.timesteps])).sum())
        mean, se = float(out.mi.mean()), float(out.mi.std()) / 6000**0.5
        assert abs(mean - target) <= 3 * se + 0.015 * target, (weights, mean, se, target)
        assert target == pytest.approx(kl, rel=1e-3 if weights == "quadrature" else 0.12)
    assert (out.sample.mean(0) - G.cond_mean(Y)).abs().max() < 0.03  # the chains did sample p(x|y)


def test_determinism_and_batch_independence():
    """Same seeds give bit-identical values; per-image generators make an image's result independent
    of its batch (the Gaussian denoiser applies its matrices row by row, so no BLAS kernel changes
    with the batch size and we can ask for bit identity)."""
    x = G.sample_x_given_y(Y, 4, gen(8))
    def run(**kw):
        return mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=8, generator=gen(9), **kw)
    assert all(torch.equal(a, b) for a, b in zip(run(), run()))
    assert all(torch.equal(a, b) for a, b in zip(run(), run(batch_size=4)))  # one draw per call
    alone = mi.renoise_mi(G.eps_pair(Y, AB), x[2:3], AB, n_samples=8, generator=[gen(12)])
    batched = mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=8, generator=[gen(10 + b) for b in range(4)])
    assert torch.equal(alone[0], batched[0][2:3]) and torch.equal(alone[1], batched[1][2:3])

    x_T = torch.randn(4, 4, generator=gen(13), dtype=torch.float64)
    def sample(rows):
        return cfg_sample_loop(G.eps_pair(Y, AB), DDPMScheduler(clip_sample=False), x_T[rows],
                               num_inference_steps=50, guidance_scale=3.0,
                               generator=[gen(20 + b) for b in rows], progress=False)
    four, one = sample([0, 1, 2, 3]), sample([1])
    assert torch.equal(four.mi[1:2], one.mi) and torch.equal(four.sample[1:2], one.sample)
    again = sample([0, 1, 2, 3])
    assert torch.equal(four.mi, again.mi) and torch.equal(four.sample, again.sample)


class _Rows:
    """Prompt vectors standing in for encoded prompts (what a denoisers adapter's Conditioning does)."""

    def __init__(self, y):
        self.y = y

    def take(self, index):
        return _Rows(self.y[index])

    def paired(self, other):
        """Prompt vectors on both sides of the ε-pair, as Conditioning.paired gives a UNet."""
        rows = _Rows(self.y)
        rows.other = other.y
        return rows


class _GaussianDenoiser:
    """The closed-form Gaussian behind the adapter interface contrast_mi uses: named prompt vectors."""

    device, scheduler = torch.device("cpu"), AB

    def __init__(self, named):
        self.named = named

    def encode(self, texts):
        return _Rows(torch.stack([self.named[t] for t in texts]))

    def eps_pair(self, rows):
        if not hasattr(rows, "other"):
            return G.eps_pair(rows.y, AB)
        first, second = G.eps_pair(rows.y, AB), G.eps_pair(rows.other, AB)
        return lambda z, t: (first(z, t)[0], second(z, t)[0])


def test_contrast_mi_matches_the_closed_form_log_likelihood_ratio():
    """contrast = log p(x|y) − max_j log p(x|y'_j), the difference of closed-form point-wise MIs.

    Three x ~ p(x|y) against one or two rival prompts (true contrasts 2.69, 8.34, −1.48 nats). At
    16384 draws the measured errors were 0.04, 0.08 and 0.04 nats (the point-wise MI itself: 0.05,
    0.03, 0.08); the test allows 0.15. The value is also exactly the point-wise estimate minus the
    largest rival estimate made with the same seeds."""
    rivals = {"near": Y + 0.5, "far": Y - 2.0}
    den = _GaussianDenoiser({"true": Y, **rivals})
    x = G.sample_x_given_y(Y, 3, gen(30))
    near = [["near", "far"], ["far"], ["near"]]
    contrast, own = mi.contrast_mi(den, x, ["true"] * 3, near, seeds=[1, 2, 3], n_samples=2**14, batch_size=None)
    truth = G.pointwise_mi(x, Y) - torch.stack([max(G.pointwise_mi(x[b : b + 1], rivals[r])[0] for r in near[b])
                                                for b in range(3)])
    assert torch.allclose(contrast, truth, atol=0.15), (contrast, truth)
    def rival(b, r):
        return mi.renoise_mi(G.eps_pair(rivals[r], AB), x[b : b + 1], AB, n_samples=2**14,
                             generator=[gen(b + 1)])[0][0]
    for b in range(3):
        assert torch.allclose(contrast[b], own[b] - max(rival(b, r) for r in near[b]), rtol=1e-12)
    again, _ = mi.contrast_mi(den, x[1:], ["true"] * 2, near[1:], seeds=[2, 3], n_samples=2**14, batch_size=None)
    assert torch.equal(again, contrast[1:])  # an image's value does not depend on the rest of the batch
    with pytest.raises(ValueError, match="no near-miss prompts"):
        mi.contrast_mi(den, x[:1], ["true"], [[]], seeds=[0])
    with pytest.raises(ValueError, match="one of each per image"):
        mi.contrast_mi(den, x, ["true"], near, seeds=[0, 1, 2])


def test_conditional_and_unconditional_forms_rank_images_by_log_density():
    """The two halves of the point-wise form estimate log p(x|y) and log p(x) up to one constant:
    re-noised with common random numbers (one seed for every image), differences between images
    match the closed-form log-density differences (0.6–1.8 nats here).

    At 2^15 draws each image's standard error is ~0.12 nats, but the differences, with the constant
    and most of the noise shared, scatter by only 0.02–0.03 (measured over 20 seeds at 2^13 draws:
    0.035–0.058, bias under 0.015). The point-wise form is their difference, draw by draw.
    """
    x = G.sample_x_given_y(Y, 4, gen(3))
    out = mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=2**15, generator=[gen(7) for _ in x], form=mi.FORMS)
    (cond, se), (uncond, _) = out["conditional"], out["unconditional"]
    assert torch.allclose(out["pointwise"][0], cond - uncond, atol=1e-10)
    for est, truth in ((cond, G.conditional(Y).log_prob(x)), (uncond, G.marginal().log_prob(x))):
        err = (est - est[0]) - (truth - truth[0])
        assert err.abs().max() <= 0.12, (est - est[0], truth - truth[0])
    assert se.min() >= 0.1  # alone, each value is far noisier than the differences


def test_fitted_proposal_follows_the_integrand_and_keeps_the_estimate_unbiased():
    """fit_proposal puts the draws where this denoiser's integrand is. A denoiser whose prompt only
    matters at high SNR (t < 100), where the default logistic proposal rarely looks, has a
    deterministic orthogonal integrand: with the fitted proposal the spread at 64 evaluations falls
    to a small fraction of the default's (measured 1.3 % against 8.6 %), and both stay unbiased
    against the exact sum over the grid. On the Gaussian the fitted proposal is no worse than the
    default (measured 14.4 % against 16.2 % at the conditional mode, pointwise, 400 replicates)."""
    def late(z_t, t):  # ε̂_c − ε̂_u = 1 per element for t < 100, 0.01 above
        gap = torch.where(t < 100, 1.0, 0.01).to(z_t).view(-1, *[1] * (z_t.ndim - 1))
        return z_t * 0 + gap, z_t * 0

    x = torch.zeros(400, 4, dtype=torch.float64)
    exact = float((mi.quadrature_weights(AB, GRID) * 4 * torch.where(GRID < 100, 1.0, 1e-4)).sum())
    fitted = mi.fit_proposal(late, x[:4], AB, generator=gen(1))
    assert fitted.shape == GRID.shape and fitted.sum().item() == pytest.approx(1.0)
    spread = {}
    for name, proposal in (("importance", "importance"), ("fitted", fitted)):
        est, se = mi.renoise_mi(late, x, AB, n_samples=64, generator=gen(2), form="orthogonal", proposal=proposal)
        assert abs(est.mean().item() - exact) <= 3 * est.std().item() / len(est) ** 0.5 + 1e-9, (name, est.mean(), exact)
        spread[name] = est.std().item() / exact
    assert spread["fitted"] < 0.25 * spread["importance"], spread

    pilot = G.sample_x_given_y(Y, 16, gen(3))
    fitted = mi.fit_proposal(G.eps_pair(Y, AB), pilot, AB, generator=gen(4), form="pointwise")
    x = G.cond_mean(Y)[None].repeat(400, 1)
    spread = {name: mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=64, generator=gen(5), proposal=p)[0].std()
              for name, p in (("importance", "importance"), ("fitted", fitted))}
    assert spread["fitted"] < 1.05 * spread["importance"], spread
    den = _GaussianDenoiser({"true": Y})  # the helpers pass the proposal on
    direct = mi.renoise_mi(G.eps_pair(Y, AB), pilot[:2], AB, n_samples=8, generator=[gen(6), gen(7)], proposal=fitted)[0]
    via_fn = mi.renoise_mi_fn(den, pilot[:2], n_samples=8, seed=6, proposal=fitted, batch_size=None)(["true", "true"])
    _, via_contrast = mi.contrast_mi(den, pilot[:2], ["true"] * 2, [["true"]] * 2, seeds=[6, 7], n_samples=8,
                                     proposal=fitted, batch_size=None)
    assert torch.allclose(via_fn, direct, rtol=1e-12) and torch.allclose(via_contrast, direct, rtol=1e-12)


def test_antithetic_pointwise_is_unbiased_and_less_noisy_where_the_noise_is_odd():
    """renoise_mi(..., antithetic=True) averages f(ε) and f(−ε) at one t: still unbiased for each x,
    with the part of the integrand that is odd in ε cancelled.

    Unbiased: at the three fixed x of test_renoise_pointwise_is_unbiased_for_fixed_x and at the
    conditional mode under a rare prompt (y 8 standard deviations out, point-wise MI 12.25 nats),
    2^17 evaluations match the exact log p(x|y) − log p(x) within 3 reported standard errors
    (0.1–0.5 % of the MI here; measured z −2.1 to +1.2) and within 2 %.
    Less noisy: the Gaussian's denoisers are affine, so the even part of the noise is a quadratic
    form in ε that does not depend on x, and the odd part grows with how unlikely x is without the
    prompt. Under the rare prompt the odd part dominates, as it does for the trained network at low
    noise, and at 64 evaluations the spread over 400 replicates falls from 9.2 % to 4.3 % of the
    MI (measured); the test asks for at most 0.7 of the old spread (the spreads themselves carry
    ~3.5 % sampling error each). Under the default prompt the even part dominates and antithetic
    pairs are noisier (benchmarks/perf/renoise_variance.py prints both).
    """
    rare = G.mean_y + 8 * (Y - G.mean_y)
    x = torch.cat([G.cond_mean(Y)[None], G.sample_x_given_y(Y, 6, gen(2))[[2, 3]]])
    for y, xs in ((Y, x), (rare, G.cond_mean(rare)[None])):
        truth = G.pointwise_mi(xs, y)
        est, se = mi.renoise_mi(G.eps_pair(y, AB), xs, AB, n_samples=2**17, generator=gen(0), batch_size=2**16,
                                antithetic=True)
        assert torch.all((est - truth).abs() <= 3 * se), (est, truth, se)
        assert torch.all((est - truth).abs() <= 0.02 * truth.abs()), (est, truth)
        assert torch.all(se <= 0.007 * truth.abs())  # the sample size is what makes the 2 % meaningful

    x = G.cond_mean(rare)[None].repeat(400, 1)
    spread = {anti: mi.renoise_mi(G.eps_pair(rare, AB), x, AB, n_samples=64, generator=gen(5), antithetic=anti)[0].std()
              for anti in (False, True)}
    assert spread[True] < 0.7 * spread[False], spread


def test_antithetic_pairs_share_t_and_flip_the_noise():
    """Draw 2i + 1 re-noises at draw 2i's t with −ε (seen through a predictor that records its inputs), the
    values do not depend on batch_size, and the fitted proposal for pairs is a distribution over the grid."""
    seen = []
    def record(z_t, t):
        seen.append((z_t.clone(), t.clone()))
        return G.eps_pair(Y, AB)(z_t, t)

    x = G.sample_x_given_y(Y, 3, gen(8))
    one = mi.renoise_mi(record, x, AB, n_samples=8, generator=gen(9), antithetic=True)
    z, t = (torch.cat(v).view(8, 3, *v[0].shape[1:]) for v in zip(*seen))
    signal = AB[t[0::2]].sqrt()[..., None] * x
    assert torch.equal(t[0::2], t[1::2])
    assert torch.allclose(z[0::2] - signal, -(z[1::2] - signal), atol=1e-12)
    for batch_size in (3, 6, 9):  # one draw per call (raised to a whole pair), one pair, three draws (two)
        again = mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=8, generator=gen(9), antithetic=True, batch_size=batch_size)
        assert all(torch.equal(a, b) for a, b in zip(one, again)), batch_size
    fitted = mi.fit_proposal(G.eps_pair(Y, AB), x, AB, n_samples=16, generator=gen(1), form="pointwise", antithetic=True)
    assert fitted.shape == GRID.shape and bool((fitted > 0).all()) and fitted.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="even integer ≥ 4"):
        mi.renoise_mi(G.eps_pair(Y, AB), x, AB, n_samples=6 + 1, generator=gen(0), antithetic=True)


def test_image_swap_test_measures_the_pointwise_mi_gap_on_common_noise():
    """Each scene: an x ~ p(x|y), an exact copy of it and an x drawn for another prompt (y − 2), all scored under y.

    The copy scores exactly like its aligned image (one seed per scene: the same t and ε), so it ties and
    counts half; the other prompt's image loses by the closed-form gap of point-wise MIs (10.7, 18.1, 29.9
    nats). At 2048 draws the measured gaps were within 0.7 nats of the truth per scene and their mean
    within 0.25 (seeds 0–2 at 1024 and 4096 draws); the test allows 1.0 and 0.5."""
    x, far = G.sample_x_given_y(Y, 3, gen(40)), G.sample_x_given_y(Y - 2.0, 3, gen(41))
    images = torch.cat([torch.stack([x[s], x[s], far[s]]) for s in range(3)])
    scenes, kinds = [s for s in range(3) for _ in range(3)], ["aligned", "copy", "other prompt's image"] * 3
    score = mi.renoise_score_fn(_GaussianDenoiser({"true": Y}), n_samples=2048, forms={"MI": "pointwise"})
    res = mi.image_swap_test(score, images, ["true"] * 9, scenes, kinds, seed=5, batch_size=4)
    copy, other = res["edits"]["copy"], res["edits"]["other prompt's image"]
    assert copy == {"pairs": 3, "wins": {"MI": 0.5}, "median_gap": {"MI": 0.0}, "mean_gap": {"MI": 0.0}}
    truth = G.pointwise_mi(x, Y) - G.pointwise_mi(far, Y)
    est = res["scores"]["MI"].reshape(3, 3)
    assert np.abs(est[:, 0] - est[:, 2] - truth.numpy()).max() <= 1.0, (est, truth)
    assert other["wins"] == {"MI": 1.0} and abs(other["mean_gap"]["MI"] - float(truth.mean())) <= 0.5
    assert other["median_gap"]["MI"] == pytest.approx(float(np.median(est[:, 0] - est[:, 2])))
    alone = mi.renoise_mi(G.eps_pair(Y, AB), far[1:2], AB, n_samples=2048, generator=[gen(5 + 1)])[0]  # scene 1's seed
    assert float(alone) == pytest.approx(float(est[1, 2]), rel=1e-12)


def test_banded_mi_splits_the_trajectory_mi_into_bands_of_noise_levels():
    """Bands that tile the kept steps add up to the trajectory MI the sampler accumulated; mean_over="band"
    is the paper's mean over a band's own kept steps; with quadrature weights the bands are sums."""
    x_T = torch.randn(8, 4, generator=gen(50), dtype=torch.float64)
    tiles = [(0, 250), (250, 500), (500, 750), (750, 1000)]
    for weights, mean_over in (("paper", "trajectory"), ("quadrature", None)):
        out = cfg_sample_loop(G.eps_pair(Y, AB), DDPMScheduler(clip_sample=False), x_T, num_inference_steps=40,
                              guidance_scale=2.0, generator=gen(51), mi_weights=weights, keep_curve=True, progress=False)
        w = mi.paper_weights(AB, out.timesteps) if weights == "paper" else mi.quadrature_weights(AB, out.timesteps)
        parts = mi.banded_mi(out.curve, w, out.timesteps, tiles, mean_over=mean_over)
        assert list(parts) == tiles and torch.allclose(sum(parts.values()), out.mi, rtol=1e-10)
        assert all(bool((p > 0).all()) for p in parts.values())
    band = mi.banded_mi(out.curve, mi.paper_weights(AB, out.timesteps), out.timesteps, [(0, 250), (51, 1000), (1000, 2000)],
                        mean_over="band")
    t, kappa = out.timesteps, mi.paper_weights(AB, out.timesteps)
    low = (t > 50) & (t < 250)  # the kept steps of [0, 250): t ≤ 50 has weight 0
    assert torch.allclose(band[0, 250], (out.curve[:, low] * kappa[low]).sum(1) / low.sum(), rtol=1e-12)
    paper = cfg_sample_loop(G.eps_pair(Y, AB), DDPMScheduler(clip_sample=False), x_T, num_inference_steps=40,
                            guidance_scale=2.0, generator=gen(51), progress=False).mi
    assert torch.allclose(band[51, 1000], paper, rtol=1e-10)  # every kept step: the paper's MI itself
    assert torch.equal(band[1000, 2000], torch.zeros(8, dtype=torch.float64))  # no steps: zero, not nan
    with pytest.raises(ValueError, match="mean_over"):
        mi.banded_mi(out.curve, kappa, t, tiles, mean_over="median")
    with pytest.raises(ValueError, match="one weight and one timestep per step"):
        mi.banded_mi(out.curve[:, 1:], kappa, t, tiles)
