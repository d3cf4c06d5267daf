import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from PIL import Image

from minitune.cli import main
from minitune.finetune import (ADAPTER, WEIGHTS_NAME, FinetuneConfig, finetune, load_finetune_set, lora_config,
                               save_adapter)
from minitune.testing import tiny_sd_pipeline, tiny_sdxl_pipeline
from minitune.toy import world
from minitune.toy.pipeline import ShapesPipeline, build_components

FAST = dict(rank=4, alpha=4, batch_size=8, lr=1e-2, validate_every=0, sample_prompts=0)


def write_set(folder, n=8, seed=0):
    """An imagefolder fine-tuning set of n rendered Shapes scenes."""
    folder.mkdir(parents=True)
    prompts = world.sample_prompts("train", n, seed=seed)
    images = world.to_uint8(world.render_batch(prompts, range(n)))
    with (folder / "metadata.jsonl").open("w") as f:
        for i, (p, a) in enumerate(zip(prompts, images)):
            Image.fromarray(a).save(folder / f"{i:03d}.png")
            f.write(json.dumps({"file_name": f"{i:03d}.png", "text": p, "mi": float(i), "seed": i, "rank": 0}) + "\n")
    return folder


def tiny_toy(channels=(16, 16, 16)):
    pipe = ShapesPipeline(**build_components(seed=0, width=32, channels=channels))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(pipe, prompt="one red circle", **kw):
    gen = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=3, generator=gen, output_type="np", **kw).images


def saved_lora(out):
    return torch.load(out / "state.pt", weights_only=False)["lora"]


def one_sentence(e):
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") == 0, msg
    return msg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("ft") / "set")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "lora"
    pipe = tiny_toy()
    before = images(pipe)
    finetune(pipe, data, out, FinetuneConfig(**{**FAST, "sample_prompts": 1}), steps=20, checkpoint_every=10,
             val_fraction=0.25, sample_steps=2, progress=False)
    return pipe, before, out


def test_loss_goes_down_and_run_is_logged(trained):
    _, _, out = trained
    loss = np.genfromtxt(out / "loss.csv", delimiter=",", names=True)
    assert list(loss["step"]) == list(range(1, 21)) and loss["loss"][-6:].mean() < loss["loss"][:6].mean()
    val = np.genfromtxt(out / "validation.csv", delimiter=",", names=True)  # held-out loss, fixed draws
    assert list(val["step"]) == [0, 20] and val["val_loss"][1] < val["val_loss"][0] - 0.01
    for f in ("checkpoint-10", "checkpoint-20", "samples/step-00000.png", "samples/step-00020.png",
              "finetune_config.json"):
        assert (out / f).exists(), f
    assert json.loads((out / "finetune_config.json").read_text())["config"]["rank"] == 4


def test_saved_adapter_loads_into_a_fresh_pipeline(trained):
    pipe, before, out = trained
    assert not hasattr(pipe.unet, "peft_config") and np.array_equal(images(pipe), before)  # left as found
    lora = saved_lora(out)
    assert all(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k)
    fresh = tiny_toy()
    fresh.load_lora_weights(out)
    name = next(iter(fresh.unet.peft_config))
    loaded = get_peft_model_state_dict(fresh.unet, adapter_name=name)
    assert loaded.keys() == lora.keys() and all(torch.equal(loaded[k], lora[k]) for k in lora)
    after = images(fresh)
    assert np.abs(after.astype(int) - before).max() > 0
    manual = tiny_toy()  # the trained weights applied with peft directly, bypassing the diffusers format
    manual.unet.add_adapter(lora_config(FinetuneConfig(**FAST)), adapter_name=ADAPTER)
    set_peft_model_state_dict(manual.unet, lora, adapter_name=ADAPTER)
    assert np.array_equal(images(manual), after)
    fresh.fuse_lora()
    assert np.abs(images(fresh).astype(int) - after).max() <= 1
    fresh.unfuse_lora()
    fresh.unload_lora_weights()
    assert np.abs(images(fresh).astype(int) - before).max() <= 1


def test_resume_continues_exactly(data, tmp_path):
    cfg = FinetuneConfig(**FAST, steps=4, checkpoint_every=2)
    finetune(tiny_toy(), data, tmp_path / "a", cfg, progress=False)
    finetune(tiny_toy(), data, tmp_path / "b", cfg, until=3, progress=False)
    assert not (tmp_path / "b" / WEIGHTS_NAME).exists()
    finetune(tiny_toy(), data, tmp_path / "b", cfg, progress=False)
    a, b = saved_lora(tmp_path / "a"), saved_lora(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "loss.csv").read_text() == (tmp_path / "b" / "loss.csv").read_text()


