"""Edge cases of the MI estimators: a prompt-blind denoiser, the word/prompt diagnostics, bad input."""

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

from minitune import mi
from minitune.families.vp import cfg_sample_loop
from minitune.toy.gaussian import JointGaussian

AB = mi.alphas_cumprod_of(DDPMScheduler(num_train_timesteps=1000))
G = JointGaussian.random(seed=0)
IMAGES = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blind(z_t, t):
    """A denoiser that ignores the prompt: ε̂_c and ε̂_u are the same tensor."""
    eps = 0.3 * z_t + 0.01 * t.view(-1, *[1] * (z_t.ndim - 1))
    return eps, eps.clone()


def test_prompt_blind_denoiser_gives_exactly_zero():
    for form in ("pointwise", "orthogonal"):
        for proposal in ("importance", "uniform"):
            est, se = mi.renoise_mi(blind, IMAGES, AB, n_samples=6, generator=gen(), form=form, proposal=proposal)
            assert torch.equal(est, torch.zeros(2)) and torch.equal(se, torch.zeros(2))
        curve = mi.mi_curve(blind, IMAGES, AB, [999, 500, 10], n_noise=2, generator=gen(), form=form)
        pixels = mi.mi_pixel_map(blind, IMAGES, AB, [500, 10], generator=gen(), form=form)
        assert torch.equal(curve, torch.zeros(2, 3)) and torch.equal(pixels, torch.zeros(2, 2, 8, 8))
    for weights in ("paper", "quadrature"):
        out = cfg_sample_loop(blind, DDPMScheduler(), IMAGES, num_inference_steps=10, guidance_scale=5.0, generator=gen(),
                              mi_weights=weights, keep_curve=True, progress=False)
        assert torch.equal(out.mi, torch.zeros(2)) and torch.equal(out.curve, torch.zeros(2, 10))


def test_curve_and_pixel_map_agree_and_weight_back_to_mi():
    """Summing the pixel map over pixels gives the curve; the quadrature-weighted curve is an MI estimate."""
    y = torch.randn(2, 2, generator=gen(1), dtype=torch.float64)
    x = G.conditional(y).mean  # [2, 4]; view as [2, 1, 2, 2] "images" for the pixel map
    eps_pair = G.eps_pair(y, AB)
    def as_image(z_t, t):
        return tuple(e.view(-1, 1, 2, 2) for e in eps_pair(z_t.reshape(-1, 4), t))
    t = torch.arange(980, -1, -20)  # DDPM's 50-step schedule
    curve = mi.mi_curve(eps_pair, x, AB, t, n_noise=64, generator=gen(2))
    pixels = mi.mi_pixel_map(as_image, x.view(2, 1, 2, 2), AB, t, n_noise=64, generator=gen(2))
    assert pixels.shape == (2, len(t), 2, 2) and torch.allclose(pixels.sum((2, 3)), curve)
    exact = (mi.quadrature_weights(AB, t) * G.expected_integrand(x, y, AB[t])).sum(-1)
    assert torch.allclose(exact, G.pointwise_mi(x, y), rtol=0.06)  # 50 steps: +4.1 %, +4.3 % (discretisation)
    # 64 noise draws per step: relative std 3–4 % (measured over 40 seeds), so 12 % is ≥ 3 sd
    assert torch.allclose((mi.quadrature_weights(AB, t) * curve).sum(-1), exact, rtol=0.12)


def test_word_attribution_and_prompt_swap_test():
    def mi_fn(prompts):
        return torch.tensor([2.0 * p.count("red") + len(p.split()) for p in prompts])
    assert mi.word_attribution(mi_fn, "a red circle") == [("a", 1.0), ("red", 3.0), ("circle", 1.0)]
    assert mi.word_attribution(mi_fn, "a red circle", replacement="blue") == [("a", 0.0), ("red", 2.0), ("circle", 0.0)]
    result = mi.prompt_swap_test(mi_fn, ["red square", "red red", "blue"], ["blue square", "red blue", "red"])
    assert result["true_wins"] == pytest.approx(2 / 3)
    assert result["true_mean"] == pytest.approx((4 + 6 + 1) / 3) and result["edited_median"] == 3.0


