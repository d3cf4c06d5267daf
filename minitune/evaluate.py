"""Judge a model: alignment with bootstrap confidence intervals, well-formedness, diversity, MI.

In the Shapes world the judge is the exact oracle (:mod:`minitune.toy.scoring`). Every judge
plugs in as a *scorer*: a callable ``(images, prompts) -> {name: per-image values}`` (e.g.
a CLIP score for real models). Images come from :func:`minitune.sampling.sample_with_mi` with one
seed per (prompt, candidate), so two models evaluated with the same seed start from the same
noise and their per-prompt scores can be compared pairwise.

Confidence intervals resample prompts (the images of one prompt are not independent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .families import family_of
from .io import judge_record, markdown_table, model_record

Scorer = Callable[[torch.Tensor, list], dict]


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(len(v), size=(n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise RMS pixel distance (images in [-1, 1] mapped to [0, 1]) among a group of images."""
    x = ((images.float().clamp(-1, 1) + 1) / 2).flatten(1)
    n = len(x)
    if n < 2:
        return float("nan")
    d = torch.cdist(x, x) / x.shape[1] ** 0.5
    return float(d.sum() / (n * (n - 1)))


@dataclass
class EvalResult:
    """Per-image records (prompt, seed, category, mi and every scorer's values) and per-prompt diversity."""

    records: list[dict]
    diversity: dict[str, float] = field(default_factory=dict)  # prompt -> diversity of its images
    settings: dict = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        fixed = {"prompt", "seed", "category", "mi"}
        return [k for k in self.records[0] if k not in fixed] if self.records else []

    def per_prompt(self, metric: str, category: str = "all") -> dict[str, float]:
        """Mean of `metric` over each prompt's images (the unit the bootstrap resamples)."""
        groups: dict[str, list[float]] = {}
        for r in self.records:
            if category in ("all", r["category"]):
                groups.setdefault(r["prompt"], []).append(r[metric])
        return {p: float(np.mean(v)) for p, v in groups.items()}

    def categories(self) -> list[str]:
        """The categories in the order of their first record (a world's evaluation prompts come category by
        category), then "all"."""
        return [*dict.fromkeys(r["category"] for r in self.records), "all"]

    def summary(self) -> dict:
        """{category: {metric: mean, metric + "_ci": (lo, hi), "n_images", "diversity", "mi"}}."""
        out = {}
        for c in self.categories():
            rs = [r for r in self.records if c in ("all", r["category"])]
            row = {"n_images": len(rs), "mi": float(np.mean([r["mi"] for r in rs]))}
            for m in self.metrics:
                per = list(self.per_prompt(m, c).values())
                row[m] = float(np.mean([r[m] for r in rs]))
                row[m + "_ci"] = bootstrap_ci(per)
            div = [self.diversity[p] for p in {r["prompt"] for r in rs} if p in self.diversity]
            div = [d for d in div if not np.isnan(d)]
            row["diversity"] = float(np.mean(div)) if div else float("nan")
            out[c] = row
        return out

    def to_json(self) -> dict:
        return {"settings": self.settings, "summary": self.summary(), "records": self.records,
                "diversity": self.diversity}

    @classmethod
    def from_json(cls, data: dict) -> "EvalResult":
        return cls(data["records"], data.get("diversity", {}), data.get("settings", {}))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path) -> "EvalResult":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No evaluation at {path}; run `minitune evaluate` first.")
        return cls.from_json(json.loads(path.read_text()))


def load_adapter(pipe, folder) -> None:
    """``pipe.load_lora_weights(folder)``, with an adapter made for another architecture (its layers' names or
    shapes differ) refused in one sentence instead of a traceback."""
    try:
        pipe.load_lora_weights(str(folder))
    except (RuntimeError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"The LoRA adapter in {folder} does not fit this {type(pipe).__name__} ({first.rstrip('.:')}); "
                         "load it on the model it was trained on.") from None


def _other(prompt: str) -> str:
    return "other"


