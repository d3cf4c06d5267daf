"""The family seam: one function tells a pipeline's family, and an unparameterised call uses the family's defaults."""

import json

import pytest
import torch

from minitune import selection
from minitune.evaluate import evaluate_pipeline
from minitune.families import StableDiffusion, StableDiffusionXL, family_of
from minitune.families.sd3 import StableDiffusion3
from minitune.finetune import finetune
from minitune.sampling import sample_with_mi
from minitune.testing import tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline
from minitune.toy.family import Shapes

PROMPT = "a red circle and a blue square"
BUILDERS = {"sd": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline, "sd3": tiny_sd3_pipeline}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_family_of_each_pipeline(toy):
    """The Shapes pipeline brings its own family; the diffusers pipelines are told by their class; others are refused."""
    assert family_of(toy) is Shapes
    assert [family_of(build()) for build in BUILDERS.values()] == [StableDiffusion, StableDiffusionXL, StableDiffusion3]
    with pytest.raises(ValueError, match="Unsupported pipeline"):
        family_of(object())


@pytest.mark.parametrize("name, guidance, steps", [("toy", 1.5, 25), ("sd", 7.5, 50), ("sdxl", 7.5, 50), ("sd3", 7.5, 100)])
def test_an_unparameterised_call_uses_the_family_defaults(toy, tmp_path, name, guidance, steps):
    """sample_with_mi, evaluate_pipeline, selection.build and the fine-tuning validation, given no guidance or steps,
    use the family's (Shapes: its documented CFG 2; SD/SDXL: 7.5; SD3: 7.5 with 100 steps, as the official code)."""
    pipe = toy if name == "toy" else BUILDERS[name]()
    assert family_of(pipe).sampling() == (guidance, steps)
    res, cands = evaluate_pipeline(pipe, [PROMPT], 1, scorers={}, progress=False)
    assert (res.settings["guidance_scale"], res.settings["num_inference_steps"]) == (guidance, steps)
    assert len(cands.timesteps) == steps
    explicit = sample_with_mi(pipe, [PROMPT], 1, guidance_scale=guidance, num_inference_steps=steps, progress=False)
    assert torch.equal(cands.mi, explicit.mi) and torch.equal(cands.latents, explicit.latents)
    sets = selection.build(pipe, [PROMPT], tmp_path / "data", n_candidates=1, progress=False)
    manifest = json.loads((sets["pool"] / "manifest.json").read_text())
    assert (manifest["guidance_scale"], manifest["num_inference_steps"]) == (guidance, steps)
    finetune(pipe, sets["mi"], tmp_path / "lora", rank=2, steps=1, batch_size=1, validate_every=0, sample_prompts=0,
             device="cpu", progress=False)
    config = json.loads((tmp_path / "lora" / "finetune_config.json").read_text())["config"]
    assert (config["guidance_scale"], config["sample_steps"]) == (guidance, steps)
    if name == "sd3":  # the official RFMI training recipe where no option is given
        assert (config["lr"], config["warmup"], config["max_grad_norm"]) == (5e-6, 400, 5e-3)
