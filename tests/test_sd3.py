"""The SD3 adapter, MI-tracked flow sampling and transformer LoRA on a tiny random StableDiffusion3Pipeline."""

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open
from safetensors.torch import save_file

from minitune import flow
from minitune.families import denoiser_for
from minitune.families.sd3 import StableDiffusion3 as SD3Denoiser
from minitune.finetune import WEIGHTS_NAME, FinetuneSet, finetune, load_adapter
from minitune.sampling import sample_with_mi
from minitune.sampling import sample_with_mi as sample_any
from minitune.testing import tiny_sd3_pipeline

PROMPTS = ["a red circle", "a blue square left of a green triangle"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd3_pipeline(0)


def test_adapter_encodes_both_clips_and_optional_t5(pipe):
    """Conditional and empty-prompt rows, the pooled CLIP projections (2 × 32), and T5 tokens when present."""
    den = denoiser_for(pipe)
    assert isinstance(den, SD3Denoiser) and den.latent_shape == (4, 16, 16)
    cond = den.encode(PROMPTS)
    assert cond.cond.shape == cond.uncond.shape == (2, 12 + 256, 64)  # 12 CLIP tokens + 256 (zero) T5 tokens
    assert cond.added_cond["pooled_projections"].shape == (2, 64)
    # the two empty-prompt rows: equal up to the last bits, which a row's place in the batch can move
    torch.testing.assert_close(cond.uncond[0], cond.uncond[1], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(cond.cond[0], cond.cond[1], atol=1e-3)
    assert not cond.cond[:, 12:].any()  # no T5 encoder: zeros in its place, as diffusers does
    t5 = SD3Denoiser(tiny_sd3_pipeline(0, t5=True))
    with_t5 = t5.encode(PROMPTS)
    assert with_t5.cond.shape == (2, 12 + 256, 64) and with_t5.cond[:, 12:].abs().sum() > 0
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    assert t5.velocity_pair(with_t5)(z, torch.tensor([0.5]))[0].shape == z.shape
    v_c, v_u = den.velocity_pair(cond)(z, torch.tensor([0.7, 0.3]))
    assert v_c.shape == v_u.shape == z.shape and not torch.allclose(v_c, v_u)


def test_sampling_equals_the_pipeline_and_is_deterministic(pipe):
    """With the same initial noise the MI-tracked loop gives the pipeline's own latents (MI is a free by-product);
    the same seed gives bit-identical MI and images; a candidate does not depend on its batch."""
    kw = dict(n_per_prompt=2, guidance_scale=7.0, num_inference_steps=6, seed=3, progress=False)
    a = sample_with_mi(pipe, PROMPTS, **kw)
    assert a.latents.shape == (4, 4, 16, 16) and a.images.shape == (4, 3, 32, 32) and torch.isfinite(a.mi).all()
    b = sample_with_mi(pipe, PROMPTS, **kw)
    assert torch.equal(a.mi, b.mi) and torch.equal(a.images, b.images)
    one = sample_with_mi(pipe, PROMPTS, batch_size=1, **kw)
    assert torch.allclose(one.latents, a.latents, atol=1e-5) and torch.allclose(one.mi, a.mi, rtol=1e-4)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(a.seeds[2]))
    ref = pipe(PROMPTS[1], latents=z, num_inference_steps=6, guidance_scale=7.0, output_type="latent").images
    assert torch.allclose(ref, a.latents[2:3], atol=1e-5)
    quad = sample_any(pipe, PROMPTS, mi_weights="quadrature", keep_curve=True, **kw)  # sampling.sample_with_mi delegates
    assert torch.allclose(quad.latents, a.latents) and quad.curve.shape == (4, 6)
    w = flow.quadrature_weights(quad.timesteps)
    assert torch.allclose(quad.mi, (quad.curve * w.float()).sum(1), rtol=1e-5) and (quad.mi > 0).all()


def test_renoising_and_contrast_run_through_the_velocity_seam(pipe):
    """Re-noising MI of any latent with stacked draws, reproducible per seed; contrast against a near miss."""
    den = SD3Denoiser(pipe)
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    pair = den.velocity_pair(den.encode(PROMPTS))

    def run(batch_size):
        gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
        return flow.renoise_mi(pair, x0, n_samples=8, generator=gens, form=("pointwise", "orthogonal"), batch_size=batch_size)
    first, again, stacked = run(2), run(2), run(None)
    assert torch.equal(first["pointwise"][0], again["pointwise"][0])
    assert torch.allclose(first["pointwise"][0], stacked["pointwise"][0], rtol=1e-4, atol=1e-4)
    assert (first["orthogonal"][0] > 0).all() and torch.isfinite(first["pointwise"][1]).all()
    contrast, pointwise = flow.contrast_mi(den, x0, PROMPTS, [["a red square"], ["a green circle", "a red circle"]],
                                           seeds=[5, 6], n_samples=8, batch_size=None)
    assert torch.allclose(pointwise, stacked["pointwise"][0], rtol=1e-4, atol=1e-4) and torch.isfinite(contrast).all()


LORA = dict(rank=4, alpha=4, lr=1e-2, warmup=1, max_grad_norm=1.0, validate_every=0, sample_prompts=0, device="cpu",
            progress=False)


def test_lora_trains_saves_and_loads_the_diffusers_way(tmp_path):
    """A few steps of finetune.finetune on the transformer's attention; the file loads into a fresh pipeline with
    pipe.load_lora_weights and changes its velocity; load_adapter gives the same; a UNet LoRA is refused in one
    sentence."""
    trained = tiny_sd3_pipeline(0)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    images = SD3Denoiser(trained).to_images(latents)
    data = FinetuneSet(tmp_path, images, PROMPTS, [{"file_name": f"{i}.png", "text": p} for i, p in enumerate(PROMPTS)],
                       "in memory")
    out = finetune(trained, data, tmp_path / "lora", steps=3, batch_size=1, **LORA)
    with safe_open(out / WEIGHTS_NAME, "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("transformer.") for k in keys)
    assert all(any(f".attn.{m}.lora_A" in k for k in keys) for m in ("to_q", "add_q_proj"))  # both streams
    z, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([0.6, 0.2])

    def velocity(p):
        den = SD3Denoiser(p)
        return den.velocity_pair(den.encode(PROMPTS))(z, t)[0]
    base, fresh = tiny_sd3_pipeline(0), tiny_sd3_pipeline(0)
    fresh.load_lora_weights(out)
    assert torch.allclose(velocity(base), velocity(trained), atol=1e-6)  # finetune leaves the pipeline as it found it
    assert not torch.allclose(velocity(base), velocity(fresh), atol=1e-4)
    load_adapter(base, out)
    assert torch.allclose(velocity(base), velocity(fresh), atol=1e-5)
    (tmp_path / "unet").mkdir()
    save_file({"unet.down_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 8)}, tmp_path / "unet" / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="not for an SD3 transformer"):
        load_adapter(tiny_sd3_pipeline(0), tmp_path / "unet")
    with pytest.raises(ValueError, match="already carries a LoRA"):
        finetune(fresh, data, tmp_path / "again", steps=1, **LORA)


def test_build_then_finetune_end_to_end(tmp_path):
    """selection.build on an SD3 pipeline (pool, MI top-1 set), then a LoRA trained on that imagefolder set, loaded
    into a fresh pipeline the diffusers way, which then samples other images."""
    from minitune import selection

    sd3 = tiny_sd3_pipeline(0)
    sets = selection.build(sd3, PROMPTS, tmp_path / "data", n_candidates=2, top_k=1, guidance_scale=7.0,
                           num_inference_steps=3, progress=False)
    lines = (sets["mi"] / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 2
    out = finetune(sd3, sets["mi"], tmp_path / "lora", steps=2, batch_size=1, **LORA)
    fresh = tiny_sd3_pipeline(0)
    fresh.load_lora_weights(out)
    kw = dict(n_per_prompt=1, guidance_scale=7.0, num_inference_steps=3, seed=0, progress=False)
    base = sample_with_mi(tiny_sd3_pipeline(0), PROMPTS, **kw).latents
    assert not torch.allclose(sample_with_mi(fresh, PROMPTS, **kw).latents, base)


def test_bf16_model_keeps_float32_latents_and_mi(pipe):
    """The path a GPU runs: a bf16 transformer and VAE, latents stepped and MI accumulated in float32.
    Measured against the fp32 model: quadrature MI within 1–4 %, latents within 0.06 (of a range of 4.5)."""
    kw = dict(n_per_prompt=2, guidance_scale=7.0, num_inference_steps=6, seed=3, mi_weights="quadrature", progress=False)
    ref = sample_with_mi(pipe, PROMPTS, **kw)
    low = sample_with_mi(tiny_sd3_pipeline(0).to(dtype=torch.bfloat16), PROMPTS, **kw)
    assert low.mi.dtype == low.latents.dtype == torch.float32
    assert torch.allclose(low.mi, ref.mi, rtol=0.06) and (low.latents - ref.latents).abs().max() < 0.15


def test_bad_input_gets_one_sentence(pipe):
    ddpm = tiny_sd3_pipeline(0)
    ddpm.scheduler = DDPMScheduler()
    with pytest.raises(ValueError, match="not a flow-matching scheduler"):
        SD3Denoiser(ddpm)
    den = SD3Denoiser(pipe)
    with pytest.raises(ValueError, match="latents for 2 prompts"):
        den.velocity_pair(den.encode(PROMPTS))(torch.zeros(3, 4, 16, 16), torch.tensor([0.5]))
