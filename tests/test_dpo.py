"""Preference sets and Diffusion-DPO fine-tuning: the loss, the pairs, the run and its one-sentence errors."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from minitune.finetune import FinetuneConfig, dpo_loss, finetune, load_finetune_set
from minitune.selection import _rejected, build_pool, load_records, select
from minitune.toy import world
from test_finetune import FAST, one_sentence, tiny_toy, write_set

KW = dict(num_inference_steps=2, progress=False)


def write_pairs(folder, n=8, tie=()):
    """A preference set of n renders (chosen) against the same scenes with one object left out (rejected)."""
    folder.mkdir(parents=True)
    prompts = world.sample_prompts("train", n, seed=1)
    with (folder / "metadata.jsonl").open("w") as f:
        for i, p in enumerate(prompts):
            Image.fromarray(world.render(p, i)).save(folder / f"{i:03d}.png")
            Image.fromarray(world.render_missing(p, i)).save(folder / f"{i:03d}_rejected.png")
            f.write(json.dumps({"file_name": f"{i:03d}.png", "text": p, "rejected_file_name": f"{i:03d}_rejected.png",
                                "tie": i in tie}) + "\n")
    return folder


def test_dpo_loss_values():
    target = torch.zeros(3, 2, 4)
    ref = torch.ones(3, 2, 4)
    loss, acc = dpo_loss(ref.clone(), ref, target, beta=10.0)
    assert loss.item() == pytest.approx(math.log(2)) and acc.item() == 0.0  # the starting model: no preference
    shared = ref * 0.5  # the same improvement on chosen and rejected images cancels out
    assert dpo_loss(shared, ref, target, beta=10.0)[0].item() == pytest.approx(math.log(2))
    better = ref.clone()
    better[:, 0] = 0.9  # chosen error 0.81 (ref 1), rejected unchanged: inside = -0.5·10·(0.81 − 1) = 0.95
    loss, acc = dpo_loss(better, ref, target, beta=10.0)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.95))), rel=1e-5) and acc.item() == 1.0
    weight = torch.tensor([1.0, 0.0, 0.0])  # only the first pair counts
    mixed = better.clone()
    mixed[1:] = ref[1:] * 2  # the other pairs would push the loss up, but weigh nothing
    assert dpo_loss(mixed, ref, target, 10.0, weight)[0].item() == pytest.approx(loss.item(), rel=1e-5)
    worse = ref.clone()
    worse[:, 1] = 0.9  # the rejected image denoised better than before: the loss grows
    assert dpo_loss(worse, ref, target, beta=10.0)[0].item() > math.log(2)


@pytest.fixture(scope="module")
def pool(toy, tmp_path_factory):
    return build_pool(toy, ["a red circle and a blue square", "three green triangles"],
                      tmp_path_factory.mktemp("pairs") / "pool", 4, batch_size=8, **KW)


@pytest.mark.parametrize("by", ["mi", "oracle", "random"])
def test_preference_set_pairs_best_with_worst(pool, tmp_path, by):
    _, cands = load_records(pool)
    manifest, rows = load_records(select(pool, tmp_path / by, 2, by=by, pairs=True, progress=False))
    assert manifest["pairs"] and len(rows) == 4
    for r in rows:
        mine = {c["candidate"]: c for c in cands if c["prompt_index"] == r["prompt_index"]}
        assert r["candidate"] != r["rejected_candidate"] and r["rejected_mi"] == mine[r["rejected_candidate"]]["mi"]
        assert (tmp_path / by / r["rejected_file_name"]).read_bytes() == (pool / r["rejected_file_name"]).read_bytes()
        if by == "mi":
            assert r["mi"] >= r["rejected_mi"] and not r["tie"]
            order = sorted(mine.values(), key=lambda c: c["mi"])
            assert r["rejected_candidate"] == order[r["rank"]]["candidate"]  # rank r against the r-th worst
    data = load_finetune_set(tmp_path / by)
    assert data.rejected.shape == data.images.shape == (4, 3, 32, 32)
    assert not torch.equal(data.rejected, data.images)


def test_nearest_pairing_takes_the_best_candidate_that_scores_lower():
    group = [{"candidate": c, "soft": s, "strict": float(s == 1)} for c, s in
             enumerate([1.0, 1.0, 1.0, 0.75, 0.75, 0.5, 0.0])]  # ranked best first, as _ranked gives them
    nearest = [r["candidate"] for r in _rejected(group, 2, "oracle", "nearest")]
    assert nearest == [3, 4]  # candidate 2 ties with the chosen ones and is skipped; 0.75 is one fact off
    assert [r["candidate"] for r in _rejected(group, 2, "oracle", "extremes")] == [6, 5]
    assert [r["candidate"] for r in _rejected(group[:4], 2, "oracle", "nearest")] == [3, 2]  # none lower left: a tie
    assert [r["candidate"] for r in _rejected(group, 2, "random", "nearest")] == [6, 5]  # no key: the last ones left


def test_nearest_pairs_in_a_set(pool, tmp_path):
    _, cands = load_records(pool)
    manifest, rows = load_records(select(pool, tmp_path / "near", 1, by="mi", pairs=True, pairing="nearest",
                                         progress=False))
    assert manifest["pairing"] == "nearest" and len(rows) == 2
    for r in rows:
        order = sorted((c for c in cands if c["prompt_index"] == r["prompt_index"]), key=lambda c: -c["mi"])
        assert (r["candidate"], r["rejected_candidate"]) == (order[0]["candidate"], order[1]["candidate"])
    with pytest.raises(ValueError) as e:
        select(pool, tmp_path / "bad", 1, by="mi", pairs=True, pairing="closest", progress=False)
    assert "Unknown pairing 'closest'" in one_sentence(e) and not (tmp_path / "bad").exists()


def test_pairs_need_twice_k_candidates(pool, tmp_path):
    with pytest.raises(ValueError) as e:
        select(pool, tmp_path / "set", 3, by="mi", pairs=True, progress=False)
    assert "6 distinct candidates" in one_sentence(e)
    assert not (tmp_path / "set").exists()


def test_ties_leave_the_adapter_where_it_started(tmp_path):
    ties = write_pairs(tmp_path / "ties", n=4, tie={0, 1, 2, 3})
    out = finetune(tiny_toy(), ties, tmp_path / "lora", FinetuneConfig(**FAST), objective="dpo", steps=3,
                   val_fraction=0.0, progress=False)
    lora = torch.load(out / "state.pt", weights_only=False)["lora"]
    assert all(not v.any() for k, v in lora.items() if "lora_B" in k)  # B = 0: the adapter is the identity
    loss = np.genfromtxt(out / "loss.csv", delimiter=",", names=True)
    assert (loss["loss"] == 0).all()


def test_dpo_run_learns_the_preference(tmp_path):
    data = write_pairs(tmp_path / "pairs", tie={7})
    out = finetune(tiny_toy(), data, tmp_path / "lora", FinetuneConfig(**FAST), objective="dpo", dpo_beta=500.0,
                   steps=20, val_fraction=0.0, progress=False)
    log = np.genfromtxt(out / "loss.csv", delimiter=",", names=True)
    assert list(log.dtype.names) == ["step", "loss", "accuracy"]
    assert log["loss"][0] == pytest.approx(math.log(2), abs=1e-4)  # LoRA starts as the identity: no preference yet
    assert log["loss"][-5:].mean() < 0.6 and log["accuracy"][-5:].mean() > 0.6
    pipe = tiny_toy()
    pipe.load_lora_weights(out)  # saved the diffusers way
    assert json.loads((out / "finetune_config.json").read_text())["config"]["objective"] == "dpo"


@pytest.fixture
def plain(tmp_path):
    return write_set(tmp_path / "plain", n=4)


def test_objective_and_set_must_fit(plain, tmp_path):
    pairs = write_pairs(tmp_path / "pairs", n=4)
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), plain, tmp_path / "a", objective="dpo", progress=False)
    assert "a plain set" in one_sentence(e)
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), pairs, tmp_path / "b", progress=False)
    assert "a preference set" in one_sentence(e)
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), pairs, tmp_path / "c", objective="ppo", progress=False)
    assert "Unknown objective 'ppo'" in one_sentence(e)
    with pytest.raises(ValueError) as e:
        finetune(tiny_toy(), pairs, tmp_path / "d", objective="dpo", dpo_beta=0.0, progress=False)
    assert "dpo_beta" in one_sentence(e)
    lines = (pairs / "metadata.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    del first["rejected_file_name"]
    (pairs / "metadata.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]))
    with pytest.raises(ValueError) as e:
        load_finetune_set(pairs)
    assert "Only some lines" in one_sentence(e)
    assert not any((tmp_path / x).exists() for x in "abcd")  # nothing written for a refused run


def test_cli_builds_pairs_and_trains_by_dpo(tmp_path, capsys):
    from minitune.cli import main

    tiny_toy().save_pretrained(tmp_path / "model")
    build = ["build", "--model", str(tmp_path / "model"), "--n-prompts", "2", "--candidates", "2", "--top-k", "1",
             "--sample-steps", "2", "--controls", "--pairs", "--output-dir", str(tmp_path / "b")]
    assert main(build) == 0
    assert all("rejected_file_name" in r for r in load_records(tmp_path / "b" / "oracle")[1])
    assert main([*build[:-2], "--pairing", "nearest", "--output-dir", str(tmp_path / "n")]) == 0
    assert load_records(tmp_path / "n" / "oracle")[0]["pairing"] == "nearest"
    tune = ["finetune", "--model", str(tmp_path / "model"), "--data-dir", str(tmp_path / "b" / "mi"), "--rank", "2",
            "--train-steps", "2", "--batch-size", "2", "--validate-every", "0", "--sample-prompts", "0", "--device", "cpu"]
    assert main([*tune, "--output-dir", str(tmp_path / "o"), "--objective", "dpo", "--dpo-beta", "100"]) == 0
    assert "load_lora_weights" in capsys.readouterr().out
    assert main([*tune, "--output-dir", str(tmp_path / "p")]) == 2  # a preference set needs the dpo objective
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a preference set" in err and not (tmp_path / "p").exists()  # before the model loads
    assert main([*build[:-2], "--top-k", "2", "--output-dir", str(tmp_path / "c")]) == 2  # 2 pairs need 4 candidates
    assert "4 distinct candidates" in capsys.readouterr().err.splitlines()[-1]
