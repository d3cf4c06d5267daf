"""Pools, sets, adapters and evaluations record the model, judge, sampler and dtype they were made with; a resume
with any of them changed is refused in one sentence naming it, and the same model under another path is accepted."""

import json
import shutil

import pytest

from minitune.cli import main
from minitune.evaluate import evaluate_pipeline
from minitune.finetune import finetune
from minitune.io import folder_fingerprint
from minitune.models import load_pipeline
from minitune.sampling import use_sampler
from minitune.selection import build, build_pool
from minitune.testing import tiny_blip_vqa_judge, tiny_sd_pipeline

PROMPTS = ["a red car"]
SMALL = dict(guidance_scale=7.5, num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two tiny SD models of one architecture (other weights) and a pool of the first."""
    root = tmp_path_factory.mktemp("resume")
    tiny_sd_pipeline(0).save_pretrained(root / "a")
    tiny_sd_pipeline(1).save_pretrained(root / "other")
    build(load_pipeline(root / "a", device="cpu"), PROMPTS, root / "run", 2, **SMALL)
    return root


def _pool(pipe, out, **options):
    return build_pool(pipe, PROMPTS, out, 2, **SMALL, **options)


def test_the_fingerprint_is_of_the_files_not_the_path(saved, tmp_path):
    shutil.copytree(saved / "a", tmp_path / "copy")
    (tmp_path / "copy" / ".cache").mkdir()
    (tmp_path / "copy" / ".cache" / "download.json").write_text('{"when": "now"}')  # a download's own records
    assert folder_fingerprint(saved / "a") == folder_fingerprint(tmp_path / "copy") != folder_fingerprint(saved / "other")
    shutil.copytree(saved / "run", tmp_path / "run")
    before = (tmp_path / "run" / "pool" / "metadata.jsonl").read_bytes()
    build(load_pipeline(tmp_path / "copy", device="cpu"), PROMPTS, tmp_path / "run", 2, **SMALL)
    assert (tmp_path / "run" / "pool" / "metadata.jsonl").read_bytes() == before
    manifest = json.loads((tmp_path / "run" / "pool" / "manifest.json").read_text())
    assert manifest["model"] == str(tmp_path / "copy") and manifest["dtype"] == "float32"


def test_the_same_folder_spelled_relative_resumes_from_the_command_line(saved, tmp_path, monkeypatch):
    (tmp_path / "p.txt").write_text("a red car\n")
    args = ["build", "--prompts", str(tmp_path / "p.txt"), "--candidates", "2", "--steps", "2", "--device", "cpu",
            "--output-dir", str(tmp_path / "b")]
    assert main([*args, "--model", str(saved / "a")]) == 0
    monkeypatch.chdir(saved)
    assert main([*args, "--model", "./a"]) == 0


@pytest.mark.parametrize(("change", "named"), [("other model", "model_fingerprint"), ("dtype", "dtype 'float32' (now "
                                               "'bfloat16')"), ("sampler", "sampler 'DDPMScheduler' (now 'DDIMScheduler')")])
def test_a_resume_with_another_model_dtype_or_sampler_is_refused(change, named, saved, tmp_path):
    shutil.copytree(saved / "a", tmp_path / "m")
    shutil.copytree(saved / "run", tmp_path / "run")
    if change == "other model":  # another model saved at the same path
        shutil.rmtree(tmp_path / "m")
        shutil.copytree(saved / "other", tmp_path / "m")
    pipe = load_pipeline(tmp_path / "m", device="cpu", dtype="bf16" if change == "dtype" else "fp32")
    if change == "sampler":
        use_sampler(pipe, "ddim")
    with pytest.raises(ValueError, match="built with other parameters") as e:
        build(pipe, PROMPTS, tmp_path / "run", 2, **SMALL)
    assert named in str(e.value) and str(e.value).count(". ") == 0


def test_a_pool_resumed_with_another_judge_is_refused(saved, tmp_path):
    pipe = load_pipeline(saved / "a", device="cpu")
    _pool(pipe, tmp_path / "pool", judge=tiny_blip_vqa_judge(0))
    _pool(pipe, tmp_path / "pool", judge=tiny_blip_vqa_judge(0))  # the same weights: accepted
    with pytest.raises(ValueError, match="judge_fingerprint"):
        _pool(pipe, tmp_path / "pool", judge=tiny_blip_vqa_judge(1))


def test_an_adapter_continued_on_another_base_is_refused(saved, tmp_path):
    options = dict(rank=2, batch_size=1, validate_every=0, sample_prompts=0, device="cpu", progress=False)
    finetune(load_pipeline(saved / "a", device="cpu"), saved / "run" / "mi", tmp_path / "lora", steps=1, **options)
    settings = json.loads((tmp_path / "lora" / "finetune_config.json").read_text())
    assert settings["base"]["model_fingerprint"] == folder_fingerprint(saved / "a")
    with pytest.raises(ValueError, match="another set, base model or other options \\(model_fingerprint"):
        finetune(load_pipeline(saved / "other", device="cpu"), saved / "run" / "mi", tmp_path / "lora", steps=2, **options)
    shutil.copytree(saved / "a", tmp_path / "copy")
    finetune(load_pipeline(tmp_path / "copy", device="cpu"), saved / "run" / "mi", tmp_path / "lora", steps=2, **options)


def test_an_evaluation_records_model_sampler_judge_and_adapter(saved, tmp_path, capsys):
    pipe = load_pipeline(saved / "a", device="cpu")
    judge = tiny_blip_vqa_judge(0)
    res, _ = evaluate_pipeline(pipe, PROMPTS, 1, scorers={"blip-vqa": judge}, **SMALL)
    assert res.settings["model_fingerprint"] == folder_fingerprint(saved / "a")
    assert (res.settings["dtype"], res.settings["sampler"]) == ("float32", "DDPMScheduler")
    assert res.settings["judges"]["blip-vqa"]["judge"] == "blip_vqa" and res.settings["judges"]["blip-vqa"]["judge_fingerprint"]
    options = dict(rank=2, batch_size=1, validate_every=0, sample_prompts=0, device="cpu", progress=False)
    finetune(load_pipeline(saved / "a", device="cpu"), saved / "run" / "mi", tmp_path / "lora", steps=1, **options)
    assert main(["evaluate", "--model", str(saved / "a"), "--prompt", "a red car", "--lora", str(tmp_path / "lora"),
                 "--judge-model", "tiny", "--n-per-prompt", "1", "--steps", "2", "--device", "cpu",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    settings = json.loads((tmp_path / "eval" / "eval.json").read_text())["settings"]
    assert settings["lora"]["fingerprint"] == folder_fingerprint(tmp_path / "lora") and settings["sampler"] == "DDPMScheduler"
