"""Prompt files as T2I-CompBench ships them: the README's paper commands on the first 100 lines of its color_train.txt."""

import json
import logging
from pathlib import Path

import pytest

from minitune.cli import main
from minitune.selection import read_prompts
from minitune.testing import tiny_sd_pipeline

COLOR_TRAIN = Path(__file__).parent / "data" / "color_train_head.txt"  # see data/README.md


def test_repeated_prompts_are_kept_once_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="minitune"):
        prompts = read_prompts(COLOR_TRAIN)
    lines = COLOR_TRAIN.read_bytes().decode().splitlines()
    assert len(lines) == 100 and len(prompts) == 94 and prompts == list(dict.fromkeys(lines))
    assert [r.getMessage() for r in caplog.records] == [
        "note: color_train_head.txt lists 6 prompt(s) again; each is kept once, 94 prompts in all."]


def test_a_byte_order_mark_comments_and_blank_lines_are_not_prompts(tmp_path, caplog):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffa red café sign\r\n# the colour category\r\n\r\n  a blue bench  \r\n".encode("utf-8"))
    with caplog.at_level(logging.WARNING, logger="minitune"):
        assert read_prompts(path) == ["a red café sign", "a blue bench"]
    assert not caplog.records
    path.write_bytes("a red caf\xe9 sign\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_prompts(path)


def test_the_readme_paper_commands_on_real_prompts(tmp_path, capsys, caplog):
    """build, finetune and evaluate with --recipe paper on a tiny saved SD folder; two prompts, one listed twice."""
    lines = COLOR_TRAIN.read_bytes().split(b"\r\n")
    twice = next(i for i, line in enumerate(lines) if lines.count(line) == 2)
    (tmp_path / "color_train.txt").write_bytes(b"\r\n".join([lines[0], lines[twice], lines[twice]]) + b"\r\n")
    tiny_sd_pipeline().save_pretrained(tmp_path / "sd")
    model, prompts, out = str(tmp_path / "sd"), str(tmp_path / "color_train.txt"), tmp_path / "color"
    small = ["--device", "cpu", "--steps", "2"]
    with caplog.at_level(logging.WARNING, logger="minitune"):
        assert main(["build", "--recipe", "paper", "--model", model, "--prompts", prompts, "--controls", "--scorer",
                     "blip-vqa", "--judge-model", "tiny", "--candidates", "2", "--output-dir", str(out), *small]) == 0
    assert "lists 1 prompt(s) again" in caplog.text
    manifest = json.loads((out / "pool" / "manifest.json").read_text())
    assert manifest["prompts"] == [lines[0].decode(), lines[twice].decode()] and manifest["n_images"] == 4
    capsys.readouterr()
    assert main(["finetune", "--recipe", "paper", "--model", model, "--data-dir", str(out / "mi"), "--output-dir",
                 str(out / "lora"), "--rank", "2", "--batch-size", "2", "--grad-accum", "1", "--validate-every", "0",
                 "--sample-prompts", "0", "--val-prompt-file", prompts, "--val-prompts", "1", "--val-images", "1",
                 "--checkpoint-every", "1", "--judge-model", "tiny", *small]) == 0
    best = capsys.readouterr().out.splitlines()[-1]
    assert best.startswith(f"best on the validation prompts: {out / 'lora'}/checkpoint-") and "blip_vqa" in best
    config = json.loads((out / "lora" / "finetune_config.json").read_text())
    assert (config["config"]["latents"], config["config"]["val_fraction"], config["judge"]["judge"]) == \
        ("saved", 0.0, "blip_vqa")  # the sampler's own latents, every image trained, the judge recorded
    assert (out / "mi" / "latents.safetensors").is_file() and config["data"]["images"] == 2
    assert main(["evaluate", "--recipe", "paper", "--model", model, "--prompt-file", prompts, "--category", "color",
                 "--lora", str(out / "lora"), "--judge-model", "tiny", "--n-per-prompt", "1", *small]) == 0
    assert "judged by blip-vqa" in capsys.readouterr().out
