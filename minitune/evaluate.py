"""Judge sampled images: alignment tables with bootstrap confidence intervals.

In the Shapes world the judge is the exact oracle (:func:`minitune.toy.world.evaluate`); images
come from :func:`minitune.sampling.sample_with_mi`, one seed per image.
"""

from __future__ import annotations

import numpy as np
from .toy import world


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(len(v), size=(n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def alignment_table(ev: world.Evaluation) -> str:
    """Markdown table: per category n, strict (95 % CI), soft, well-formed."""
    lines = ["| category | images | strict % (95 % CI) | soft % | well-formed % |", "|---|---:|---:|---:|---:|"]
    groups = {c: [r for r in ev.records if r["category"] == c] for c in world.CATEGORIES}
    groups["all"] = ev.records
    for name, rs in groups.items():
        if not rs:
            continue
        strict = [r["strict"] for r in rs]
        lo, hi = bootstrap_ci(strict)
        lines.append(
            f"| {name} | {len(rs)} | {100 * np.mean(strict):.1f} ({100 * lo:.1f}–{100 * hi:.1f}) | "
            f"{100 * np.mean([r['soft'] for r in rs]):.1f} | {100 * np.mean([r['well_formed'] for r in rs]):.1f} |"
        )
    return "\n".join(lines)


def failure_table(ev: world.Evaluation) -> str:
    """Markdown table: % of images of each category showing each failure mode."""
    rates = ev.failure_rates()
    lines = ["| category | " + " | ".join(world.FAILURE_MODES) + " |", "|---|" + "---:|" * len(world.FAILURE_MODES)]
    for c, r in rates.items():
        lines.append(f"| {c} | " + " | ".join(f"{100 * r[m]:.1f}" for m in world.FAILURE_MODES) + " |")
    return "\n".join(lines)
