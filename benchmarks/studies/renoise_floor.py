"""How low can the point-wise re-noising MI's spread go at 64 evaluations? The ε noise at each noise level.

``perf/renoise_variance.py`` measures the best design (fitted proposal, stratified draws) at 8 %,
against a goal of 5 %. This study asks whether *any* choice of noise levels could reach the goal.
For each ground-truth render it measures, at L noise levels (quantiles of the default logistic
proposal), the point-wise integrand f for P antithetic pairs (ε, −ε), and from them

* μ(t), the mean, and σ(t)², the variance of one draw over ε;
* σ₊(t)², the variance of a pair's mean ½(f(ε) + f(−ε)) (the even part of f in ε), and σ₋(t)² = E[f₋²]
  for the odd part f₋ = ½(f(ε) − f(−ε)), whose mean is 0; σ² = σ₊² + σ₋².

Between levels μ and σ are interpolated linearly in λ = log SNR, as ``fit_proposal`` does. The
estimators target S = Σ_t w_t μ(t) (w_t = ½|Δλ|, the grid t = 1..T−1). For any design that chooses its
noise levels independently of ε and spends N evaluations on independent ε, the variance is at least

    (Σ_t w_t σ(t))² / N        (Cauchy–Schwarz; Neyman's allocation n_t ∝ w_t σ(t) attains it),

and for antithetic pairs, N / 2 of them, (Σ_t w_t σ₊(t))² / (N / 2). So the floor of the relative std is
Σ_t w_t σ(t) / (√N |S|): no stratification, proposal or importance weighting goes below it; only
noise draws that are not independent (pairs, control variates) can. The table also gives the share of
Σ w σ and of S in four bands of λ, which says at which noise levels the spread sits.

    python -m benchmarks.studies.renoise_floor [--images 3] [--levels 32] [--pairs 16] [--results STEM]
"""

import math

import numpy as np
import torch

from benchmarks import harness
from minitune import mi

N = 64  # ε-pair evaluations per image, as in perf/renoise_variance.py
BANDS = ((5.0, math.inf), (0.0, 5.0), (-5.0, 0.0), (-math.inf, -5.0))  # λ bands, high SNR first


def level_draws(pair, x, ab, levels: int, pairs: int, seed: int, batch_size: int):
    """The grid timesteps used as levels and the point-wise integrand [levels, pairs, 2] of P antithetic pairs each."""
    grid, w = mi._grid(ab, 1)
    q = mi._proposal("importance", ab, grid, w)
    idx = mi._inverse_cdf(q, (torch.arange(levels, dtype=torch.float64) + 0.5) / levels).unique()
    t = grid[idx].repeat_interleave(2 * pairs)[:, None]
    with torch.no_grad():
        f = mi._integrand(pair, x[None], ab, t, torch.Generator().manual_seed(seed), "pointwise", batch_size, None,
                          antithetic=True).double()
    return grid[idx], f.view(len(idx), pairs, 2)


def floors(ab, levels_t, f) -> dict:
    """μ, σ, σ₊, σ₋ at the levels, interpolated over the grid, and the two floors of the relative std."""
    even, odd = f.mean(2), (f[..., 0] - f[..., 1]) / 2
    per_level = {"mu": even.mean(1), "sd": (even.var(1) + odd.square().mean(1)).sqrt(), "sd_even": even.std(1),
                 "sd_odd": odd.square().mean(1).sqrt()}
    grid, w = mi._grid(ab, 1)
    lam, at = mi.log_snr(ab[grid]).double().numpy(), mi.log_snr(ab[levels_t]).double().numpy()
    on_grid = {k: torch.from_numpy(np.interp(-lam, -at, v.numpy())) for k, v in per_level.items()}
    w = w.double()
    target = float((w * on_grid["mu"]).sum())
    out = {"target": target,
           "floor_independent": float((w * on_grid["sd"]).sum()) / math.sqrt(N) / abs(target),
           "floor_antithetic": float((w * on_grid["sd_even"]).sum()) / math.sqrt(N / 2) / abs(target),
           "odd_share_of_variance": float((w * on_grid["sd_odd"].square()).sum() / (w * on_grid["sd"].square()).sum())}
    lam_t = torch.from_numpy(lam)
    for lo, hi in BANDS:
        band = (lam_t > lo) & (lam_t <= hi)
        out[f"band {lo:g}..{hi:g}"] = {"share_of_spread": float((w * on_grid["sd"])[band].sum() / (w * on_grid["sd"]).sum()),
                                       "share_of_target": float((w * on_grid["mu"])[band].sum() / target)}
    return out