def evaluate_pipeline(pipe, prompts: list[str], n_per_prompt: int = 4, *, guidance_scale: float | None = None,
                      num_inference_steps: int | None = None, seed: int = 0, batch_size: int = 64,
                      scorers: dict[str, Scorer] | None = None, category_of: Callable[[str], str] | None = None,
                      progress: bool = True):
    """Sample `n_per_prompt` images per prompt and score them; returns ``(EvalResult, Candidates)``.

    Guidance scale and steps not given are the pipeline family's (:func:`minitune.families.family_of`).

    scorers: name -> scorer; by default the pipeline's own, ``pipe.default_scorers()`` (the Shapes
    pipeline's: its oracle), none for a pipeline without them (diversity and mean MI are always
    reported). Metric names of several scorers must not clash.
    category_of: prompt -> the category its row is reported under (default: the pipeline's own,
    ``pipe.category_of``, as the Shapes grammar reads it; "other" for a pipeline without one).
    """
    from .sampling import sample_with_mi
    from .selection import sampler_name

    guidance_scale, num_inference_steps = family_of(pipe).sampling(guidance_scale, num_inference_steps)
    if scorers is None:
        own = getattr(pipe, "default_scorers", None)
        scorers = own() if callable(own) else {}
    cands = sample_with_mi(pipe, prompts, n_per_prompt, guidance_scale=guidance_scale,
                           num_inference_steps=num_inference_steps, seed=seed, batch_size=batch_size,
                           progress=progress)
    category_of = category_of or getattr(pipe, "category_of", None) or _other
    records = [{"prompt": p, "seed": s, "category": category_of(p), "mi": float(m)}
               for p, s, m in zip(cands.prompts, cands.seeds, cands.mi)]
    for name, scorer in scorers.items():
        for metric, values in scorer(cands.images, cands.prompts).items():
            if metric in records[0]:
                raise ValueError(f"Scorer {name!r} returns a metric {metric!r} that another scorer already gave; rename it.")
            for r, v in zip(records, np.asarray(values, float)):
                r[metric] = float(v)
    div = {p: diversity(g) for p, g in zip(prompts, cands.images.split(n_per_prompt))}
    settings = {"n_prompts": len(prompts), "n_per_prompt": n_per_prompt, "guidance_scale": guidance_scale,
                "num_inference_steps": num_inference_steps, "seed": seed, **model_record(pipe),
                "sampler": sampler_name(pipe.scheduler), "judges": {name: judge_record(s) for name, s in scorers.items()},
                **_failure_modes(scorers)}
    return EvalResult(records, div, settings), cands


def _failure_modes(scorers: dict) -> dict:
    """{"failure_modes": [...]}, the metrics that are failure modes of a judge that names them (the Shapes oracle:
    ``scorer.failure_modes``), for the pages that list an image's failures; {} when no judge names any."""
    modes = [m for s in scorers.values() for m in getattr(s, "failure_modes", ())]
    return {"failure_modes": modes} if modes else {}


def paired_delta(a: EvalResult, b: EvalResult, metric: str, category: str) -> tuple[float, tuple[float, float]]:
    pa, pb = a.per_prompt(metric, category), b.per_prompt(metric, category)
    if pa.keys() != pb.keys():
        raise ValueError("The two evaluations used different prompts; compare models on the same prompts and seeds.")
    d = [pb[p] - pa[p] for p in pa]
    return float(np.mean(d)), bootstrap_ci(d)


def comparison_table(results: dict[str, EvalResult], metric: str = "strict", baseline: str | None = None) -> str:
    """Markdown: one row per model, `metric` in % (95 % CI) per category, and the paired change vs `baseline`
    (a column only when there is another model to compare with it)."""
    if not results:
        raise ValueError("No evaluations to compare.")
    baseline = baseline or next(iter(results))
    base = results[baseline]
    cats = base.categories()
    compared = len(results) > 1
    columns = ["model", *cats, *([f"Δ all vs {baseline} (95 % CI)"] if compared else []), "well-formed %",
               "diversity", "MI"]
    rows = []
    for name, res in results.items():
        s = res.summary()
        cells = [f"{100 * s[c][metric]:.1f} ({100 * s[c][metric + '_ci'][0]:.1f}–{100 * s[c][metric + '_ci'][1]:.1f})"
                 if c in s else "–" for c in cats]
        if name == baseline:
            delta = "–"
        else:
            d, (lo, hi) = paired_delta(base, res, metric, "all")
            delta = f"{100 * d:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"
        wf = f"{100 * s['all']['well_formed']:.1f}" if "well_formed" in s["all"] else "–"
        rows.append([name, *cells, *([delta] if compared else []), wf, f"{s['all']['diversity']:.3f}", f"{s['all']['mi']:.1f}"])
    return markdown_table(rows, columns, align="l" + "r" * (len(columns) - 1))


