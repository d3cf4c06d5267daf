"""The whole experiment with the `tiny` preset on the shipped model: files, resume, bad settings."""

import json
from dataclasses import replace

import pytest

from minitune.toy import world
from minitune.toy.experiment import PRESETS, run_experiment


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


def test_arms_and_published_results(tiny_run, tmp_path):
    from minitune.toy.experiment import publish

    out, data = tiny_run
    arms = data["arms"]
    assert set(arms) == {"base", "mi", "mi_renoise", "mi_contrast", "random", "oracle"}
    for arm, row in arms.items():
        assert {"strict", "delta_strict", "delta_ci", "well_formed", "area"} <= set(row)
        assert row["delta_ci"][0] <= row["delta_strict"] <= row["delta_ci"][1] and row["area"] >= 0
        if arm != "base":
            assert row["delta_strict"] == pytest.approx(row["strict"] - arms["base"]["strict"])
    assert all("share_of_oracle" in arms[a] for a in ("mi", "mi_renoise", "mi_contrast"))
    for a in ("mi", "mi_renoise", "mi_contrast"):  # paired against random-k on the same prompts and seeds
        lo, hi = arms[a]["vs_random_ci"]
        assert lo <= arms[a]["delta_vs_random"] <= hi
        assert arms[a]["delta_vs_random"] == pytest.approx(arms[a]["strict"] - arms["random"]["strict"])
    js, md = publish(data, tmp_path / "results", model="toy", command="minitune experiment --recipe tiny", wall_s=90)
    written = json.loads(js.read_text())
    assert written["command"] == "minitune experiment --recipe tiny" and written["wall_time_min"] == 1.5
    assert written["model"] == "toy" and written["commit"] and written["arms"] == json.loads(json.dumps(arms))
    text = md.read_text()
    assert text.startswith("<!-- written by `minitune experiment --recipe tiny`") and "| oracle top-k |" in text
    renders = written["renders"]
    assert renders["strict"] == 1.0 and renders["area"] > 0 and renders["images"] == \
        data["summaries"]["base"]["all"]["n_images"]
    base_vs_renders = f"{100 * (arms['base']['area'] / renders['area'] - 1):+.0f} %"
    assert f"| {renders['name']} | 100.0 |" in text and f"| {base_vs_renders} |" in text


def test_renders_reference_is_the_worlds_truth():
    from minitune.toy.experiment import renders_reference
    from minitune.toy import world

    cfg = replace(PRESETS["tiny"], eval_per_category=2, eval_images=3)
    ref = renders_reference(cfg)
    prompts = world.eval_prompts(2, seed=cfg.seed)
    assert ref["images"] == 3 * len(prompts) and ref["strict"] == 1.0 and ref["well_formed"] == 1.0
    areas = [world.check(world.render(p, cfg.seed + 1000 + 3 * i + j), p)["area"] for i, p in enumerate(prompts)
             for j in range(3)]
    assert ref["area"] == pytest.approx(sum(areas) / len(areas))
    assert renders_reference(cfg) == ref  # seeded


def test_dpo_objective_trains_on_pairs(tmp_path):
    cfg = replace(PRESETS["tiny"], selectors=("mi",), eval_images=1, candidates=2, objective="dpo", prompt_dropout=0.0,
                  sampler="dpmpp-sde", pairing="nearest")
    data = run_experiment(tmp_path, cfg, progress=False)
    manifest = json.loads((tmp_path / "round1" / "pool" / "manifest.json").read_text())
    assert manifest["sampler"] == "DPMSolverMultistepScheduler(sde-dpmsolver++)"
    for arm in ("mi", "random", "oracle"):
        rows = [json.loads(line) for line in (tmp_path / "round1" / arm / "set" / "metadata.jsonl").read_text().splitlines()]
        assert all("rejected_file_name" in r for r in rows)
        assert json.loads((tmp_path / "round1" / arm / "set" / "manifest.json").read_text())["pairing"] == "nearest"
        config = json.loads((tmp_path / "round1" / arm / "lora" / "finetune_config.json").read_text())["config"]
        assert config["objective"] == "dpo" and config["dpo_beta"] == cfg.dpo_beta
    assert set(data["arms"]) == {"base", "mi", "random", "oracle"}
    with pytest.raises(ValueError, match="Unknown objective 'ppo'"):
        run_experiment(tmp_path / "bad", replace(cfg, objective="ppo"), progress=False)
    with pytest.raises(ValueError, match="Unknown pairing 'closest': use one of extremes, nearest"):
        run_experiment(tmp_path / "bad", replace(cfg, pairing="closest"), progress=False)
    with pytest.raises(ValueError, match="Unknown sampler 'euler': use one of ddpm"):
        run_experiment(tmp_path / "bad", replace(cfg, sampler="euler"), progress=False)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_a_second_recipe_reuses_the_pool_and_the_base_evaluation(tiny_run, tmp_path):
    from minitune.toy.experiment import publish, reuse_from

    out, data = tiny_run
    dpo = replace(PRESETS["tiny"], objective="dpo", cfg_sweep=())
    second = run_experiment(tmp_path / "dpo", dpo, progress=False, pool_from=out)
    assert second["reused"] == {"from": str(out), "what": ["pool", "base evaluation"]}
    assert (tmp_path / "dpo" / "round1" / "pool" / "metadata.jsonl").read_text() == \
        (out / "round1" / "pool" / "metadata.jsonl").read_text()
    # the pool and the base row are the first run's, not made again: no timing for either
    assert json.dumps(second["summaries"]["base"]) == json.dumps(data["summaries"]["base"])
    assert not any(k.startswith("round1/pool") or k == "evaluate/base" for k in second["timings"])
    assert "from " + str(out) in (tmp_path / "dpo" / "results.md").read_text()
    js, _ = publish(second, tmp_path / "results", model="toy", command="minitune experiment", wall_s=60,
                    name="experiment_dpo")
    assert json.loads(js.read_text())["reused"]["what"] == ["pool", "base evaluation"]
    # another evaluation setting: the pool is still shared, the base is judged again
    assert reuse_from(out, tmp_path / "eval1", replace(dpo, eval_images=1)) == ["pool"]
    assert not (tmp_path / "eval1" / "eval").exists()
    with pytest.raises(ValueError, match="other settings .*candidates 3 → 4"):
        run_experiment(tmp_path / "bigger", replace(dpo, candidates=4), progress=False, pool_from=out)
    with pytest.raises(ValueError, match="no config.json"):
        run_experiment(tmp_path / "none", dpo, progress=False, pool_from=tmp_path / "nowhere")