def markdown(rows: list[dict], measured: dict, settings: dict) -> str:
    """The results page: per render, the two floors beside the measured spread of the best design."""
    bands = [k for k in rows[0] if k.startswith("band")]
    lines = [f"The floor of the relative std of the point-wise re-noising MI at {N} evaluations per image, for any "
             "choice of noise levels with independent noise draws (Σ w σ / (√N |S|)) and for antithetic pairs; "
             f"measured on each render at {settings['levels']} noise levels × {settings['pairs']} antithetic pairs. "
             f"Settings: {settings}.", "",
             "| prompt | point-wise MI S (nats) | floor, independent draws | floor, antithetic pairs | "
             "measured, best design | odd share of the variance |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['prompt']} | {r['target']:.2f} | {100 * r['floor_independent']:.1f} % | "
                     f"{100 * r['floor_antithetic']:.1f} % | {measured.get(r['prompt'], float('nan')) * 100:.1f} % | "
                     f"{100 * r['odd_share_of_variance']:.0f} % |")
    s = summary(rows)
    lines += ["", f"Root mean square over the renders: floor **{100 * s['floor_independent']:.1f} %** with independent "
              f"draws, **{100 * s['floor_antithetic']:.1f} %** with antithetic pairs, against the goal of 5 %.", "",
              "Where the spread sits (share of Σ w σ, and of the MI S, by band of λ = log SNR; high SNR first):", "",
              "| prompt | " + " | ".join(b.replace("band ", "λ ") for b in bands) + " |", "|---|" + "---:|" * len(bands)]
    for r in rows:
        lines.append(f"| {r['prompt']} | " + " | ".join(f"{100 * r[b]['share_of_spread']:.0f} % of σ, "
                                                     f"{100 * r[b]['share_of_target']:.0f} % of S" for b in bands) + " |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> dict:
    """Root mean square of each floor over the renders."""
    return {k: math.sqrt(sum(r[k] ** 2 for r in rows) / len(rows)) for k in ("floor_independent", "floor_antithetic")}


def measured_spread(path="book/results/renoise_variance.json") -> dict:
    """The best design's measured relative std per prompt from the committed variance results, where present."""
    import json
    from pathlib import Path

    if not Path(path).exists():
        return {}
    data = json.loads(Path(path).read_text())
    best = data.get("best_design", "old")
    return {r["prompt"]: r[best]["pointwise"]["rel_std"] for r in data.get("shapes", [])}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None)
    ap.add_argument("--images", type=int, default=3, help="ground-truth renders of training prompts (as perf/renoise_variance)")
    ap.add_argument("--levels", type=int, default=32, help="noise levels per render")
    ap.add_argument("--pairs", type=int, default=16, help="antithetic pairs per level (2 evaluations each)")
    run = harness.start(ap, argv)
    args = run.args
    for name in ("images", "levels"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.pairs < 2:
        raise ValueError(f"--pairs must be at least 2 (a variance needs two pairs), got {args.pairs}.")
    from minitune.denoisers import denoiser_for
    from minitune.toy import world

    den = denoiser_for(harness.load_model())
    ab = mi.alphas_cumprod_of(den.scheduler)
    prompts = world.sample_prompts("train", args.images, seed=0)
    renders = world.render_batch(prompts, list(range(args.images)))
    rows = []
    for i, (prompt, x) in enumerate(zip(prompts, renders)):
        levels_t, f = level_draws(den.eps_pair(den.encode([prompt])), x, ab, args.levels, args.pairs, seed=i, batch_size=128)
        rows.append({"prompt": prompt, **floors(ab, levels_t, f)})
        print(f"{prompt:<44} S {rows[-1]['target']:7.2f}  floor {100 * rows[-1]['floor_independent']:5.1f} % "
              f"(antithetic {100 * rows[-1]['floor_antithetic']:5.1f} %)", flush=True)
    settings = {"evaluations": N, "images": args.images, "levels": args.levels, "pairs": args.pairs,
                "threads": torch.get_num_threads()}
    md = markdown(rows, measured_spread(), settings)
    print("\n" + md)
    run.write({"settings": settings, **summary(rows), "renders": rows}, md, model="shipped")
    print(f"({run.seconds():.0f} s)")
    return 0


if __name__ == "__main__":
    harness.main(main)
