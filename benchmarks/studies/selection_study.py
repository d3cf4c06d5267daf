"""Does MI pick the better-aligned candidate? The selection study on the shipped base model.

    python benchmarks/selection_study.py [--prompts 100] [--candidates 16] [--cfg 2] [--out runs/selection]

For training-split prompts (seeded, balanced over categories), N candidates each are sampled with
CFG while the paper's trajectory MI is recorded, the per-step integrand is kept, and then every
candidate is scored by several signals. For each signal the script prints the oracle's strict
score of the top-1 candidate per prompt (bootstrap 95 % CI over prompts) and its ratio to what a
random pick scores on average (the mean over all candidates), the top-1's soft score, the
bottom-1's strict score, and the within-prompt Spearman correlation with the soft score and with
the coloured area (:func:`minitune.evaluate.selection_table`). Raw
per-candidate values go to ``<out>/candidates.json`` for the book. Two more tables say what each
signal's top-1 picks get wrong (the oracle's failure modes) and, failure mode by failure mode, how
often the signal ranks an aligned candidate above a same-prompt candidate with only that failure.

The sampled candidates are kept in ``<out>/candidates.pt``, the re-noising scores in
``<out>/renoise.pt``, ``<out>/likelihood.pt`` and ``<out>/neighbourhood.pt``; a rerun with the same model, prompts, candidates,
CFG, steps and seed (and re-noising samples) reuses them, so the tables can be redone without
sampling again.

Signals:
- ``trajectory (paper)``: MI-TUNE Alg. 2, κ_t-weighted mean over steps with t > 50;
- ``trajectory t∈[a,b)``: the same restricted to a quarter of the schedule;
- ``re-noise point-wise`` / ``re-noise orthogonal``: :func:`minitune.mi.renoise_mi` on the final image;
- ``contrast vs edits``: point-wise MI under the prompt minus the largest point-wise MI under its
  near-miss edits (:func:`minitune.toy.world.edits`), on common noise, so log p(x) cancels;
- ``contrast vs near misses (± one object)``: the same against :func:`minitune.toy.world.near_misses`,
  which adds to the edits the prompts with one object more or one fewer (``--contrast-samples``,
  cached in ``<out>/neighbourhood.pt``);
- ``log p(x|y)`` / ``log p(x)``, denoising bound: the two halves of the point-wise form
  (``form="conditional"`` / ``"unconditional"``, t ≥ 50), each up to a constant shared by the
  candidates of a prompt, which are re-noised with common noise; their difference; and the
  halfway mix log p(x|y) − ½ log p(x);
- ``trajectory / coloured area``: the paper's MI per coloured pixel (a diagnostic of the area confound);
- references: ``random``, ``coloured area`` and ``oracle (soft)``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from minitune import GUIDANCE_SCALE
from minitune import mi as M
from minitune.denoisers import denoiser_for
from minitune.evaluate import pairwise_failure_table, selection_table, top1_failure_table, within_prompt_spearman
from minitune.sampling import Candidates, sample_with_mi
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline


def renoise_scores(pipe, cands, n_samples, seed, chunk=64):
    """Point-wise and orthogonal re-noising MI, and the contrast against edited prompts, per candidate."""
    den = denoiser_for(pipe)
    ab = M.alphas_cumprod_of(den.scheduler)
    uniq = sorted(set(cands.prompts))
    conds = den.encode(uniq)
    out = {"pointwise": [], "orthogonal": [], "contrast": []}
    n = len(cands.prompts)
    for s in tqdm(range(0, n, chunk), desc="re-noising"):
        rows = range(s, min(n, s + chunk))
        x0, prompts = cands.latents[s : s + len(rows)], cands.prompts[s : s + len(rows)]
        contrast, pointwise = M.contrast_mi(den, x0, prompts, [list(world.edits(p).values()) for p in prompts],
                                            seeds=[seed + r for r in rows], n_samples=n_samples, batch_size=None)
        pair = den.eps_pair(conds.take(torch.tensor([uniq.index(p) for p in prompts])))
        gens = [torch.Generator().manual_seed(seed + r) for r in rows]
        out["orthogonal"].append(M.renoise_mi(pair, x0, ab, n_samples=n_samples, generator=gens, form="orthogonal")[0])
        out["pointwise"].append(pointwise)
        out["contrast"].append(contrast)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def neighbourhood_scores(pipe, cands, n_samples, seed, chunk=64):
    """The contrast against every near miss of :func:`minitune.toy.world.near_misses` (the edits, and
    one object more or fewer), per candidate, on the same noise draws as :func:`renoise_scores`."""
    den = denoiser_for(pipe)
    out, n = [], len(cands.prompts)
    for s in tqdm(range(0, n, chunk), desc="contrast vs near misses"):
        prompts = cands.prompts[s : s + chunk]
        out.append(M.contrast_mi(den, cands.latents[s : s + chunk], prompts, [world.near_misses(p) for p in prompts],
                                 seeds=[seed + r for r in range(s, s + len(prompts))], n_samples=n_samples,
                                 batch_size=256)[0])
    return {"contrast": torch.cat(out).numpy()}


def likelihood_scores(pipe, cands, n_samples, seed, t_min=50):
    """log p(x|y) and log p(x) up to a shared constant (the halves of the point-wise form), per candidate.

    All candidates of a prompt are re-noised with the same t and ε (one seed per prompt), so the
    constant and most of the noise cancel between them; only within-prompt ranks are meaningful.
    """
    den = denoiser_for(pipe)
    ab = M.alphas_cumprod_of(den.scheduler)
    N = cands.n_per_prompt
    uniq = [cands.prompts[s] for s in range(0, len(cands.prompts), N)]
    conds = den.encode(uniq)
    out = {"conditional": [], "unconditional": []}
    for p in tqdm(range(len(uniq)), desc="likelihoods"):
        pair = den.eps_pair(conds.take(torch.full((N,), p)))
        gens = [torch.Generator().manual_seed(seed + 100_000 + p) for _ in range(N)]
        est = M.renoise_mi(pair, cands.latents[p * N : (p + 1) * N], ab, n_samples=n_samples, generator=gens,
                           form=tuple(out), t_min=t_min)
        for k in out:
            out[k].append(est[k][0])
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def cached_scores(path: Path, key: dict, compute):
    """Scores {name: array} from `path` if it was made with `key`, else computed, timed and saved; with
    the seconds they took. Zero samples in the key means the signal is off: ({}, 0)."""
    if not list(key.values())[-1]:
        return {}, 0.0
    kept = torch.load(path) if path.is_file() else {}
    if kept.get("key") == key:
        print(f"reusing the scores in {path}")
        return {k: v.numpy() for k, v in kept["scores"].items()}, kept["seconds"]
    t0 = time.time()
    scores = compute()
    seconds = time.time() - t0
    torch.save({"key": key, "scores": {k: torch.from_numpy(v) for k, v in scores.items()}, "seconds": seconds}, path)
    return scores, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved Shapes pipeline (default: the shipped base model)")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--cfg", type=float, default=GUIDANCE_SCALE, help="guidance scale (default: the documented one)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--renoise-samples", type=int, default=16, help="re-noising samples per candidate (0: skip re-noising)")
    ap.add_argument("--likelihood-samples", type=int, default=8,
                    help="re-noising samples for log p(x|y) and log p(x) per candidate (0: skip)")
    ap.add_argument("--contrast-samples", type=int, default=8,
                    help="re-noising samples per candidate and prompt for the contrast vs near misses (0: skip it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/selection")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pipe = load_pipeline(args.model)
    prompts = world.sample_prompts("train", args.prompts, seed=1000 + args.seed)
    key = {k: getattr(args, k) for k in ("model", "prompts", "candidates", "cfg", "steps", "seed")}
    cache = out / "candidates.pt"
    kept = torch.load(cache) if cache.is_file() else {}
    if kept.get("key") == key:
        cands, t_sample = Candidates(**kept["candidates"]), kept.get("seconds")  # older caches lack the time
        print(f"reusing the candidates sampled into {cache}")
    else:
        cands = sample_with_mi(pipe, prompts, args.candidates, guidance_scale=args.cfg, num_inference_steps=args.steps,
                               seed=args.seed, keep_curve=True)
        t_sample = time.time() - t0
        torch.save({"key": key, "candidates": vars(cands), "seconds": t_sample}, cache)
    ev = world.evaluate(cands.images, cands.prompts)
    G = cands.grouped
    soft, strict = G([r["soft"] for r in ev.records]).numpy(), G([r["strict"] for r in ev.records]).numpy()
    area = G([r["area"] for r in ev.records]).numpy().astype(float)
    failures = [[ev.records[i]["failures"] for i in group] for group in np.arange(len(ev.records)).reshape(area.shape)]

    ab = M.alphas_cumprod_of(pipe.scheduler)
    ts = cands.timesteps
    kappa = M.paper_weights(ab, ts, truncation=0).float()
    signals = {"trajectory (paper)": cands.mi.numpy()}
    T = len(ab)
    for a in range(0, T, T // 4):
        band = ((ts >= max(a, 51)) & (ts < a + T // 4)).float()
        w = kappa * band
        signals[f"trajectory t∈[{max(a, 51)},{a + T // 4})"] = (cands.curve * w).sum(1).div(band.sum()).numpy()
    rn, t_renoise = cached_scores(out / "renoise.pt", {**key, "renoise_samples": args.renoise_samples},
                                  lambda: renoise_scores(pipe, cands, args.renoise_samples, args.seed))
    lk, t_lk = cached_scores(out / "likelihood.pt", {**key, "likelihood_samples": args.likelihood_samples},
                             lambda: likelihood_scores(pipe, cands, args.likelihood_samples, args.seed))
    nb, t_nb = cached_scores(out / "neighbourhood.pt", {**key, "contrast_samples": args.contrast_samples},
                             lambda: neighbourhood_scores(pipe, cands, args.contrast_samples, args.seed))
    rho_line = ""
    if rn:
        signals["re-noise point-wise"] = rn["pointwise"]
        signals["re-noise orthogonal"] = rn["orthogonal"]
        signals["contrast vs edits"] = rn["contrast"]
        rho = within_prompt_spearman(G(rn["pointwise"]).numpy(), G(signals["trajectory (paper)"]).numpy())
        rho_line = f"Within-prompt Spearman ρ between re-noising point-wise MI and trajectory MI: {rho:+.2f}\n"
    if nb:
        signals["contrast vs near misses (± one object)"] = nb["contrast"]
    if lk:
        signals["log p(x|y), denoising bound"] = lk["conditional"]
        signals["log p(x), denoising bound"] = lk["unconditional"]
        signals["their difference (point-wise MI, common noise)"] = lk["conditional"] - lk["unconditional"]
        signals["log p(x|y) − ½ log p(x)"] = lk["conditional"] - 0.5 * lk["unconditional"]
    signals["trajectory / coloured area"] = signals["trajectory (paper)"] / np.maximum(area.reshape(-1), 1.0)
    rng = np.random.default_rng(args.seed)
    signals["random"] = rng.standard_normal(len(cands.prompts))
    signals["coloured area"] = area.reshape(-1)
    signals["oracle (soft)"] = soft.reshape(-1)

    grouped = {k: G(v).numpy().astype(float) for k, v in signals.items()}
    mean_strict = float(strict.mean())
    report = (
        f"{len(prompts)} training-split prompts × {args.candidates} candidates, CFG {args.cfg}, {args.steps} DDPM steps, "
        f"re-noising with {args.renoise_samples} samples; seed {args.seed}. "
        f"Sampling took {'an unrecorded time' if t_sample is None else f'{t_sample:.0f} s'}, "
        f"re-noising {t_renoise:.0f} s, likelihoods ({args.likelihood_samples} samples) {t_lk:.0f} s, "
        f"contrast vs near misses ({args.contrast_samples} samples) {t_nb:.0f} s (when first computed).\n"
        f"Mean strict score of all candidates: {100 * mean_strict:.1f} %; prompts with at least one strictly aligned "
        f"candidate: {100 * float(strict.max(1).mean()):.1f} %.\n\n"
        f"{selection_table(grouped, strict, soft, area)}\n\n"
        f"{rho_line}\n"
        "What the top-1 picks get wrong (% of picks showing each failure mode of the oracle; modes can co-occur):\n\n"
        f"{top1_failure_table(grouped, failures)}\n\n"
        "Aligned against one failure: % of same-prompt pairs (a candidate without failures, a candidate whose only "
        "failure is the one named) in which the signal scores the aligned candidate higher; 50 % is blind, "
        "below 50 % rewards the failure:\n\n"
        f"{pairwise_failure_table(grouped, failures)}\n"
    )
    print(report)
    (out / "report.md").write_text(report)
    (out / "candidates.json").write_text(json.dumps({
        "prompts": cands.prompts, "seeds": cands.seeds, "soft": soft.reshape(-1).tolist(), "strict": strict.reshape(-1).tolist(),
        "area": area.reshape(-1).tolist(), "timesteps": ts.tolist(), "curve": cands.curve.tolist(),
        **{k: np.asarray(v, float).reshape(-1).tolist() for k, v in signals.items()},
    }))


if __name__ == "__main__":
    main()