def test_errors_say_what_was_wrong():
    with pytest.raises(ValueError, match="has no alphas_cumprod.*DDPMScheduler"):
        mi.alphas_cumprod_of(FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="has no alphas_cumprod"):
        cfg_sample_loop(blind, FlowMatchEulerDiscreteScheduler(), IMAGES, num_inference_steps=4, guidance_scale=1.0)

    def nan(z_t, t):
        return (torch.full_like(z_t, float("nan")), z_t)
    with pytest.raises(ValueError, match="denoiser returned NaN"):
        mi.renoise_mi(nan, IMAGES, AB, n_samples=4, generator=gen())
    with pytest.raises(ValueError, match="denoiser returned NaN"):
        cfg_sample_loop(nan, DDPMScheduler(), IMAGES, num_inference_steps=4, guidance_scale=2.0, progress=False)

    def one_image(z_t, t):
        return (z_t[:1], z_t[:1])
    with pytest.raises(ValueError, match="eps_pair returned shapes"):
        mi.renoise_mi(one_image, IMAGES, AB, n_samples=4, generator=gen())
    with pytest.raises(ValueError, match="eps_pair returned shapes"):
        cfg_sample_loop(one_image, DDPMScheduler(), IMAGES, num_inference_steps=4, guidance_scale=2.0, progress=False)
    with pytest.raises(ValueError, match="cannot tile conditioning for 3 images"):  # prompts bound for 3, images 2
        mi.renoise_mi(G.eps_pair(torch.zeros(3, 2), AB), torch.zeros(2, 4), AB, n_samples=4, generator=gen(), batch_size=2)

    for bad in (1, 0, 2.5):
        with pytest.raises(ValueError, match="n_samples must be an integer ≥ 2"):
            mi.renoise_mi(blind, IMAGES, AB, n_samples=bad, generator=gen())
    with pytest.raises(ValueError, match="generator is None"):
        mi.renoise_mi(blind, IMAGES, AB, generator=None)
    with pytest.raises(ValueError, match="one generator per image"):
        mi.renoise_mi(blind, IMAGES, AB, n_samples=4, generator=[gen()] * 3)
    with pytest.raises(ValueError, match="timesteps must be non-empty and lie in 0..999"):
        mi.mi_curve(blind, IMAGES, AB, [1000], generator=gen())
    with pytest.raises(ValueError, match="timesteps must be non-empty"):
        mi.paper_weights(AB, [-1, 5])
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        mi.quadrature_weights(AB, [900, 100, 500])
    with pytest.raises(ValueError, match="form must be"):
        mi.renoise_mi(blind, IMAGES, AB, n_samples=4, generator=gen(), form="both")
    with pytest.raises(ValueError, match="form must be"):
        mi.mi_curve(blind, IMAGES, AB, [500], generator=gen(), form=("pointwise", "orthogonal"))
    for bad in (torch.ones(10), -torch.ones(999), "logistic"):
        with pytest.raises(ValueError, match="proposal"):
            mi.renoise_mi(blind, IMAGES, AB, n_samples=4, generator=gen(), proposal=bad)
    with pytest.raises(ValueError, match="defensive must lie in"):
        mi.fit_proposal(blind, IMAGES, AB, generator=gen(), defensive=0)
    with pytest.raises(ValueError, match="t_min must lie in"):
        mi.fit_proposal(blind, IMAGES, AB, generator=gen(), t_min=999)
    with pytest.raises(ValueError, match="fitted to one form"):
        mi.fit_proposal(blind, IMAGES, AB, generator=gen(), form=("pointwise", "orthogonal"))
    with pytest.raises(ValueError, match="batch tensor"):
        mi.renoise_mi(blind, torch.zeros(5), AB, n_samples=4, generator=gen())
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        mi.mi_pixel_map(blind, torch.zeros(2, 4), AB, [10], generator=gen())
    with pytest.raises(ValueError, match="every step is at or below the truncation"):
        cfg_sample_loop(blind, DDPMScheduler(), IMAGES, num_inference_steps=4, guidance_scale=2.0, truncation=1000)

    with pytest.raises(ValueError, match="no words"):
        mi.word_attribution(lambda prompts: torch.zeros(len(prompts)), "  ")
    with pytest.raises(ValueError, match="one MI per prompt"):
        mi.word_attribution(lambda prompts: torch.zeros(1), "a red circle")
    with pytest.raises(ValueError, match="at least one"):
        mi.prompt_swap_test(lambda prompts: torch.zeros(len(prompts)), [], [])
    with pytest.raises(ValueError, match="equally many"):
        mi.prompt_swap_test(lambda prompts: torch.zeros(len(prompts)), ["a"], ["b", "c"])