# --------------------------------------------------------------------------- selection signals


def as_grouped(name: str, values) -> np.ndarray:
    """`values` as a [prompts, candidates] float array, or one sentence on why it is not one."""
    a = np.asarray(values, float)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must be a [prompts, candidates] array, got shape {a.shape}; "
                         "reshape per-candidate values with Candidates.grouped or .reshape(P, N).")
    return a


def within_prompt_spearman(x, y) -> float:
    """Spearman's ρ between x and y across the candidates of each prompt ([P, N] each), averaged over
    prompts. Ties get average ranks; prompts where x or y is constant are left out (nan if none is left)."""
    from scipy.stats import rankdata

    x, y = as_grouped("x", x), as_grouped("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same [prompts, candidates] shape, got {x.shape} and {y.shape}.")
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    norm = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    ok = norm > 0
    return float(np.mean((rx * ry).sum(1)[ok] / norm[ok])) if ok.any() else float("nan")


def best_of_n(values, key, ns) -> np.ndarray:
    """For each n in `ns`: per prompt, `values` of the candidate with the highest `key` among the
    prompt's first n candidates (the first one on ties); returns [len(ns), P].

    Candidate k of a prompt has the same seed whatever N is (:func:`~minitune.sampling.candidate_seed`),
    so the first n of N candidates are exactly what sampling n would give. A random key gives a random
    pick, the no-selection reference."""
    values, key = as_grouped("values", values), as_grouped("key", key)
    if values.shape != key.shape:
        raise ValueError(f"values and key must have the same shape, got {values.shape} and {key.shape}.")
    rows = np.arange(len(values))
    out = []
    for n in ns:
        if not 1 <= n <= values.shape[1]:
            raise ValueError(f"n must lie in 1..{values.shape[1]} (the candidates per prompt), got {n}.")
        out.append(values[rows, key[:, :n].argmax(1)])
    return np.stack(out)


def selection_table(signals: dict, strict, soft, area=None) -> str:
    """Markdown: how well each selection signal ([P, N], higher = keep) picks candidates, by the oracle.

    Columns: strict score of the signal's top-1 per prompt in % (95 % CI over prompts), its ratio to the
    pool mean (the strict score over all candidates, what a random pick scores on average; a seeded random
    ranking's own row scatters around 1 by luck), soft score of the top-1, strict score
    of the bottom-1, and the within-prompt Spearman ρ with the soft score and, if given, the coloured area.
    """
    strict, soft = as_grouped("strict", strict), as_grouped("soft", soft)
    chance = float(strict.mean())
    columns = ["signal", "top-1 strict % (95 % CI)", "× pool mean", "top-1 soft %", "bottom-1 strict %", "ρ(soft)",
               *(["ρ(area)"] if area is not None else [])]
    rows = []
    for name, key in signals.items():
        key = as_grouped(name, key)
        top = best_of_n(strict, key, [key.shape[1]])[0]
        lo, hi = bootstrap_ci(top)
        ratio = f"{top.mean() / chance:.2f}" if chance > 0 else "–"
        cells = [f"{100 * top.mean():.1f} ({100 * lo:.1f}–{100 * hi:.1f})", ratio,
                 f"{100 * best_of_n(soft, key, [key.shape[1]])[0].mean():.1f}",
                 f"{100 * best_of_n(strict, -key, [key.shape[1]])[0].mean():.1f}",
                 f"{within_prompt_spearman(key, soft):+.2f}"]
        if area is not None:
            cells.append(f"{within_prompt_spearman(key, area):+.2f}")
        rows.append([name, *cells])
    return markdown_table(rows, columns, align="l" + "r" * (len(columns) - 1))
