"""The committed results: headed files, README blocks equal to them, and the helpers that read them."""

import json

import pytest

from minitune.tools.plotting import plot_arm_deltas
from minitune.tools.results import README, RESULTS_DIR, arm_sentences, published, readme_blocks, sync_readme

ARMS = {"base": {"name": "base", "strict": 0.2, "delta_strict": 0.0, "delta_ci": [0.0, 0.0], "well_formed": 0.9,
                 "area": 200.0},
        "oracle": {"name": "oracle top-k", "strict": 0.35, "delta_strict": 0.15, "delta_ci": [0.05, 0.25],
                   "well_formed": 0.92, "area": 180.0},
        "mi": {"name": "MI-TUNE (paper MI)", "strict": 0.17, "delta_strict": -0.03, "delta_ci": [-0.1, 0.04],
               "well_formed": 0.9, "area": 220.0, "share_of_oracle": -0.2}}


@pytest.mark.parametrize("path", sorted(RESULTS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_committed_results_are_headed(path):
    data = json.loads(path.read_text())
    assert {"model", "commit", "command", "wall_time_min"} <= set(data), path.name
    md = path.with_suffix(".md").read_text()
    assert md.startswith(f"<!-- written by `{data['command']}`; model {data['model']}, commit {data['commit']}")


def test_experiment_result_has_every_arm():
    data, _ = published("experiment")
    assert {"base", "random", "oracle", "mi"} <= set(data["arms"])
    for arm in data["arms"].values():
        assert {"strict", "delta_strict", "delta_ci", "well_formed", "area"} <= set(arm)


def test_readme_blocks_equal_the_files():
    blocks = readme_blocks(README.read_text())
    assert "experiment" in blocks
    for name, content in blocks.items():
        assert content == published(name)[1], f"README block {name} is stale: run python -m minitune.tools.results"


def test_sync_readme_rewrites_blocks_only(tmp_path):
    (tmp_path / "demo.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "demo.json").write_text("{}")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:demo -->\nold\n<!-- /results:demo -->\nend\n")
    assert sync_readme(readme, tmp_path) == ["demo"]
    assert readme.read_text() == "intro\n<!-- results:demo -->\n| a |\n|---|\n| 1 |\n<!-- /results:demo -->\nend\n"
    readme.write_text("<!-- results:gone -->\n<!-- /results:gone -->\n")
    with pytest.raises(FileNotFoundError, match="No committed result 'gone'"):
        sync_readme(readme, tmp_path)
    assert readme.read_text() == "<!-- results:gone -->\n<!-- /results:gone -->\n"  # nothing lost


def test_arm_sentences_and_plot(tmp_path):
    text = arm_sentences({"arms": ARMS})
    assert "oracle top-k: +15.0 points (95 % CI +5.0 to +25.0), an interval above zero" in text
    assert "coloured area -10 %" in text and "-20 % of the oracle arm's gain" in text and "containing zero" in text
    with_renders = arm_sentences({"arms": ARMS, "renders": {"area": 160.0}})
    assert "the world's own renders of these prompts draw 160, so the base draws +25 %" in with_renders
    assert "coloured area -10 % (+12 % against the renders)" in with_renders
    plot_arm_deltas(ARMS, tmp_path / "deltas.png", title="demo")
    assert (tmp_path / "deltas.png").stat().st_size > 1000
