import subprocess
import sys

import pytest
import torch

from minitune import mi
from minitune.families import denoiser_for
from minitune.sampling import SAMPLERS, candidate_seed, sample_with_mi, use_sampler
from minitune.testing import tiny_sd_pipeline, tiny_sdxl_pipeline
from minitune.toy import world

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
    with pytest.raises(ValueError, match="two red circles above a blue square"):  # the world cannot judge it
        sample_with_mi(toy, ["two red circles above a blue square"], 2)
    with pytest.raises(ValueError, match="Unsupported pipeline"):
        denoiser_for(object())
    den = denoiser_for(toy)
    with pytest.raises(ValueError, match="latents for 2 prompts"):
        den.eps_pair(den.encode(PROMPTS))(torch.zeros(3, 3, 32, 32), torch.tensor(5))


def test_the_pipeline_decides_which_prompts_it_can_be_judged_on():
    """A prompt check is the pipeline's ``check_prompt`` hook (the Shapes pipeline's is its grammar), not its class."""
    pipe, kw = tiny_sd_pipeline(), dict(num_inference_steps=2, progress=False)
    assert sample_with_mi(pipe, ["a purple circle"], 1, **kw).mi.shape == (1,)  # no hook: any prompt
    pipe.check_prompt = world.parse
    with pytest.raises(ValueError, match="purple"):
        sample_with_mi(pipe, ["a purple circle"], 1, **kw)
    assert sample_with_mi(pipe, ["", "three green triangles"], 1, **kw).mi.shape == (2,)  # "" stays the unconditional prompt


def test_the_core_does_not_import_the_shapes_world():
    """Every module outside minitune.toy imports without loading it (the Shapes world is a plug-in)."""
    code = ("import importlib, pkgutil, sys, minitune\n"
            "for m in pkgutil.iter_modules(minitune.__path__):\n"
            "    if m.name != 'toy':\n"
            "        importlib.import_module('minitune.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('minitune.toy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture
def own_scheduler(any_pipe):
    """any_pipe, with its own scheduler put back afterwards (the toy fixture is shared by the session)."""
    scheduler = any_pipe.scheduler
    yield any_pipe
    any_pipe.scheduler = scheduler


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_named_sampler_samples_every_family_with_the_same_noise_table(own_scheduler, name):
    pipe = own_scheduler
    table = pipe.scheduler.alphas_cumprod.clone()
    use_sampler(pipe, name)
    assert type(pipe.scheduler) is SAMPLERS[name][0] and torch.allclose(pipe.scheduler.alphas_cumprod, table)
    c = sample_with_mi(pipe, PROMPTS, 2, num_inference_steps=3, seed=1, progress=False)
    assert torch.isfinite(c.images).all() and torch.isfinite(c.mi).all() and len(c.timesteps) == 3
    again = sample_with_mi(pipe, PROMPTS, 2, num_inference_steps=3, seed=1, batch_size=1, progress=False)
    # seeded per candidate, also with step noise (SDE): another seed would move most pixels by O(1). A batch of
    # another size moves the last bits of its matmuls, which this random model's huge outputs carry into a few
    # pixels (up to ~7e-3 in 2 of 12,288 with the multistep solvers)
    assert torch.allclose(c.images, again.images, atol=1e-2) and torch.allclose(c.mi, again.mi, rtol=1e-5)


def test_use_sampler_keeps_or_refuses(toy):
    scheduler = toy.scheduler
    assert use_sampler(toy, None) is toy and toy.scheduler is scheduler
    with pytest.raises(ValueError, match="Unknown sampler 'euler': use one of ddpm, ddim"):
        use_sampler(toy, "euler")
    assert toy.scheduler is scheduler


def test_channels_last_keeps_the_images_and_mi():
    """use_channels_last changes the weights' memory layout only: the same candidates up to float rounding."""
    from minitune.sampling import use_channels_last
    from minitune.toy.pipeline import load_pipeline

    kw = dict(guidance_scale=2.0, num_inference_steps=4, seed=3)
    plain = sample_with_mi(load_pipeline("toy"), ["one red circle", "two blue squares"], 2, **kw)
    pipe = use_channels_last(load_pipeline("toy"))
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    fast = sample_with_mi(pipe, ["one red circle", "two blue squares"], 2, **kw)
    assert (fast.images - plain.images).abs().max() < 1e-3 and (fast.mi - plain.mi).abs().max() < 1e-2  # nats, of ~20
    with pytest.raises(ValueError, match="no UNet or transformer"):
        use_channels_last(object())
