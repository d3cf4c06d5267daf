import pytest
import torch

from minitune import mi
from minitune.denoisers import denoiser_for
from minitune.sampling import candidate_seed, sample_with_mi
from minitune.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline

from conftest import PROMPTS


@pytest.fixture(scope="module", params=["toy", "sd", "sdxl"])
def any_pipe(request, toy):
    return {"toy": lambda: toy, "sd": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline}[request.param]()


def test_candidates_have_finite_mi_and_do_not_depend_on_batching(any_pipe):
    kw = dict(num_inference_steps=3, guidance_scale=3.0, seed=1, keep_curve=True, progress=False)
    a = sample_with_mi(any_pipe, PROMPTS, 3, batch_size=6, **kw)
    b = sample_with_mi(any_pipe, PROMPTS, 3, batch_size=4, **kw)
    assert a.images.shape == (6, 3, 32, 32) and a.mi.shape == (6,) and a.curve.shape == (6, 3)
    assert torch.isfinite(a.mi).all() and (a.mi > 0).all()
    assert a.prompts == [p for p in PROMPTS for _ in range(3)]
    assert a.seeds[4] == candidate_seed(1, PROMPTS[1], 1)
    # same seeds -> the same images and MI, however the work is batched
    assert torch.allclose(a.images, b.images, atol=1e-5) and torch.allclose(a.mi, b.mi, rtol=1e-5)
    again = sample_with_mi(any_pipe, PROMPTS, 3, batch_size=6, **kw)
    assert torch.equal(a.images, again.images) and torch.equal(a.mi, again.mi)


def test_renoising_runs_on_every_family(any_pipe):
    den = denoiser_for(any_pipe)
    x = torch.randn(2, *den.latent_shape, generator=torch.Generator().manual_seed(0))
    pair = den.eps_pair(den.encode(PROMPTS))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    est, se = mi.renoise_mi(pair, x, den.scheduler, n_samples=4, generator=gens, form="orthogonal")
    assert est.shape == se.shape == (2,) and torch.isfinite(est).all() and (est > 0).all()


def test_paired_conditioning_predicts_under_two_prompts_in_one_call(any_pipe):
    den = denoiser_for(any_pipe)
    conds = den.encode(PROMPTS)
    a, b = conds.take(torch.tensor([0, 1])), conds.take(torch.tensor([1, 0]))
    z = torch.randn(2, *den.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    first, second = den.eps_pair(a.paired(b))(z, t)
    assert torch.allclose(first, den.eps_pair(a)(z, t)[0], atol=1e-5)
    assert torch.allclose(second, den.eps_pair(b)(z, t)[0], atol=1e-5)
    assert not torch.allclose(first, second, atol=1e-5)


def test_mi_tracking_is_free_and_exact_for_the_toy_pipeline(toy):
    c = sample_with_mi(toy, PROMPTS, 2, num_inference_steps=4, guidance_scale=4.0, seed=3, progress=False)
    gens = [torch.Generator().manual_seed(s) for s in c.seeds]
    plain = toy([p for p in c.prompts], num_inference_steps=4, guidance_scale=4.0, generator=gens, output_type="pt").images
    assert torch.equal(plain, c.images)


def test_bad_input(toy):
    with pytest.raises(ValueError, match="No prompts"):
        sample_with_mi(toy, [], 2)
    with pytest.raises(ValueError, match="Unsupported pipeline"):
        denoiser_for(object())
    den = denoiser_for(toy)
    with pytest.raises(ValueError, match="latents for 2 prompts"):
        den.eps_pair(den.encode(PROMPTS))(torch.zeros(3, 3, 32, 32), torch.tensor(5))
