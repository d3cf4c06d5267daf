"""How low can the point-wise re-noising MI's spread go at 64 evaluations? The ε noise at each noise level.

``perf/renoise_variance.py`` measures the best design (fitted proposal, stratified draws) at 8 %,
against a goal of 5 %. This study asks whether *any* choice of noise levels could reach the goal.
For each ground-truth render it measures, at L noise levels (evenly spaced in λ = log SNR over the
whole grid, both ends included), the point-wise integrand f for P antithetic pairs (ε, −ε), and from them

* μ(t), the mean, and σ(t)², the variance of one draw over ε;
* σ₊(t)², the variance of a pair's mean ½(f(ε) + f(−ε)) (the even part of f in ε), and σ₋(t)² = E[f₋²]
  for the odd part f₋ = ½(f(ε) − f(−ε)), whose mean is 0; σ² = σ₊² + σ₋².

Between levels μ and σ are interpolated linearly in λ = log SNR, as ``fit_proposal`` does. The
estimators target S = Σ_t w_t μ(t) (w_t = ½|Δλ|, the grid t = 1..T−1). For any design that chooses its
noise levels independently of ε and spends N evaluations on independent ε, the variance is at least

    (Σ_t w_t σ(t))² / N        (Cauchy–Schwarz; Neyman's allocation n_t ∝ w_t σ(t) attains it),

and for antithetic pairs, N / 2 of them, (Σ_t w_t σ₊(t))² / (N / 2). So the floor of the relative std is
Σ_t w_t σ(t) / (√N |S|): no stratification, proposal or importance weighting goes below it; only
noise draws that are not independent (pairs, control variates) can. Both floors leave out the error of
drawing the noise levels at random, which an unbiased design cannot avoid; ``design_rel_std`` adds it for
``renoise_mi``'s stratified design under each proposal. The per-level means carry their own noise, which
that prediction counts as spread of w μ / q within strata, so it runs high (it ranks designs; it does not
replace measuring them). The table also gives the share of Σ w σ and of S in four bands of λ, which says
at which noise levels the spread sits.

    python -m benchmarks.studies.renoise_floor [--images 3] [--levels 48] [--pairs 12] [--pilot 8]
                                               [--results STEM]
"""

import json
import math
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from benchmarks.perf.renoise_variance import proposals, rms
from minitune import mi
from minitune.io import markdown_table

N = 64  # ε-pair evaluations per image, as in perf/renoise_variance.py
BANDS = ((5.0, math.inf), (0.0, 5.0), (-5.0, 0.0), (-math.inf, -5.0))  # λ bands, high SNR first


def level_draws(pair, x, ab, levels: int, pairs: int, seed: int, batch_size: int):
    """The grid timesteps used as levels and the point-wise integrand [levels, pairs, 2] of P antithetic pairs each."""
    grid, _ = mi._grid(ab, 1)
    lam = mi.log_snr(ab[grid]).double()  # falls as t grows
    at = torch.linspace(float(lam[0]), float(lam[-1]), levels, dtype=torch.float64)
    idx = torch.searchsorted(-lam, -at).clamp(max=len(grid) - 1).unique()  # evenly spaced in λ, ends included
    t = grid[idx].repeat_interleave(2 * pairs)[:, None]
    with torch.no_grad():
        f = mi._integrand(pair, x[None], ab, t, torch.Generator().manual_seed(seed), "pointwise", batch_size, None,
                          antithetic=True).double()
    return grid[idx], f.view(len(idx), pairs, 2)


def profiles(ab, levels_t, f) -> tuple[dict, dict]:
    """μ, σ, σ₊, σ₋ at the levels, and the same interpolated (linearly in λ) over the grid t = 1..T−1."""
    even, odd = f.mean(2), (f[..., 0] - f[..., 1]) / 2
    per_level = {"mu": even.mean(1), "sd": (even.var(1) + odd.square().mean(1)).sqrt(), "sd_even": even.std(1),
                 "sd_odd": odd.square().mean(1).sqrt()}
    grid, _ = mi._grid(ab, 1)
    lam, at = mi.log_snr(ab[grid]).double().numpy(), mi.log_snr(ab[levels_t]).double().numpy()
    return per_level, {k: torch.from_numpy(np.interp(-lam, -at, v.numpy())) for k, v in per_level.items()}


