"""The Shapes world's exact judge as a scorer, and the tables that read its verdicts: alignment and failure
modes per category, and what each selection signal's picks get wrong."""

from __future__ import annotations

import numpy as np

from ..evaluate import as_grouped, bootstrap_ci
from ..io import markdown_table
from . import world


def oracle_scorer(images, prompts) -> dict:
    """The Shapes world's exact judge: strict, soft and well-formed per image, its coloured area (pixels,
    how much it draws), and 1.0 / 0.0 for each of
    the oracle's failure modes (``world.FAILURE_MODES``, e.g. "extra object"), so that their rates are
    summarised like any other metric (:func:`minitune.io.judge_record` records the modes' names from
    ``oracle_scorer.failure_modes``, so that pages can tell them from the other metrics)."""
    ev = world.evaluate(images, list(prompts))
    scores = {k: np.array([r[k] for r in ev.records], float) for k in ("strict", "soft", "well_formed", "area")}
    return scores | {m: np.array([m in r["failures"] for r in ev.records], float) for m in world.FAILURE_MODES}


oracle_scorer.failure_modes = world.FAILURE_MODES


def category_of(prompt: str) -> str:
    """The category the grammar reads in `prompt`, "other" for a prompt it cannot parse."""
    try:
        return world.parse(prompt).category
    except ValueError:
        return "other"


def alignment_table(ev: world.Evaluation) -> str:
    """Markdown table: per category n, strict (95 % CI), soft, well-formed."""
    groups = {c: [r for r in ev.records if r["category"] == c] for c in world.CATEGORIES}
    groups["all"] = ev.records
    rows = []
    for name, rs in groups.items():
        if not rs:
            continue
        strict = [r["strict"] for r in rs]
        lo, hi = bootstrap_ci(strict)
        rows.append([name, len(rs), f"{100 * np.mean(strict):.1f} ({100 * lo:.1f}–{100 * hi:.1f})",
                     f"{100 * np.mean([r['soft'] for r in rs]):.1f}", f"{100 * np.mean([r['well_formed'] for r in rs]):.1f}"])
    return markdown_table(rows, ["category", "images", "strict % (95 % CI)", "soft %", "well-formed %"], align="lrrrr")


def failure_table(ev: world.Evaluation) -> str:
    """Markdown table: % of images of each category showing each failure mode."""
    rows = [[c, *(f"{100 * r[m]:.1f}" for m in world.FAILURE_MODES)] for c, r in ev.failure_rates().items()]
    return markdown_table(rows, ["category", *world.FAILURE_MODES], align="l" + "r" * len(world.FAILURE_MODES))


def _failure_sets(failures) -> list[list[set]]:
    rows = [[set(f) for f in row] for row in failures]
    if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
        raise ValueError("failures must be a [prompts, candidates] nested list of each candidate's failure modes "
                         "(the oracle records' 'failures'), the same number of candidates for every prompt.")
    return rows


def top1_failure_table(signals: dict, failures) -> str:
    """Markdown: what each selection signal's top-1 picks get wrong.

    ``failures`` is [P, N]: each candidate's list of failure modes (``world.FAILURE_MODES``; empty when
    aligned). A row gives, for one signal ([P, N], higher = keep), the % of its top-1 picks that show each
    mode (modes can co-occur); the first row is the rate among all candidates, what a random pick shows.
    """
    rows = _failure_sets(failures)
    modes = world.FAILURE_MODES
    P, N = len(rows), len(rows[0])
    everyone = [f for row in rows for f in row]
    picks = {"all candidates": everyone}
    for name, key in signals.items():
        key = as_grouped(name, key)
        if key.shape != (P, N):
            raise ValueError(f"{name} has shape {key.shape} but failures has {P} prompts × {N} candidates.")
        picks[f"top-1 by {name}"] = [rows[p][i] for p, i in enumerate(key.argmax(1))]
    table = [[name, *(f"{100 * np.mean([m in f for f in fs]):.0f}" for m in modes), f"{100 * np.mean([not f for f in fs]):.0f}"]
             for name, fs in picks.items()]
    return markdown_table(table, ["picks", *modes, "none"], align="l" + "r" * (len(modes) + 1))


def pairwise_failure_table(signals: dict, failures) -> str:
    """Markdown: does each signal rank an aligned candidate above one with a single, given failure?

    For every failure mode m, all same-prompt pairs (a candidate without failures, a candidate whose only
    failure is m) are compared; a cell is the % of pairs in which the signal scores the aligned one higher
    (ties count half). 50 % means the signal is blind to that failure, below 50 % that it rewards it.
    The last row gives the number of pairs. Modes without pairs show –.
    """
    rows = _failure_sets(failures)
    modes = world.FAILURE_MODES
    pairs = {m: [(p, g, b) for p, row in enumerate(rows) for g, fg in enumerate(row) if not fg
                 for b, fb in enumerate(row) if fb == {m}] for m in modes}
    table = []
    for name, key in signals.items():
        key = as_grouped(name, key)
        if key.shape != (len(rows), len(rows[0])):
            raise ValueError(f"{name} has shape {key.shape} but failures has {len(rows)} prompts × {len(rows[0])} candidates.")
        cells = []
        for m in modes:
            wins = [1.0 if key[p, g] > key[p, b] else 0.5 if key[p, g] == key[p, b] else 0.0 for p, g, b in pairs[m]]
            cells.append(f"{100 * np.mean(wins):.0f}" if wins else "–")
        table.append([name, *cells])
    table.append(["pairs", *(len(pairs[m]) for m in modes)])
    return markdown_table(table, ["signal", *modes], align="l" + "r" * len(modes))
