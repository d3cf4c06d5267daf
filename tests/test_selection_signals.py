"""The small metrics the dataset and CFG chapters print: within-prompt ρ, best-of-n, the selection table."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from minitune.evaluate import best_of_n, selection_table, within_prompt_spearman
from minitune.toy.scoring import pairwise_failure_table, top1_failure_table


def test_within_prompt_spearman_matches_scipy_and_skips_constant_prompts():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 7)), rng.integers(0, 3, size=(5, 7)).astype(float)  # ties in y
    y[4] = 1.0  # a prompt whose candidates all score alike carries no ranking
    expected = np.mean([spearmanr(a, b).statistic for a, b in zip(x[:4], y[:4])])
    assert within_prompt_spearman(x, y) == pytest.approx(expected)
    assert within_prompt_spearman(x, x) == pytest.approx(1.0)
    assert within_prompt_spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(within_prompt_spearman(x, np.ones_like(x)))
    with pytest.raises(ValueError, match="same"):
        within_prompt_spearman(x, y[:, :3])
    with pytest.raises(ValueError, match=r"\[prompts, candidates\]"):
        within_prompt_spearman(x.ravel(), y.ravel())


def test_best_of_n_picks_the_top_key_among_the_first_n():
    values = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    key = np.array([[3.0, 1.0, 5.0, 9.0], [0.0, 2.0, 2.0, 1.0]])
    got = best_of_n(values, key, [1, 2, 3, 4])
    assert got.shape == (4, 2)
    assert got[:, 0].tolist() == [0.0, 0.0, 0.0, 1.0]  # candidate 0, 0, 2, then 3
    assert got[:, 1].tolist() == [1.0, 0.0, 0.0, 0.0]  # ties keep the first (candidate 1)
    assert best_of_n(values, values, [4]).tolist() == [[1.0, 1.0]]  # the oracle's own key finds the best
    with pytest.raises(ValueError, match="1..4"):
        best_of_n(values, key, [5])


def test_selection_table_rows_and_columns():
    strict = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    soft = np.array([[1.0, 0.5, 0.0], [0.5, 0.0, 1.0]])
    area = np.array([[10.0, 20.0, 30.0], [30.0, 20.0, 10.0]])
    table = selection_table({"oracle": soft, "area": area}, strict, soft, area)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    oracle, by_area = (line.split("|")[1:-1] for line in lines[2:])
    assert oracle[1].strip().startswith("100.0") and oracle[2].strip() == "3.00" and oracle[4].strip() == "0.0"
    assert oracle[5].strip() == "+1.00" and by_area[6].strip() == "+1.00"
    assert by_area[1].strip().startswith("0.0") and by_area[4].strip() == "100.0"
    assert "ρ(area)" not in selection_table({"oracle": soft}, strict, soft)


def _cells(table: str, row: str) -> list[str]:
    line = next(ln for ln in table.splitlines() if ln.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_failure_tables_count_what_the_picks_get_wrong():
    # prompt 0: aligned, extra object, missing object; prompt 1: extra object, aligned, extra object + wrong colour
    failures = [[[], ["extra object"], ["missing object"]],
                [["extra object"], [], ["extra object", "wrong colour"]]]
    ink = np.array([[2.0, 3.0, 1.0], [3.0, 2.0, 4.0]])  # rewards extra objects, punishes missing ones
    tie = np.zeros((2, 3))
    top = top1_failure_table({"ink": ink}, failures)
    modes = ["missing object", "extra object", "wrong colour", "wrong shape", "wrong relation", "wrong count", "none"]
    assert dict(zip(modes, _cells(top, "all candidates"))) == {
        "missing object": "17", "extra object": "50", "wrong colour": "17", "wrong shape": "0",
        "wrong relation": "0", "wrong count": "0", "none": "33"}
    assert _cells(top, "top-1 by ink")[:3] == ["0", "100", "50"]  # picks candidate 1, then candidate 2
    pair = pairwise_failure_table({"ink": ink, "tie": tie}, failures)
    # pairs: (p0: 0 vs 1 extra), (p1: 1 vs 0 extra) → ink ranks the aligned one lower in both; (p0: 0 vs 2 missing) higher
    assert _cells(pair, "ink")[:3] == ["100", "0", "–"]
    assert _cells(pair, "tie")[:2] == ["50", "50"]
    assert _cells(pair, "pairs") == ["1", "2", "0", "0", "0", "0"]
    with pytest.raises(ValueError, match="2 prompts × 3 candidates"):
        top1_failure_table({"ink": ink[:, :2]}, failures)
    with pytest.raises(ValueError, match="failure modes"):
        pairwise_failure_table({"ink": ink}, [[[]], [[], []]])
