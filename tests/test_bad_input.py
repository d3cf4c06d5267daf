"""Every bad input of the command line is one sentence and status 2 (Ctrl-C: one sentence and 130), on tiny pipelines."""

import shutil

import pytest

from minitune import cli
from minitune.cli import main
from minitune.finetune import ADAPTER, FinetuneConfig, lora_config, save_adapter
from minitune.testing import tiny_sd_pipeline, tiny_sdxl_pipeline


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """A tiny saved Stable Diffusion folder and an SDXL LoRA adapter (another architecture)."""
    root = tmp_path_factory.mktemp("bad")
    tiny_sd_pipeline().save_pretrained(root / "sd")
    xl = tiny_sdxl_pipeline()
    xl.unet.add_adapter(lora_config(FinetuneConfig(rank=2, alpha=2)), adapter_name=ADAPTER)
    save_adapter(xl, root / "xl-lora")
    return root


def _one_sentence(capsys) -> str:
    """The error's line: the last one on stderr (the loaders' progress bars come before it)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("command", ["mi", "evaluate"])
@pytest.mark.parametrize(("option", "message"), [(["--steps", "0"], "sampling steps must be an integer of at least 1"),
                                                 (["--batch-size", "0"], "batch size must be an integer of at least 1"),
                                                 (["--guidance-scale", "-1"], "guidance scale must be 0 or more")])
def test_sampling_settings_no_sampler_can_use(command, option, message, capsys):
    assert main([command, "--prompt", "one red circle", "--n-per-prompt", "1", "--steps", "2", *option]) == 2
    assert message in _one_sentence(capsys)


def test_build_refuses_a_negative_guidance_scale(sd, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a red car\n")
    assert main(["build", "--model", str(sd / "sd"), "--prompts", str(tmp_path / "p.txt"), "--cfg", "-2", "--steps", "2",
                 "--candidates", "2", "--output-dir", str(tmp_path / "b"), "--device", "cpu"]) == 2
    assert "guidance scale must be 0 or more" in _one_sentence(capsys) and not (tmp_path / "b").exists()


def test_a_lora_from_another_architecture(sd, capsys):
    assert main(["evaluate", "--model", str(sd / "sd"), "--prompt", "a red car", "--lora", str(sd / "xl-lora"),
                 "--judge-model", "tiny", "--n-per-prompt", "1", "--steps", "2", "--device", "cpu"]) == 2
    err = _one_sentence(capsys)
    assert "does not fit this StableDiffusionPipeline" in err and "the model it was trained on" in err


def test_a_model_folder_without_its_vae(sd, tmp_path, capsys):
    shutil.copytree(sd / "sd", tmp_path / "sd")
    shutil.rmtree(tmp_path / "sd" / "vae")
    assert main(["mi", "--model", str(tmp_path / "sd"), "--prompt", "a red car", "--steps", "2", "--device", "cpu"]) == 2
    err = _one_sentence(capsys)
    assert "has no vae/ folder" in err and "connection" not in err


@pytest.mark.parametrize(("command", "again"), [("build", "resume"), ("mi", "start again")])
def test_ctrl_c_is_one_sentence_and_status_130(command, again, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, f"cmd_{command}", interrupted)
    assert main([command]) == 130
    assert f"minitune {command}: interrupted; rerun the same command to {again}." == _one_sentence(capsys)
