"""The whole experiment with the `tiny` preset on the shipped model: files, resume, bad settings."""

import json
from dataclasses import replace

import pytest

from minitune.experiment import PRESETS, run_experiment
from minitune.toy import world


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    return out, run_experiment(out, PRESETS["tiny"], progress=False)


def test_tiny_experiment_writes_tables_and_figures(tiny_run):
    out, data = tiny_run
    for f in ("results.json", "results.md", "figures/categories.png", "figures/before_after.png"):
        assert (out / f).is_file(), f
    names = set(data["summaries"])
    assert {"base", "MI-TUNE (paper MI)", "MI-TUNE (re-noise MI)", "MI-TUNE (contrast MI)", "random-k", "oracle top-k",
            "base, CFG 4"} == names
    for arm in ("mi", "mi_renoise", "mi_contrast", "random", "oracle"):
        assert (out / "round1" / arm / "lora" / "pytorch_lora_weights.safetensors").is_file()
    # the MI, random and oracle sets are selections from one pool
    assert not (out / "round1" / "mi" / "pool").exists() and (out / "round1" / "pool").is_dir()
    assert "Strict alignment" in (out / "results.md").read_text()
    # what each arm fine-tunes on, with the oracle's failure modes judged from the set's files
    pool = data["sets"]["round 1"]["pool (all candidates)"]
    assert pool["images"] == 4 * 3 and set(pool["failures"]) == set(world.FAILURE_MODES)
    assert all(0.0 <= v <= 1.0 for v in pool["failures"].values())
    assert "Failure modes in each set" in (out / "results.md").read_text()
    assert "Failure modes on the held-out prompts" in (out / "results.md").read_text()
    assert set(world.FAILURE_MODES) <= set(data["summaries"]["base"]["all"])


def test_rerun_continues_and_changed_settings_are_refused(tiny_run):
    out, data = tiny_run
    again = run_experiment(out, PRESETS["tiny"], progress=False)
    assert json.dumps(again["summaries"]) == json.dumps(data["summaries"])
    with pytest.raises(ValueError, match="other settings"):
        run_experiment(out, replace(PRESETS["tiny"], top_k=2), progress=False)
    with pytest.raises(ValueError, match="renoise_samples"):
        run_experiment(out / "new", replace(PRESETS["tiny"], renoise_samples=0), progress=False)


def test_the_pool_scores_only_what_the_selectors_rank_by(tmp_path):
    data = run_experiment(tmp_path, replace(PRESETS["tiny"], selectors=("mi",), eval_images=1), progress=False)
    manifest = json.loads((tmp_path / "round1" / "pool" / "manifest.json").read_text())
    assert manifest["renoise_samples"] == 0 and manifest["contrast_samples"] == 0  # the preset's 2 and 2 not spent
    assert {"base", "MI-TUNE (paper MI)", "random-k", "oracle top-k", "base, CFG 4"} == set(data["summaries"])