def test_both_forms_from_one_set_of_network_evaluations():
    y = G.mean_y + torch.randn(G.mean_y.shape, generator=gen(1), dtype=torch.float64)
    x = torch.stack([G.cond_mean(y), G.cond_mean(y) + 0.5])
    calls = []

    def counted(z_t, t):
        calls.append(len(z_t))
        return G.eps_pair(y, AB)(z_t, t)

    both = mi.renoise_mi(counted, x, AB, n_samples=8, generator=gen(3), form=("pointwise", "orthogonal"))
    assert sum(calls) == 2 * 8
    for form in ("pointwise", "orthogonal"):
        est, se = mi.renoise_mi(counted, x, AB, n_samples=8, generator=gen(3), form=form)
        assert torch.equal(both[form][0], est) and torch.equal(both[form][1], se)
    assert sum(calls) == 3 * 2 * 8


def test_image_swap_test_pairs_each_edit_with_its_own_scenes_aligned_image():
    calls = []

    def score(images, prompts, seeds):
        calls.append((len(images), list(prompts), list(seeds)))
        return {"value": images[:, 0], "negated": -images[:, 0]}

    # scene 0: aligned 3, edit a 1 (aligned wins), edit b 3 (a tie); scene 1: aligned 0, a 2 (the edit wins), b -1
    images = torch.tensor([[3.0], [1.0], [3.0], [0.0], [2.0], [-1.0]])
    scenes, kinds = [0, 0, 0, 1, 1, 1], ["aligned", "a", "b"] * 2
    prompts = ["p0"] * 3 + ["p1"] * 3
    res = mi.image_swap_test(score, images, prompts, scenes, kinds, seed=10, batch_size=4)
    assert calls == [(4, ["p0", "p0", "p0", "p1"], [10, 10, 10, 11]), (2, ["p1", "p1"], [11, 11])]  # a seed per scene
    assert res["scores"]["value"].tolist() == [3, 1, 3, 0, 2, -1] and list(res["edits"]) == ["a", "b"]
    a, b = res["edits"]["a"], res["edits"]["b"]
    assert a == {"pairs": 2, "wins": {"value": 0.5, "negated": 0.5}, "median_gap": {"value": 0.0, "negated": 0.0},
                 "mean_gap": {"value": 0.0, "negated": 0.0}}
    assert b["wins"] == {"value": 0.75, "negated": 0.25}  # a tie counts half
    assert b["median_gap"] == {"value": 0.5, "negated": -0.5} and b["mean_gap"] == {"value": 0.5, "negated": -0.5}
    order = [4, 0, 5, 3, 1, 2]  # rows in any order: each edit still meets its own scene's aligned image
    again = mi.image_swap_test(score, images[order], [prompts[i] for i in order], [scenes[i] for i in order],
                               [kinds[i] for i in order], seed=10)
    assert again["edits"] == res["edits"]
    with pytest.raises(ValueError, match="scene 1 has edits but no 'aligned' image"):
        mi.image_swap_test(score, images[:5], prompts[:5], scenes[:5], ["aligned", "a", "b", "a", "b"])
    with pytest.raises(ValueError, match="one of each per image"):
        mi.image_swap_test(score, images, prompts, scenes[:5], kinds)