def test_init_adapter_continues_a_previous_round(trained, data, tmp_path):
    _, _, prev = trained
    out = finetune(tiny_toy(), data, tmp_path / "round2", FinetuneConfig(**FAST), lr=1e-12, steps=1,
                   init_adapter=prev, progress=False)
    a, b = saved_lora(prev), saved_lora(out)
    assert all(torch.allclose(a[k], b[k], atol=1e-8) for k in a)
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), data, tmp_path / "r3", FinetuneConfig(**FAST), rank=8, init_adapter=prev, progress=False)
    assert "rank 4" in one_sentence(e)
    with pytest.raises(FileNotFoundError) as e:
        finetune(tiny_toy(), data, tmp_path / "r4", FinetuneConfig(**FAST), init_adapter=tmp_path, progress=False)
    assert "No LoRA adapter" in one_sentence(e)


def test_adapter_from_another_model_is_refused(data, tmp_path):
    other = tiny_toy(channels=(16, 32, 32))
    other.unet.add_adapter(lora_config(FinetuneConfig(**FAST)), adapter_name=ADAPTER)
    save_adapter(other, tmp_path / "other")
    pipe = tiny_toy()
    with pytest.raises(ValueError) as e:
        finetune(pipe, data, tmp_path / "out", FinetuneConfig(**FAST), init_adapter=tmp_path / "other", progress=False)
    assert "another model" in one_sentence(e)
    assert not hasattr(pipe.unet, "peft_config") and not (tmp_path / "out" / WEIGHTS_NAME).exists()


def test_dora_adapter_round_trip(data, tmp_path):
    out = finetune(tiny_toy(), data, tmp_path / "dora", FinetuneConfig(**FAST), dora=True, steps=4, progress=False)
    lora = saved_lora(out)
    assert any("lora_magnitude_vector" in k for k in lora)
    fresh = tiny_toy()
    fresh.load_lora_weights(out)
    assert fresh.unet.peft_config[next(iter(fresh.unet.peft_config))].use_dora
    manual = tiny_toy()
    manual.unet.add_adapter(lora_config(FinetuneConfig(**FAST, dora=True)), adapter_name=ADAPTER)
    set_peft_model_state_dict(manual.unet, lora, adapter_name=ADAPTER)
    assert np.array_equal(images(fresh), images(manual))
    assert not np.array_equal(images(fresh), images(tiny_toy()))


@pytest.mark.parametrize("kind", ["sd", "sd-v", "sdxl"])
def test_latent_pipelines(kind, data, tmp_path):
    make = tiny_sdxl_pipeline if kind == "sdxl" else tiny_sd_pipeline

    def build():
        pipe = make()
        if kind == "sd-v":
            pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
        return pipe

    out = finetune(build(), data, tmp_path / kind, FinetuneConfig(**FAST), steps=3, sample_prompts=1, sample_steps=2,
                   progress=False)
    assert (out / "samples" / "step-00003.png").is_file()
    fresh = build()
    base = images(fresh, guidance_scale=4.0)
    fresh.load_lora_weights(out)
    assert not np.array_equal(images(fresh, guidance_scale=4.0), base)


def test_bad_sets_are_one_sentence(data, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_finetune_set(tmp_path / "nowhere")
    assert "No fine-tuning set" in one_sentence(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        load_finetune_set(tmp_path / "empty")
    assert "metadata.jsonl" in one_sentence(e)
    bad = write_set(tmp_path / "bad", n=3)
    lines = (bad / "metadata.jsonl").read_text().splitlines()
    (bad / "metadata.jsonl").write_text("\n".join([lines[0], "{not json", lines[2]]))
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), bad, tmp_path / "out", progress=False)
    assert "line 2" in one_sentence(e)
    (bad / "metadata.jsonl").write_text("\n".join(lines))
    (bad / "001.png").unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_finetune_set(bad)
    assert "001.png" in one_sentence(e)
    (bad / "001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError) as e:
        load_finetune_set(bad)
    assert "not a readable image" in one_sentence(e)
    s = load_finetune_set(data)
    assert s.images.shape == (8, 3, 32, 32) and s.images.min() >= -1 and len(s.prompts) == 8


def test_output_folder_problems_lose_nothing(trained, data, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError) as e:
        finetune(tiny_toy(), data, tmp_path / "file" / "out", FinetuneConfig(**FAST), progress=False)
    assert "Cannot write" in one_sentence(e)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / WEIGHTS_NAME).write_bytes(b"someone's adapter")
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), data, foreign, FinetuneConfig(**FAST), progress=False)
    one_sentence(e)
    assert (foreign / WEIGHTS_NAME).read_bytes() == b"someone's adapter"
    _, _, out = trained
    kept = {f: (out / f).read_bytes() for f in (WEIGHTS_NAME, "loss.csv", "state.pt", "finetune_config.json")}
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), data, out, FinetuneConfig(**FAST), steps=30, lr=1e-3, progress=False)
    assert "other options" in one_sentence(e)
    assert all((out / f).read_bytes() == b for f, b in kept.items())


