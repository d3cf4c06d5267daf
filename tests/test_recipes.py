"""The paper's recipes: per-family presets, the official inputs of a run (saved latents, all images, validation at the
micro-batch, the best checkpoint) and the generated table of settings beside the official ones."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minitune import sampling, selection
from minitune.cli import _parse, main
from minitune.families import StableDiffusion, StableDiffusionXL
from minitune.families.sd3 import StableDiffusion3
from minitune.finetune import best_checkpoint, finetune, validation_prompts
from minitune.models import resolve_dtype
from minitune.recipes import category_scorer, check_family, preset_defaults
from minitune.testing import tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline
from minitune.toy.family import Shapes

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"

PROMPTS = ["a red book and a yellow vase", "a blue bench and a green car"]
SMALL = dict(rank=2, steps=2, batch_size=2, sample_prompts=0, validate_every=0, device="cpu", progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family, dtype", [(Shapes, torch.float32), (StableDiffusion, torch.float16),
                                           (StableDiffusionXL, torch.float16), (StableDiffusion3, torch.float16)])
def test_an_unparameterised_load_uses_the_family_dtype_and_scheduler(family, dtype):
    """dtype "auto" is the family's on CUDA and float32 on the CPU; no family names a sampler (the pipeline's own)."""
    assert resolve_dtype("auto", torch.device("cuda"), family=family) == dtype
    assert resolve_dtype("auto", torch.device("cpu"), family=family) == torch.float32
    assert family.sampler is None


def test_each_family_reads_its_own_preset():
    sd, xl = (preset_defaults("paper", "finetune", f.__name__) for f in (StableDiffusion, StableDiffusionXL))
    assert not sd.get("dora") and xl["dora"] and (sd["sample_steps"], xl["sample_steps"]) == (30, 50)
    for tune in (sd, xl):
        assert (tune["val_fraction"], tune["latents"], tune["dtype"], tune["checkpoint_every"]) == (0.0, "saved", "fp32", 10)
        assert tune["batch_size"] // tune["grad_accum"] == 8
    sd3 = preset_defaults("paper-sd3", "finetune")
    assert (sd3["lr"], sd3["batch_size"], sd3["warmup"], sd3["precondition"]) == (5e-6, 240, 400, True)
    assert preset_defaults("paper", "build")["keep_latents"] and preset_defaults("paper-sd3", "evaluate")["dtype"] == "fp16"
    with pytest.raises(ValueError, match="not StableDiffusion3; use --recipe paper-sd3"):
        check_family("paper", "StableDiffusion3", None)
    with pytest.raises(ValueError, match="experiment --recipe full"):
        check_family("paper", "Shapes", None)
    with pytest.raises(ValueError, match="was not known before it was loaded"):
        check_family("paper", "StableDiffusionXL", None)
    check_family("paper", "StableDiffusionXL", "StableDiffusionXL")


def test_each_category_is_judged_by_its_own_metric():
    assert [category_scorer(c) for c in ("color", "shape", "texture", "non_spatial", None)] == \
        ["blip-vqa"] * 3 + ["clipscore", "blip-vqa"]
    for category, metric in (("spatial", "UniDet"), ("complex", "3-in-1")):
        with pytest.raises(ValueError, match=f"with {metric}, which minitune does not provide"):
            category_scorer(category)


def test_a_preset_is_read_for_the_saved_models_family(tmp_path, capsys):
    tiny_sdxl_pipeline().save_pretrained(tmp_path / "sdxl")
    tiny_sd3_pipeline().save_pretrained(tmp_path / "sd3")
    args = _parse(["finetune", "--recipe", "paper", "--model", str(tmp_path / "sdxl"), "--data-dir", "d", "--output-dir", "o"])
    assert args.dora and (args.sample_steps, args.guidance_scale) == (50, 5.0)
    (tmp_path / "p.txt").write_text("a red book\n")
    assert main(["evaluate", "--recipe", "paper", "--model", str(tmp_path / "sd3"), "--prompt-file",
                 str(tmp_path / "p.txt"), "--judge-model", "tiny", "--device", "cpu"]) == 2
    assert "use --recipe paper-sd3" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sd_set(tmp_path_factory):
    """A tiny SD pipeline and a set built with its latents and prompt embeddings kept."""
    root = tmp_path_factory.mktemp("set")
    pipe = tiny_sd_pipeline()
    sets = selection.build(pipe, PROMPTS, root, n_candidates=2, num_inference_steps=2, keep_latents=True, progress=False)
    return pipe, sets["mi"]


def test_training_on_the_saved_latents_uses_every_image(sd_set, tmp_path, monkeypatch):
    """latents="saved" reads the sampler's latents and embeddings (no VAE encode); val_fraction 0 trains on all."""
    pipe, data = sd_set
    calls = []
    monkeypatch.setattr(type(pipe.vae), "encode", lambda *a, **k: calls.append(1))
    finetune(pipe, data, tmp_path / "l", latents="saved", val_fraction=0.0, **SMALL)
    config = json.loads((tmp_path / "l" / "finetune_config.json").read_text())
    assert not calls and config["config"]["latents"] == "saved" and config["data"]["images"] == 2
    assert (tmp_path / "l" / "validation.csv").read_text().splitlines() == ["step,val_loss"]  # nothing held out
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in ("metadata.jsonl", *(r["file_name"] for r in map(json.loads, (data / "metadata.jsonl").open()))):
        (plain / f).write_bytes((data / f).read_bytes())
    with pytest.raises(FileNotFoundError, match="no latents.safetensors.*--keep-latents"):
        finetune(pipe, plain, tmp_path / "l2", latents="saved", **SMALL)
    with pytest.raises(ValueError, match="precondition trains SD3's loss"):
        finetune(pipe, data, tmp_path / "l3", precondition=True, **SMALL)


