"""Real-model paths of the command line, on tiny randomly initialised pipelines saved with save_pretrained."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from minitune.cli import main
from minitune.models import check_weights, load_pipeline, resolve_dtype, world_of
from minitune.testing import tiny_sd_pipeline, tiny_sdxl_pipeline
from minitune.toy.pipeline import WEIGHTS_DIR

PROMPTS = "a red book and a yellow vase\na blue bench\na green car\none yellow vase\na cat on the left of a dog\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_sd_pipeline().save_pretrained(root / "sd")
    tiny_sdxl_pipeline().save_pretrained(root / "sdxl")
    (root / "prompts.txt").write_text(PROMPTS)
    return root


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_load_pipeline_takes_toy_folders_and_dtypes(folders):
    assert world_of("toy") is not None and world_of(folders / "sd") is None and world_of("owner/name") is None
    assert type(load_pipeline("toy", device="cpu")).__name__ == "ShapesPipeline"
    pipe = load_pipeline(folders / "sd", device="cpu", dtype="bf16")
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.dtype == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("cuda"), shapes=True) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="Unknown dtype"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_a_truncated_weights_file_is_one_sentence(tmp_path, capsys):
    shutil.copytree(WEIGHTS_DIR, tmp_path / "model")
    weights = tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    check_weights(tmp_path / "model")  # whole: no complaint
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert main(["mi", "--model", str(tmp_path / "model"), "--prompt", "one red circle", "--steps", "2"]) == 2
    last = _last_error(capsys)
    assert "truncated" in last and "diffusion_pytorch_model.safetensors" in last
    weights.write_bytes(data + b"\0" * 16)
    with pytest.raises(ValueError, match="longer than its header"):
        check_weights(tmp_path / "model")
    weights.write_bytes(b"\x10" + b"\0" * 7 + b"not json{}......")
    with pytest.raises(ValueError, match="header is not JSON"):
        check_weights(tmp_path / "model")


def test_bad_models_are_one_sentence(tmp_path, capsys, monkeypatch, folders):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--prompt-file", str(folders / "prompts.txt"), "--steps", "2", "--device", "cpu"]
    (tmp_path / "empty").mkdir()
    assert main(["mi", "--model", str(tmp_path / "empty"), *args]) == 2
    assert "not a diffusers pipeline" in _last_error(capsys)
    assert main(["mi", "--model", "nobody-here/no-such-model", *args]) == 2
    last = _last_error(capsys)
    assert "Could not load nobody-here/no-such-model" in last and "download the model once" in last
    assert main(["mi", "--model", "no/such/folder", *args]) == 2
    assert "not a hub id" in _last_error(capsys)
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    assert main(["mi", "--model", str(tmp_path / "ddpm"), *args]) == 2
    assert "Unsupported pipeline DDPMPipeline" in _last_error(capsys)


def test_shapes_only_commands_and_prompt_files_are_checked(capsys, folders):
    sd = str(folders / "sd")
    assert main(["toy-eval", "--model", sd, "--prompt", "a cat"]) == 2
    assert "not a Shapes pipeline" in _last_error(capsys)
    assert main(["experiment", "--model", sd, "--preset", "tiny", "--output-dir", str(folders / "x")]) == 2
    assert "not a Shapes pipeline" in _last_error(capsys)
    assert main(["mi", "--model", sd, "--steps", "2"]) == 2
    assert "--prompt-file" in _last_error(capsys)
    assert main(["build", "--model", sd, "--steps", "2", "--output-dir", str(folders / "y")]) == 2
    assert "--prompt-file" in _last_error(capsys)
    assert not (folders / "y").exists() and not (folders / "x").exists()


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_build_and_finetune_a_saved_pipeline(kind, folders, tmp_path, capsys):
    model = str(folders / kind)
    assert main(["build", "--model", model, "--prompts", str(folders / "prompts.txt"), "--candidates", "2",
                 "--top-k", "1", "--steps", "2", "--controls", "--output-dir", str(tmp_path / "b"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "b/mi | 5 |" in out and "b/random | 5 |" in out and "strict" not in out
    assert main(["finetune", "--model", model, "--data-dir", str(tmp_path / "b" / "mi"), "--output-dir", str(tmp_path / "l"),
                 "--rank", "2", "--steps", "2", "--batch-size", "2", "--validate-every", "0", "--sample-prompts", "0",
                 "--device", "cpu"]) == 0
    pipe = load_pipeline(model, device="cpu")
    pipe.load_lora_weights(str(tmp_path / "l"))  # what the user does with it
    assert getattr(pipe.unet, "peft_config", None)


def test_two_processes_build_the_same_files_as_one(folders, tmp_path):
    """`accelerate launch` shards the prompts over processes; the pool and sets are byte-identical to one process's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["build", "--model", str(folders / "sd"), "--prompts", str(folders / "prompts.txt"), "--candidates", "3",
            "--top-k", "1", "--steps", "2", "--batch-size", "3", "--controls", "--device", "cpu"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--cpu",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "minitune.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, command in (("one", [sys.executable, "-m", "minitune.cli"]), ("two", launch)):
        run = subprocess.run(command + args + ["--output-dir", str(tmp_path / name)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert len(files) > 20
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


@pytest.mark.parametrize("scorer", ["blip-vqa", "clipscore"])
def test_evaluate_a_saved_pipeline_with_a_learned_judge(scorer, folders, tmp_path, capsys):
    metric = scorer.replace("-", "_")
    assert main(["evaluate", "--model", str(folders / "sdxl"), "--prompt-file", str(folders / "prompts.txt"),
                 "--category", "color", "--scorer", scorer, "--judge-model", "tiny", "--n-per-prompt", "2", "--steps", "2",
                 "--device", "cpu", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    unit = "× 100" if scorer == "clipscore" else "%"
    assert f"{metric} {unit} per category (95 % CI over prompts); judged by {scorer}" in out
    assert "| model | color | all |" in out and "| base | " in out
    records = json.loads((tmp_path / "eval.json").read_text())["records"]
    assert len(records) == 10 and all(r["category"] == "color" and 0 <= r[metric] for r in records)


def test_build_keeps_a_judges_top_k(folders, tmp_path, capsys):
    assert main(["build", "--model", str(folders / "sd"), "--prompts", str(folders / "prompts.txt"), "--candidates", "2",
                 "--steps", "2", "--scorer", "clipscore", "--judge-model", "tiny", "--output-dir", str(tmp_path),
                 "--device", "cpu"]) == 0
    assert f"{tmp_path}/judge | 5 |" in capsys.readouterr().out
    pool = [json.loads(line) for line in (tmp_path / "pool" / "metadata.jsonl").read_text().splitlines()]
    kept = [json.loads(line) for line in (tmp_path / "judge" / "metadata.jsonl").read_text().splitlines()]
    best = {p: max(r["judge"] for r in pool if r["text"] == p) for p in {r["text"] for r in pool}}
    assert all(r["judge"] == best[r["text"]] for r in kept)
    assert json.loads((tmp_path / "pool" / "manifest.json").read_text())["judge"] == "clipscore"
    assert main(["build", "--model", str(folders / "sd"), "--prompts", str(folders / "prompts.txt"), "--steps", "2",
                 "--selector", "judge", "--output-dir", str(tmp_path / "x")]) == 2
    assert "needs a judge" in _last_error(capsys)
    assert main(["build", "--model", str(folders / "sd"), "--prompts", str(folders / "prompts.txt"), "--steps", "2",
                 "--scorer", "oracle", "--output-dir", str(tmp_path / "x")]) == 2
    assert "only the Shapes world" in _last_error(capsys)


def test_the_paper_preset_sets_defaults_that_options_override(folders, tmp_path, capsys):
    from minitune.cli import _parse

    build = _parse(["build", "--recipe", "paper", "--prompts", "p.txt", "--candidates", "3"])
    assert (build.candidates, build.top_k, build.steps, build.cfg, build.sampler) == (3, 1, 100, 7.5, "ddpm")
    tune = _parse(["finetune", "--recipe", "paper", "--data-dir", "d", "--output-dir", "o"])
    assert (tune.rank, tune.alpha, tune.lr, tune.steps, tune.batch_size, tune.grad_accum) == (32, 32.0, 1e-4, 300, 400, 50)
    plain = _parse(["finetune", "--data-dir", "d", "--output-dir", "o"])
    assert (plain.batch_size, plain.grad_accum) == (None, 1)  # the model family's batch, once the model is loaded
    model = str(folders / "sd")
    assert main(["evaluate", "--recipe", "paper", "--model", model, "--prompt-file", str(folders / "prompts.txt"),
                 "--judge-model", "tiny", "--n-per-prompt", "1", "--steps", "2", "--device", "cpu"]) == 0
    assert "judged by blip-vqa" in capsys.readouterr().out
    assert main(["build", "--recipe", "paper", "--model", model, "--prompts", str(folders / "prompts.txt"),
                 "--candidates", "2", "--steps", "2", "--output-dir", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "b" / "pool" / "manifest.json").read_text())["guidance_scale"] == 7.5
    assert main(["finetune", "--recipe", "paper", "--model", model, "--data-dir", str(tmp_path / "b" / "mi"),
                 "--output-dir", str(tmp_path / "l"), "--steps", "1", "--rank", "2", "--batch-size", "4", "--grad-accum", "2",
                 "--validate-every", "0", "--sample-prompts", "0", "--device", "cpu"]) == 0
    assert main(["finetune", "--recipe", "paper", "--model", model, "--data-dir", str(tmp_path / "b" / "mi"),
                 "--output-dir", str(tmp_path / "l2"), "--batch-size", "30", "--device", "cpu"]) == 2
    assert "multiple of 50" in _last_error(capsys)


def test_a_saved_sd3_pipeline_from_the_command_line(tmp_path, capsys):
    """Rectified flow end to end: MI ranking, a pool with re-noising MI, the transformer's LoRA, a judged evaluation."""
    from minitune.testing import tiny_sd3_pipeline

    tiny_sd3_pipeline().save_pretrained(tmp_path / "sd3")
    (tmp_path / "p.txt").write_text("a red book\na blue bench\n")
    common = ["--model", str(tmp_path / "sd3"), "--steps", "3", "--device", "cpu"]
    assert main(["mi", *common, "--prompt-file", str(tmp_path / "p.txt"), "--n-per-prompt", "2"]) == 0
    assert main(["build", *common, "--prompts", str(tmp_path / "p.txt"), "--candidates", "2", "--renoise-samples", "2",
                 "--output-dir", str(tmp_path / "b")]) == 0
    records = [json.loads(line) for line in (tmp_path / "b" / "pool" / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(np.isfinite(r["mi_renoise"]) for r in records)
    assert main(["finetune", "--model", str(tmp_path / "sd3"), "--data-dir", str(tmp_path / "b" / "mi"), "--output-dir",
                 str(tmp_path / "l"), "--rank", "2", "--steps", "2", "--batch-size", "1", "--device", "cpu"]) == 0
    assert main(["evaluate", *common, "--prompt-file", str(tmp_path / "p.txt"), "--lora", str(tmp_path / "l"),
                 "--scorer", "clipscore", "--judge-model", "tiny", "--n-per-prompt", "1"]) == 0
    assert "judged by clipscore" in capsys.readouterr().out
    # SD3 trains through the one fine-tuning loop, with everything the other families have (here: accumulation)
    assert main(["finetune", "--model", str(tmp_path / "sd3"), "--data-dir", str(tmp_path / "b" / "mi"), "--output-dir",
                 str(tmp_path / "l2"), "--rank", "2", "--steps", "1", "--grad-accum", "2", "--batch-size", "2",
                 "--device", "cpu"]) == 0


def test_the_paper_preset_counts_its_work():
    from minitune.recipes import network_evaluations

    assert network_evaluations("paper", n_train=700, n_val=300) == {
        "build_forwards": 700 * 50 * 100, "finetune_images": 300 * 400, "evaluate_forwards": 300 * 10 * 50}
    with pytest.raises(ValueError, match="Unknown preset"):
        network_evaluations("fast")


def test_channels_last_from_the_command_line(capsys):
    args = ["mi", "--prompt", "one red circle", "--n-per-prompt", "2", "--steps", "3", "--device", "cpu"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--channels-last"]) == 0
    fast = capsys.readouterr().out
    def values(text):
        return [float(line.split()[1]) for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert np.allclose(values(plain), values(fast), atol=0.05)  # printed to 0.01 nats; rounding differs by ~0.005
