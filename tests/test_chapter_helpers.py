"""The small helpers the chapters call: an mi_fn on common noise, pixel-map figures, free word sequences."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from minitune import mi
from minitune.families import denoiser_for
from minitune.tools.plotting import show_maps
from minitune.toy import world

PROMPT = "a red circle and a blue square"


def test_renoise_mi_fn_uses_common_noise_and_caches(toy):
    den = denoiser_for(toy)
    x0 = world.render_batch([PROMPT, "three green triangles"], [0, 1])
    mi_fn = mi.renoise_mi_fn(den, x0, n_samples=2, seed=3)
    values = mi_fn([PROMPT, "three green triangles"])
    direct = mi.renoise_mi(den.eps_pair(den.encode([PROMPT, "three green triangles"])), x0, den.scheduler, n_samples=2,
                           generator=[torch.Generator().manual_seed(3 + b) for b in range(2)])[0]
    assert torch.equal(values, direct)  # image b is re-noised with seed + b, whatever the prompts
    assert mi_fn([PROMPT, "three green triangles"]) is values  # cached per prompt list
    one = mi.renoise_mi_fn(den, x0[:1], n_samples=2, seed=3)([PROMPT, PROMPT, "a red circle"])
    assert one[0] == one[1]  # one image: the same noise under every prompt
    assert torch.allclose(one[0], values[0], rtol=1e-4)  # ... and the same as image 0 in a batch of two
    with pytest.raises(ValueError, match="one prompt per image"):
        mi_fn([PROMPT])


def test_word_attribution_runs_on_the_toy_pipeline(toy):
    """Dropping a word leaves a sequence outside the grammar: the text encoder must still take it,
    while sampling keeps checking prompts."""
    den = denoiser_for(toy)
    scores = mi.word_attribution(mi.renoise_mi_fn(den, world.render_batch([PROMPT], [0]), n_samples=2), PROMPT)
    assert [w for w, _ in scores] == PROMPT.split()
    with pytest.raises(ValueError, match="does not know"):
        den.encode(["a purple circle"])
    with pytest.raises(ValueError, match="grammar"):
        toy("red circle and a blue square", num_inference_steps=1)


def test_show_maps_lays_out_one_row_per_image():
    maps, images = torch.rand(3, 4, 8, 8), torch.zeros(3, 3, 8, 8)
    fig = show_maps(maps, images=images, row_titles=list("abc"), col_titles=["t"] * 4)
    assert len(fig.axes) == 3 * 5 and fig.axes[1].get_title() == "t"
    assert len(show_maps(maps.numpy()).axes) == 3 * 4
    with pytest.raises(ValueError, match=r"\[B, K, H, W\]"):
        show_maps(maps[0])