def test_validation_runs_at_the_micro_batch_and_names_the_best_checkpoint(sd_set, tmp_path, monkeypatch):
    pipe, data = sd_set
    batches, sample = [], sampling.sample_with_mi

    def spy(*args, **kwargs):
        batches.append(kwargs["batch_size"])
        return sample(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_with_mi", spy)
    scores = iter([0.2, 0.5, 0.3])

    def judge(images, prompts):
        return {"score": np.full(len(images), next(scores))}

    val = validation_prompts(PROMPTS * 3, 2, seed=0)
    assert len(val) == 2 and val == validation_prompts(PROMPTS * 3, 2, seed=0)
    options = {**SMALL, "batch_size": 4, "validate_every": 1}
    finetune(pipe, data, tmp_path / "l", grad_accum=2, checkpoint_every=1, val_prompts=val, val_images=3,
             sample_steps=2, judge=judge, **options)
    assert batches == [2, 2, 2]  # 4 images a step in 2 micro-batches: validation samples 2 at a time
    best = best_checkpoint(tmp_path / "l")
    assert (best["step"], best["score"], best["base_score"]) == (1, 0.5, 0.2)
    assert best["checkpoint"].endswith("checkpoint-1") and (tmp_path / "l" / "samples" / "val-00001.png").is_file()
    assert best_checkpoint(tmp_path / "nothing") is None


def test_sd3_trains_the_official_preconditioned_loss():
    from minitune.families import denoiser_for

    pipe = tiny_sd3_pipeline()
    den = denoiser_for(pipe)
    x0, noise, t = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16), torch.tensor([0.3, 0.8], dtype=torch.float64)
    cond = den.encode(["a red book", "a blue bench"])
    args = (den.net, x0, noise, t, cond.cond, {"pooled_projections": cond.added_cond["pooled_projections"]}, torch.float32)
    v, v_target = den.train_prediction(*args)
    x, x_target = den.train_prediction(*args, precondition=True)
    tt = t.float().view(-1, 1, 1, 1)
    assert torch.equal(x_target, x0)
    assert torch.allclose(x - x_target, -tt * (v - v_target), atol=1e-5)  # the velocity error weighted by t



def test_the_recipe_table_is_generated_from_the_presets(tmp_path):
    """book/results/paper_recipe.{md,json} are what the script writes now (the head line aside)."""
    from benchmarks.checks import paper_recipe

    assert paper_recipe.main(["--results", str(tmp_path / "paper_recipe")]) == 0
    for suffix in (".md", ".json"):
        fresh, committed = ((d / f"paper_recipe{suffix}").read_text() for d in (tmp_path, RESULTS))
        if suffix == ".md":
            assert fresh.split("\n", 1)[1] == committed.split("\n", 1)[1]
            assert committed.startswith("<!-- written by `python -m benchmarks.checks.paper_recipe --results")
        else:
            assert json.loads(fresh)["rows"] == json.loads(committed)["rows"]
    rows = json.loads(committed)["rows"]
    assert all(r["difference"] for r in rows if r["minitune"] != r["official"])


@pytest.mark.parametrize("kind, preset", [("sdxl", "paper"), ("sd3", "paper-sd3")])
def test_each_preset_runs_through_the_one_finetune_path(kind, preset, tmp_path, capsys):
    """build and finetune with the family's preset on a tiny saved folder: the kept latents, DoRA for SDXL, SD3's
    preconditioned loss, the validation prompts judged and the best checkpoint named."""
    (tiny_sdxl_pipeline if kind == "sdxl" else tiny_sd3_pipeline)().save_pretrained(tmp_path / kind)
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    common = ["--recipe", preset, "--model", str(tmp_path / kind), "--device", "cpu"]
    assert main(["build", *common, "--prompts", str(tmp_path / "p.txt"), "--candidates", "2", "--steps", "4",
                 "--output-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "mi" / "latents.safetensors").is_file()
    capsys.readouterr()
    assert main(["finetune", *common, "--data-dir", str(tmp_path / "b" / "mi"), "--output-dir", str(tmp_path / "l"),
                 "--rank", "2", "--steps", "2", "--batch-size", "2", "--grad-accum", "2", "--checkpoint-every", "1",
                 "--validate-every", "1", "--sample-prompts", "0", "--val-prompt-file", str(tmp_path / "p.txt"),
                 "--val-prompts", "1", "--val-images", "1", "--judge-model", "tiny"]) == 0
    assert "best on the validation prompts" in capsys.readouterr().out
    config = json.loads((tmp_path / "l" / "finetune_config.json").read_text())["config"]
    assert (config["latents"], config["val_fraction"], config["dora"], config["precondition"]) == \
        ("saved", 0.0, kind == "sdxl", kind == "sd3")
    assert config["lr"] == (5e-6 if kind == "sd3" else 1e-4)
