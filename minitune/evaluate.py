"""Sample a pipeline on prompts and judge the images: alignment tables with confidence intervals.

In the Shapes world the judge is the exact oracle (:func:`minitune.toy.world.evaluate`). Every
image has its own seed, derived from ``(seed, prompt, index)``, so an image does not depend on
which other prompts were sampled with it or on the batch size.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from tqdm.auto import tqdm

from .toy import world


def image_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of the `index`-th image of `prompt` (stable across runs and batchings)."""
    return int(hashlib.sha1(f"{seed}:{prompt}:{index}".encode()).hexdigest()[:12], 16)


def generate(pipe, prompts: list[str], n_per_prompt: int = 4, guidance_scale: float = 4.0,
             num_inference_steps: int = 25, seed: int = 0, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """Images [len(prompts) * n_per_prompt, 3, H, W] in [-1, 1], prompt-major order."""
    if not prompts:
        raise ValueError("No prompts to sample: give at least one prompt.")
    jobs = [(p, k) for p in prompts for k in range(n_per_prompt)]
    device = pipe._execution_device
    out = []
    for i in tqdm(range(0, len(jobs), batch_size), desc="sampling", disable=not progress):
        chunk = jobs[i : i + batch_size]
        gens = [torch.Generator(device).manual_seed(image_seed(seed, p, k)) for p, k in chunk]
        out.append(pipe([p for p, _ in chunk], guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                        generator=gens, output_type="pt").images.cpu())
    return torch.cat(out)


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
