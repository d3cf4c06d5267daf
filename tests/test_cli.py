import json

import pytest

from minitune.cli import main
from minitune.toy.pipeline import load_pipeline


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("toy-train", "toy-ship", "toy-eval", "mi", "evaluate", "experiment", "build", "finetune", "sweep"):
        assert cmd in out


def test_bad_input_is_one_sentence_and_exit_2(capsys, tmp_path):
    assert main(["mi", "--prompt", "a purple circle and a red square", "--sample-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "purple" in err and "Traceback" not in err
    (tmp_path / "empty.txt").write_text("\n")
    assert main(["toy-eval", "--prompt-file", str(tmp_path / "empty.txt")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["toy-eval", "--model", str(tmp_path / "nowhere")]) == 2
    assert "model_index.json" in capsys.readouterr().err.splitlines()[-1]


def test_mi_ranks_candidates(capsys, tmp_path):
    assert main(["mi", "--prompt", "one red circle", "--n-per-prompt", "3", "--sample-steps", "5",
                 "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "one red circle" in out and (tmp_path / "ranked.png").is_file()
    ranks = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    mis = [float(r[1]) for r in ranks]
    assert len(mis) == 3 and mis == sorted(mis, reverse=True)


def test_evaluate_writes_its_table_and_refuses_a_missing_adapter(capsys, tmp_path):
    args = ["evaluate", "--prompt", "one cyan square", "--n-per-prompt", "2", "--sample-steps", "2"]
    assert main(args + ["--lora", str(tmp_path / "nowhere")]) == 2
    assert "No LoRA adapter" in capsys.readouterr().err
    assert main(args + ["--output-dir", str(tmp_path)]) == 0
    assert "| base |" in capsys.readouterr().out and (tmp_path / "eval.json").is_file()
    assert main(args + ["--sampler", "dpmpp-sde", "--output-dir", str(tmp_path / "sde")]) == 0
    assert json.loads((tmp_path / "sde" / "eval.json").read_text()) != json.loads((tmp_path / "eval.json").read_text())
    with pytest.raises(SystemExit):  # argparse: one line naming the choices, exit 2
        main(args + ["--sampler", "euler"])
    assert "invalid choice: 'euler'" in capsys.readouterr().err


def test_toy_train_takes_the_architecture(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["toy-train", "--output-dir", str(out), "--train-steps", "2", "--batch-size", "4", "--checkpoint-every", "2",
                 "--channels", "16", "16", "32", "--width", "32"]) == 0
    pipe = load_pipeline(out / "pipeline-2")
    assert list(pipe.unet.config.block_out_channels) == [16, 16, 32] and pipe.text_encoder.config.hidden_size == 32
    assert pipe.unet.config.cross_attention_dim == 32


def test_toy_train_takes_category_weights_and_refuses_bad_ones(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["toy-train", "--output-dir", str(out), "--train-steps", "1", "--batch-size", "4", "--checkpoint-every", "1",
            "--channels", "16", "16", "16", "--width", "16", "--category-weights"]
    assert main(args + ["1", "0", "0", "0", "-1"]) == 2
    assert "non-negative" in capsys.readouterr().err and not out.exists()
    assert main(args + ["0", "0", "0", "0", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["category_weights"] == [0, 0, 0, 0, 1]