def design_rel_std(ab, on_grid: dict, q: torch.Tensor, antithetic: bool, resolution: int = 256) -> float:
    """The relative std that :func:`minitune.mi.renoise_mi`'s stratified design at N evaluations would have under
    the proposal q, given the image's μ and σ (σ₊ for antithetic pairs) over the grid: with H strata of equal
    q-mass and m units each, Var = Σ_h Var(g_h) / (m H²), g = (w/q)(t) × (one draw, or one pair's mean)."""
    _, w = mi._grid(ab, 1)
    w, q = w.double(), q.double()
    strata, per = (N // 2, 1) if antithetic else (N // 2, 2)
    u = (torch.arange(strata, dtype=torch.float64)[:, None] + (torch.arange(resolution) + 0.5) / resolution) / strata
    idx = mi._inverse_cdf(q, u.reshape(-1)).view(strata, resolution)
    ratio, mu = (w / q)[idx], on_grid["mu"][idx]
    var = on_grid["sd_even" if antithetic else "sd"][idx].square()
    g_mean = (ratio * mu).mean(1)
    g_var = (ratio.square() * (mu.square() + var)).mean(1) - g_mean.square()
    return float((g_var / per).sum().sqrt() / strata) / abs(float((w * on_grid["mu"]).sum()))


def floors(ab, on_grid: dict, props: dict) -> dict:
    """The two floors of the relative std, the predicted spread of each design under each proposal, and where
    the spread sits in λ."""
    grid, w = mi._grid(ab, 1)
    w = w.double()
    target = float((w * on_grid["mu"]).sum())
    designs = {f"{name}, {'antithetic' if anti else 'independent'}": design_rel_std(ab, on_grid, q / q.sum(), anti)
               for name, q in props.items() for anti in (False, True)}
    for anti, sd, name in ((False, "sd", "own (this image's optimum), independent"),
                           (True, "sd_even", "own antithetic, antithetic")):
        own = w * (on_grid["mu"].square() + on_grid[sd].square()).sqrt()
        designs[name] = design_rel_std(ab, on_grid, own / own.sum(), anti)
    out = {"target": target, "designs": designs,
           "floor_independent": float((w * on_grid["sd"]).sum()) / math.sqrt(N) / abs(target),
           "floor_antithetic": float((w * on_grid["sd_even"]).sum()) / math.sqrt(N / 2) / abs(target),
           "odd_share_of_variance": float((w * on_grid["sd_odd"].square()).sum() / (w * on_grid["sd"].square()).sum())}
    lam_t = mi.log_snr(ab[grid]).double()
    for lo, hi in BANDS:
        band = (lam_t > lo) & (lam_t <= hi)
        out[f"band {lo:g}..{hi:g}"] = {"share_of_spread": float((w * on_grid["sd"])[band].sum() / (w * on_grid["sd"]).sum()),
                                       "share_of_target": float((w * on_grid["mu"])[band].sum() / target)}
    return out


def pilot_proposals(den, ab, pilot: int) -> dict:
    """The proposals :func:`renoise_mi` is run with in perf/renoise_variance.py: the default, and one fitted on the
    same pilot renders for each design."""
    from minitune.toy import world

    grid, w = mi._grid(ab, 1)
    prompts = world.sample_prompts("train", pilot, seed=77)
    fitted = proposals(den.eps_pair(den.encode(prompts)), world.render_batch(prompts, list(range(pilot))), ab)
    return {"default logistic": mi._proposal("importance", ab, grid, w), "fitted on the pilot": fitted["old"],
            "fitted on the pilot (antithetic)": fitted["new"]}


def markdown(rows: list[dict], measured: dict, settings: dict, pooled: dict) -> str:
    """The results page: per render, the two floors beside the measured spread of the best design; the predicted
    spread of each design; where the spread sits in λ."""
    bands = [k for k in rows[0] if k.startswith("band")]
    floors_table = markdown_table(
        [[r["prompt"], f"{r['target']:.2f}", f"{100 * r['floor_independent']:.1f} %", f"{100 * r['floor_antithetic']:.1f} %",
          f"{measured.get(r['prompt'], float('nan')) * 100:.1f} %", f"{100 * r['odd_share_of_variance']:.0f} %"] for r in rows],
        ["prompt", "point-wise MI S (nats)", "floor, independent draws", "floor, antithetic pairs", "measured, best design",
         "odd share of the variance"], align="lrrrrr")
    designs_table = markdown_table(
        [[d, *(f"{100 * r['designs'][d]:.1f} %" for r in rows), f"{100 * rms(r['designs'][d] for r in rows):.1f} %"]
         for d in rows[0]["designs"]],
        ["design", *(r["prompt"] for r in rows), "root mean square"], align="l" + "r" * (len(rows) + 1))
    bands_table = markdown_table(
        [[r["prompt"], *(f"{100 * r[b]['share_of_spread']:.0f} % of σ, {100 * r[b]['share_of_target']:.0f} % of S"
                         for b in bands)] for r in rows],
        ["prompt", *(b.replace("band ", "λ ") for b in bands)], align="l" + "r" * len(bands))
    return "\n".join([
        f"The floor of the relative std of the point-wise re-noising MI at {N} evaluations per image, for any "
        "choice of noise levels with independent noise draws (Σ w σ / (√N |S|)) and for antithetic pairs; "
        f"measured on each render at {settings['levels']} noise levels × {settings['pairs']} antithetic pairs. "
        f"Settings: {settings}.", "", floors_table, "",
        f"Root mean square over the renders: floor **{100 * pooled['floor_independent']:.1f} %** with independent "
        f"draws, **{100 * pooled['floor_antithetic']:.1f} %** with antithetic pairs, against the goal of 5 %.", "",
        f"What `renoise_mi`'s stratified design ({N // 2} strata of equal proposal mass; 2 independent draws or 1 "
        "antithetic pair each) would give under each proposal, from the same μ and σ (\"own\": a proposal fitted "
        "to this very image, ∝ w √(μ² + σ²), which no pilot can know; the best this design can do):", "",
        designs_table, "",
        "Where the spread sits (share of Σ w σ, and of the MI S, by band of λ = log SNR; high SNR first):", "",
        bands_table]) + "\n"


def summary(rows: list[dict]) -> dict:
    """Root mean square of each floor over the renders."""
    return {k: rms(r[k] for r in rows) for k in ("floor_independent", "floor_antithetic")}


def measured_spread(path=Path("book/results/renoise_variance.json")) -> dict:
    """The best design's measured relative std per prompt from the committed variance results, where present."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    best = data.get("best_design", "old")
    return {r["prompt"]: r[best]["pointwise"]["rel_std"] for r in data.get("shapes", [])}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None)
    ap.add_argument("--images", type=int, default=3, help="ground-truth renders of training prompts (as perf/renoise_variance)")
    ap.add_argument("--levels", type=int, default=48, help="noise levels per render")
    ap.add_argument("--pairs", type=int, default=12, help="antithetic pairs per level (2 evaluations each)")
    ap.add_argument("--pilot", type=int, default=8, help="pilot images of the fitted proposals (as perf/renoise_variance)")
    run = harness.start(ap, argv)
    args = run.args
    for name in ("images", "levels"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.pairs < 2:
        raise ValueError(f"--pairs must be at least 2 (a variance needs two pairs), got {args.pairs}.")
    from minitune.families import denoiser_for
    from minitune.toy import world

    den = denoiser_for(harness.load_model())
    ab = mi.alphas_cumprod_of(den.scheduler)
    prompts = world.sample_prompts("train", args.images, seed=0)
    renders = world.render_batch(prompts, list(range(args.images)))
    props = pilot_proposals(den, ab, args.pilot)
    rows = []
    for i, (prompt, x) in enumerate(zip(prompts, renders)):
        levels_t, f = level_draws(den.eps_pair(den.encode([prompt])), x, ab, args.levels, args.pairs, seed=i, batch_size=128)
        per_level, on_grid = profiles(ab, levels_t, f)
        rows.append({"prompt": prompt, **floors(ab, on_grid, props), "levels_t": levels_t.tolist(),
                     **{k: v.tolist() for k, v in per_level.items()}})
        print(f"{prompt:<44} S {rows[-1]['target']:7.2f}  floor {100 * rows[-1]['floor_independent']:5.1f} % "
              f"(antithetic {100 * rows[-1]['floor_antithetic']:5.1f} %)", flush=True)
    settings = {"evaluations": N, "images": args.images, "levels": args.levels, "pairs": args.pairs, "pilot": args.pilot,
                "threads": torch.get_num_threads()}
    pooled = summary(rows)
    md = markdown(rows, measured_spread(), settings, pooled)
    print("\n" + md)
    run.write({"settings": settings, **pooled, "renders": rows}, md, model="shipped")
    print(f"({run.seconds():.0f} s)")
    return 0


if __name__ == "__main__":
    harness.main(main)
