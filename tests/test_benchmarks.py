"""The benchmark harness (caches keyed by the arguments, goals, results files) and every benchmark's --help."""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from minitune import GUIDANCE_SCALE

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks run as modules from the repository root; they are not installed
    sys.path.insert(0, str(ROOT))
harness = importlib.import_module("benchmarks.harness")
SCRIPTS = sorted(f"benchmarks.{p.parent.name}.{p.stem}" for p in (ROOT / "benchmarks").glob("*/*.py") if p.stem != "__init__")


def test_every_group_has_scripts():
    groups = {name.split(".")[1] for name in SCRIPTS}
    assert groups == {"perf", "checks", "studies"}
    assert sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")) == ["__init__.py", "harness.py"]  # scripts in groups


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_answers_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(name).main(["--help"])
    assert stop.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: python -m {name} ") and "--results STEM" in usage


def test_a_benchmark_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "benchmarks.perf.mi_overhead", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m benchmarks.perf.mi_overhead ")


def test_key_takes_the_named_arguments():
    args = harness.parser(ROOT / "benchmarks" / "perf" / "toy_speed.py", "Doc.", seed=7).parse_args(["--model", "m"])
    assert harness.key(args, "model", "seed", samples=4) == {"model": "m", "seed": 7, "samples": 4}


def test_cached_reuses_its_key_and_replaces_another(tmp_path):
    calls = []

    def compute(value):
        calls.append(value)
        return {"x": value}

    path = tmp_path / "cache" / "scores.pt"
    assert harness.cached(path, {"seed": 0}, lambda: compute(1))[0] == {"x": 1}
    value, seconds = harness.cached(path, {"seed": 0}, lambda: compute(2))
    assert value == {"x": 1} and seconds >= 0 and calls == [1]  # same arguments: reused, not computed
    assert harness.cached(path, {"seed": 1}, lambda: compute(3))[0] == {"x": 3}  # other arguments: recomputed
    assert harness.cached(path, {"seed": 1}, lambda: compute(4))[0] == {"x": 3} and calls == [1, 3]


def test_claim_refuses_a_folder_of_other_settings(tmp_path):
    folder = tmp_path / "run"
    harness.claim(folder, {"prompts": 8, "model": None})
    harness.claim(folder, {"prompts": 8, "dpo_beta": 2000.0})  # a setting the folder lacks is added
    assert json.loads((folder / "settings.json").read_text()) == {"prompts": 8, "model": None, "dpo_beta": 2000.0}
    with pytest.raises(ValueError, match="holds a run with other settings.*choose another --out"):
        harness.claim(folder, {"prompts": 16})
    assert json.loads((folder / "settings.json").read_text())["prompts"] == 8


@pytest.mark.parametrize("value, target, at_most, status", [
    (0.95, 0.9, False, 0), (0.85, 0.9, False, 1), (1.01, 1.03, True, 0), (1.05, 1.03, True, 1), (math.nan, 0.9, False, 1)])
def test_goal_returns_the_exit_status(value, target, at_most, status, capsys):
    assert harness.goal(value, target, "raw / build", at_most=at_most) == status
    line = capsys.readouterr().out
    assert line.startswith("raw / build: ") and f"{target:g}" in line and ("MISSED" in line) == bool(status)


def test_main_exits_with_the_status_and_bad_input_in_one_line(capsys):
    for returned, code in ((None, 0), (0, 0), (1, 1)):
        with pytest.raises(SystemExit) as stop:
            harness.main(lambda: returned)
        assert stop.value.code == code

    def bad():
        raise FileNotFoundError("No folder x: give a saved Shapes pipeline.")

    with pytest.raises(SystemExit) as stop:
        harness.main(bad)
    assert stop.value.code == 2 and capsys.readouterr().err == "error: No folder x: give a saved Shapes pipeline.\n"


def test_run_writes_headed_results_only_when_asked(tmp_path, capsys):
    ap = harness.parser(ROOT / "benchmarks" / "perf" / "toy_speed.py", "Doc.")
    assert harness.start(ap, []).write({"ratio": 1.0}, "text") is None
    stem = tmp_path / "results" / "toy_speed"
    run = harness.start(ap, ["--model", "runs/m", "--results", str(stem)])
    js, md = run.write({"ratio": 0.5}, "| a |\n|---|\n")
    data = json.loads(js.read_text())
    command = f"python -m benchmarks.perf.toy_speed --model runs/m --results {stem}"
    assert data["command"] == command and data["model"] == "runs/m" and data["ratio"] == 0.5
    assert {"commit", "wall_time_min"} <= set(data)
    assert md.read_text().startswith(f"<!-- written by `{command}`; model runs/m, commit ")
    assert md.read_text().endswith("| a |\n|---|\n") and "wrote " in capsys.readouterr().out


def test_report_prints_and_keeps_its_lines(capsys):
    out = harness.Report()
    out("a")
    out("| b |\n")
    assert capsys.readouterr().out == "a\n| b |\n\n" and out.markdown() == "a\n| b |\n"
    assert out.markdown(fenced=True) == "```\na\n| b |\n```\n"