def test_cli(data, tmp_path, capsys):
    assert main(["finetune", "--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No fine-tuning set" in err and "Traceback" not in err
    tiny_toy().save_pretrained(tmp_path / "model")
    args = ["finetune", "--model", str(tmp_path / "model"), "--data-dir", str(data), "--output-dir", str(tmp_path / "o"),
            "--rank", "2", "--steps", "2", "--batch-size", "2", "--validate-every", "0", "--sample-prompts", "0",
            "--device", "cpu"]
    assert main(args) == 0
    assert "load_lora_weights" in capsys.readouterr().out and (tmp_path / "o" / WEIGHTS_NAME).is_file()


def test_two_processes_match_one(data, tmp_path):
    """``accelerate launch`` with two CPU processes trains the same adapter as one process (same global batch)."""
    tiny_toy().save_pretrained(tmp_path / "model")
    args = ["finetune", "--model", str(tmp_path / "model"), "--data-dir", str(data), "--rank", "4", "--steps", "3",
            "--batch-size", "8", "--lr", "1e-2", "--prompt-dropout", "0.2", "--validate-every", "0",
            "--sample-prompts", "0", "--device", "cpu"]
    assert main(args + ["--output-dir", str(tmp_path / "one")]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
              "-m", "minitune.cli"]
    run = subprocess.run(launch + args + ["--output-dir", str(tmp_path / "two")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = saved_lora(tmp_path / "one"), saved_lora(tmp_path / "two")
    # equal up to float summation order (thread count and the all-reduce differ); Adam amplifies that to ~1e-5
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4


def test_gradient_accumulation_makes_the_same_update(data, tmp_path):
    """grad_accum splits each process's batch into micro-batches; the adapter is the one of the whole batch."""
    for accum in (1, 4):
        finetune(tiny_toy(), data, tmp_path / str(accum), rank=4, steps=3, batch_size=8, lr=1e-2, prompt_dropout=0.2,
                 validate_every=0, sample_prompts=0, grad_accum=accum, device="cpu", progress=False)
    one, four = saved_lora(tmp_path / "1"), saved_lora(tmp_path / "4")
    losses = [np.loadtxt(tmp_path / a / "loss.csv", delimiter=",", skiprows=1)[:, 1] for a in ("1", "4")]
    assert np.abs(losses[0] - losses[1]).max() < 1e-4  # the logged loss is the whole batch's
    # equal up to float summation order, which Adam's normalised first steps amplify (to ~1e-4 on 2 threads), far
    # below what the 3 steps move the weights (~lr per step)
    assert max((one[k] - four[k]).abs().max().item() for k in one) < 1e-3
    for bad, match in ((dict(grad_accum=3), "multiple of 3"), (dict(grad_accum=0), "positive integer")):
        with pytest.raises(ValueError, match=match):
            finetune(tiny_toy(), data, tmp_path / "bad", rank=4, steps=1, batch_size=8, device="cpu", **bad)


def test_the_lora_context_leaves_the_unet_as_it_was():
    """_lora_attached adds a seeded float32 adapter as the only trainable weights and removes it, even after an error."""
    from minitune.finetune import _lora_attached

    unet = tiny_toy().unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    grads = {k: p.requires_grad for k, p in unet.named_parameters()}
    with _lora_attached(unet, FinetuneConfig(rank=2, alpha=2.0)) as params:
        assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
        assert all(not p.requires_grad for k, p in unet.named_parameters() if "lora_" not in k)
        first = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError), _lora_attached(unet, FinetuneConfig(rank=2, alpha=2.0)) as again:
        assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same seeded initial weights
        raise RuntimeError("stop")
    assert not getattr(unet, "peft_config", None)
    assert {k: p.requires_grad for k, p in unet.named_parameters()} == grads
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