def test_load_model_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder"):
        harness.load_model(tmp_path / "missing")
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="not a Shapes pipeline"):
        harness.load_model(tmp_path / "sd")


def test_own_mistakes_names_its_candidates_file(tmp_path):
    own_mistakes = importlib.import_module("benchmarks.studies.own_mistakes")
    with pytest.raises(SystemExit) as stop:  # no --candidates: a usage error, not another script's file
        own_mistakes.main([])
    assert stop.value.code == 2
    with pytest.raises(FileNotFoundError, match="No candidates file .*selection_study"):
        own_mistakes.main(["--candidates", str(tmp_path / "candidates.pt")])


def test_threads_option_sets_torchs_threads():
    import torch

    before = torch.get_num_threads()
    ap = harness.parser(__file__, "A test.", model=None, threads=True)
    try:
        run = harness.start(ap, ["--threads", "1"])
        assert run.args.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "--threads" not in harness.parser(__file__, "A test.").format_help()


def test_renoise_floor_design_matches_the_floor_when_nothing_varies():
    """Constant μ and σ over λ and a proposal ∝ w: no t-variance, so the stratified design's predicted spread equals
    the floor, s / (8 m) for 64 independent draws and s₊ / (√32 m) for 32 antithetic pairs."""
    import torch
    from diffusers import DDPMScheduler

    from minitune import mi

    floor = importlib.import_module("benchmarks.studies.renoise_floor")
    ab = mi.alphas_cumprod_of(DDPMScheduler(num_train_timesteps=1000))
    grid, w = mi._grid(ab, 1)
    m, s, s_even = 2.0, 5.0, 3.0
    on_grid = {"mu": torch.full((len(grid),), m, dtype=torch.float64), "sd": torch.full((len(grid),), s, dtype=torch.float64),
               "sd_even": torch.full((len(grid),), s_even, dtype=torch.float64),
               "sd_odd": torch.full((len(grid),), (s**2 - s_even**2) ** 0.5, dtype=torch.float64)}
    q = w.double() / w.double().sum()
    assert floor.design_rel_std(ab, on_grid, q, antithetic=False) == pytest.approx(s / (8 * m), rel=1e-6)
    assert floor.design_rel_std(ab, on_grid, q, antithetic=True) == pytest.approx(s_even / (32**0.5 * m), rel=1e-6)
    out = floor.floors(ab, on_grid, {"flat": q})
    assert out["floor_independent"] == pytest.approx(s / (8 * m))
    assert out["floor_antithetic"] == pytest.approx(s_even / (32**0.5 * m))
    assert out["odd_share_of_variance"] == pytest.approx(1 - s_even**2 / s**2)
    assert sum(b["share_of_target"] for k, b in out.items() if k.startswith("band")) == pytest.approx(1.0)
    # a proposal that ignores where the mean sits adds the spread of w μ / q within strata: never below the floor
    steep = {**on_grid, "mu": torch.linspace(0.0, 4.0, len(grid), dtype=torch.float64)}
    lopsided = torch.linspace(1.0, 3.0, len(grid), dtype=torch.float64)
    assert floor.design_rel_std(ab, steep, lopsided / lopsided.sum(), antithetic=False) > floor.floors(ab, steep, {})[
        "floor_independent"]


def test_renoise_floor_refuses_bad_sizes():
    floor = importlib.import_module("benchmarks.studies.renoise_floor")
    with pytest.raises(ValueError, match="--pairs must be at least 2"):
        floor.main(["--pairs", "1"])
    with pytest.raises(ValueError, match="--levels must be at least 1"):
        floor.main(["--levels", "0"])


def test_self_training_check_keeps_nearest_pairs_beside_the_extremes(tmp_path, capsys):
    from minitune.selection import build_pool
    from minitune.toy.pipeline import load_pipeline

    check = importlib.import_module("benchmarks.studies.self_training_check")
    ap = check.arguments()
    args = ap.parse_args(["--prompts", "2", "--dev", "1", "--candidates", "4", "--k", "2", "--arms", "oracle-dpo",
                          "--pairing", "nearest", "--out", str(tmp_path)])
    cfg, arms, doses, dpo = check.configure(ap, args)
    study = check.Study(args, cfg, doses, dpo)
    g = f"{GUIDANCE_SCALE:g}"  # the study samples at the Shapes model's documented scale
    pool = build_pool(load_pipeline(), study.train, tmp_path / f"pool-cfg{g}", 4, num_inference_steps=2, progress=False)
    assert cfg.pairing == "nearest" and check.pool_complete(pool)  # so the study samples nothing more
    folder = tmp_path / f"oracle-nearest-pairs-cfg{g}" / "set"
    assert study.pairs(arms) == {f"oracle nearest pairs, DPO (CFG {g})": folder}
    assert check.load_records(folder)[0]["pairing"] == "nearest"
    with pytest.raises(SystemExit) as stop:
        ap.parse_args(["--pairing", "closest"])
    assert stop.value.code == 2 and "invalid choice: 'closest'" in capsys.readouterr().err
