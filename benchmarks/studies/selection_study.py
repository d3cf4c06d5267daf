"""Does MI pick the better-aligned candidate? The selection study on the shipped base model.

    python -m benchmarks.studies.selection_study [--prompts 100] [--candidates 16] [--cfg 2] [--out runs/selection]
                                                 [--model FOLDER] [--results STEM]

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

The sampled candidates are kept in ``<out>/candidates.pt`` (what ``benchmarks.studies.own_mistakes
--candidates`` reads), the re-noising scores in ``<out>/renoise.pt``, ``<out>/likelihood.pt`` and
``<out>/neighbourhood.pt``, each with the arguments that made it (:func:`benchmarks.harness.cached`);
a rerun with the same model, prompts, candidates, CFG, steps and seed (and re-noising samples)
reuses them, so the tables can be redone without sampling again. ``--results STEM`` also writes the
report as ``STEM.md`` and its headline numbers as ``STEM.json``.

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

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks import harness
from minitune import GUIDANCE_SCALE
from minitune import mi as M
from minitune.families import denoiser_for
from minitune.evaluate import best_of_n, selection_table, within_prompt_spearman
from minitune.sampling import Candidates, sample_with_mi
from minitune.toy import world
from minitune.toy.scoring import pairwise_failure_table, top1_failure_table


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


def cached_scores(path: Path, key: dict, compute) -> tuple[dict, float]:
    """Scores {name: array} from `path` if it was made with `key`, else computed, timed and saved; with
    the seconds they took. Zero samples in the key means the signal is off: ({}, 0)."""
    if not list(key.values())[-1]:
        return {}, 0.0
    scores, seconds = harness.cached(path, key, lambda: {k: torch.from_numpy(v) for k, v in compute().items()})
    return {k: v.numpy() for k, v in scores.items()}, seconds


def candidates(pipe, args, out: Path) -> tuple[Candidates, float]:
    """The study's candidates (sampled with the trajectory MI and its per-step curve, or reused from
    ``<out>/candidates.pt``) and the seconds sampling them took."""
    prompts = world.sample_prompts("train", args.prompts, seed=1000 + args.seed)
    kept, seconds = harness.cached(out / "candidates.pt", sample_key(args), lambda: vars(sample_with_mi(
        pipe, prompts, args.candidates, guidance_scale=args.cfg, num_inference_steps=args.steps, seed=args.seed,
        keep_curve=True)))
    return Candidates(**kept), seconds


def sample_key(args) -> dict:
    """The arguments that decide the candidates (and so every cached score)."""
    return harness.key(args, "model", "prompts", "candidates", "cfg", "steps", "seed")


def trajectory_signals(cands: Candidates, ab) -> dict:
    """The paper's trajectory MI, and the same restricted to each quarter of the schedule (t > 50)."""
    ts = cands.timesteps
    kappa = M.paper_weights(ab, ts, truncation=0).float()
    signals = {"trajectory (paper)": cands.mi.numpy()}
    T = len(ab)
    for a in range(0, T, T // 4):
        band = ((ts >= max(a, 51)) & (ts < a + T // 4)).float()
        w = kappa * band
        signals[f"trajectory t∈[{max(a, 51)},{a + T // 4})"] = (cands.curve * w).sum(1).div(band.sum()).numpy()
    return signals


def scored_signals(pipe, cands: Candidates, args, out: Path) -> tuple[dict, str, dict]:
    """The re-noising, likelihood and near-miss signals (cached in `out`), the line comparing re-noising with
    trajectory MI, and the seconds each took when first computed."""
    key = sample_key(args)
    rn, t_renoise = cached_scores(out / "renoise.pt", {**key, "renoise_samples": args.renoise_samples},
                                  lambda: renoise_scores(pipe, cands, args.renoise_samples, args.seed))
    lk, t_lk = cached_scores(out / "likelihood.pt", {**key, "likelihood_samples": args.likelihood_samples},
                             lambda: likelihood_scores(pipe, cands, args.likelihood_samples, args.seed))
    nb, t_nb = cached_scores(out / "neighbourhood.pt", {**key, "contrast_samples": args.contrast_samples},
                             lambda: neighbourhood_scores(pipe, cands, args.contrast_samples, args.seed))
    signals, rho_line = {}, ""
    if rn:
        signals["re-noise point-wise"] = rn["pointwise"]
        signals["re-noise orthogonal"] = rn["orthogonal"]
        signals["contrast vs edits"] = rn["contrast"]
        rho = within_prompt_spearman(cands.grouped(rn["pointwise"]).numpy(), cands.grouped(cands.mi.numpy()).numpy())
        rho_line = f"Within-prompt Spearman ρ between re-noising point-wise MI and trajectory MI: {rho:+.2f}\n"
    if nb:
        signals["contrast vs near misses (± one object)"] = nb["contrast"]
    if lk:
        signals["log p(x|y), denoising bound"] = lk["conditional"]
        signals["log p(x), denoising bound"] = lk["unconditional"]
        signals["their difference (point-wise MI, common noise)"] = lk["conditional"] - lk["unconditional"]
        signals["log p(x|y) − ½ log p(x)"] = lk["conditional"] - 0.5 * lk["unconditional"]
    return signals, rho_line, {"renoise": t_renoise, "likelihood": t_lk, "neighbourhood": t_nb}


def report(args, grouped: dict, verdict: dict, rho_line: str, seconds: dict) -> str:
    """The printed report: settings and times, then the selection, top-1 failure and pairwise failure tables."""
    strict = verdict["strict"]
    return (
        f"{args.prompts} training-split prompts × {args.candidates} candidates, CFG {args.cfg}, {args.steps} DDPM steps, "
        f"re-noising with {args.renoise_samples} samples; seed {args.seed}. "
        f"Sampling took {seconds['sampling']:.0f} s, "
        f"re-noising {seconds['renoise']:.0f} s, likelihoods ({args.likelihood_samples} samples) {seconds['likelihood']:.0f} s, "
        f"contrast vs near misses ({args.contrast_samples} samples) {seconds['neighbourhood']:.0f} s (when first computed).\n"
        f"Mean strict score of all candidates: {100 * float(strict.mean()):.1f} %; prompts with at least one strictly aligned "
        f"candidate: {100 * float(strict.max(1).mean()):.1f} %.\n\n"
        f"{selection_table(grouped, strict, verdict['soft'], verdict['area'])}\n\n"
        f"{rho_line}\n"
        "What the top-1 picks get wrong (% of picks showing each failure mode of the oracle; modes can co-occur):\n\n"
        f"{top1_failure_table(grouped, verdict['failures'])}\n\n"
        "Aligned against one failure: % of same-prompt pairs (a candidate without failures, a candidate whose only "
        "failure is the one named) in which the signal scores the aligned candidate higher; 50 % is blind, "
        "below 50 % rewards the failure:\n\n"
        f"{pairwise_failure_table(grouped, verdict['failures'])}\n"
    )


def oracle_verdict(cands: Candidates) -> dict:
    """The oracle's soft and strict scores, coloured area [P, N] and failure modes of every candidate."""
    ev = world.evaluate(cands.images, cands.prompts)
    G = cands.grouped
    area = G([r["area"] for r in ev.records]).numpy().astype(float)
    return {"soft": G([r["soft"] for r in ev.records]).numpy(), "strict": G([r["strict"] for r in ev.records]).numpy(),
            "area": area,
            "failures": [[ev.records[i]["failures"] for i in group] for group in np.arange(len(ev.records)).reshape(area.shape)]}


def reference_signals(trajectory, verdict: dict, seed: int) -> dict:
    """The paper's MI per coloured pixel (a diagnostic of the area confound) and the references: a seeded random
    pick, the coloured area and the oracle's soft score."""
    area = verdict["area"].reshape(-1)
    return {"trajectory / coloured area": trajectory / np.maximum(area, 1.0),
            "random": np.random.default_rng(seed).standard_normal(len(area)), "coloured area": area,
            "oracle (soft)": verdict["soft"].reshape(-1)}


def write_candidates(path: Path, cands: Candidates, verdict: dict, signals: dict) -> None:
    """The raw per-candidate values for the book: prompts, seeds, the oracle's scores, the MI curve, every signal."""
    path.write_text(json.dumps({
        "prompts": cands.prompts, "seeds": cands.seeds, "soft": verdict["soft"].reshape(-1).tolist(),
        "strict": verdict["strict"].reshape(-1).tolist(), "area": verdict["area"].reshape(-1).tolist(),
        "timesteps": cands.timesteps.tolist(), "curve": cands.curve.tolist(),
        **{k: np.asarray(v, float).reshape(-1).tolist() for k, v in signals.items()},
    }))


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=0)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--cfg", type=float, default=GUIDANCE_SCALE, help="guidance scale (default: the documented one)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--renoise-samples", type=int, default=16, help="re-noising samples per candidate (0: skip re-noising)")
    ap.add_argument("--likelihood-samples", type=int, default=8,
                    help="re-noising samples for log p(x|y) and log p(x) per candidate (0: skip)")
    ap.add_argument("--contrast-samples", type=int, default=8,
                    help="re-noising samples per candidate and prompt for the contrast vs near misses (0: skip it)")
    ap.add_argument("--out", default="runs/selection", help="where the candidates, the cached scores and the report go")
    run = harness.start(ap, argv)
    args = run.args
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = harness.load_model(args.model)
    cands, t_sample = candidates(pipe, args, out)
    verdict = oracle_verdict(cands)
    signals = trajectory_signals(cands, M.alphas_cumprod_of(pipe.scheduler))
    scored, rho_line, seconds = scored_signals(pipe, cands, args, out)
    signals.update(scored)
    signals.update(reference_signals(signals["trajectory (paper)"], verdict, args.seed))
    grouped = {k: cands.grouped(v).numpy().astype(float) for k, v in signals.items()}
    seconds["sampling"] = t_sample
    text = report(args, grouped, verdict, rho_line, seconds)
    print(text)
    (out / "report.md").write_text(text)
    write_candidates(out / "candidates.json", cands, verdict, signals)
    strict = verdict["strict"]
    run.write({"settings": harness.key(args, "model", "prompts", "candidates", "cfg", "steps", "renoise_samples",
                                       "likelihood_samples", "contrast_samples", "seed"), "seconds": seconds,
               "mean_strict": float(strict.mean()), "prompts_with_aligned": float(strict.max(1).mean()),
               "top1_strict": {k: float(best_of_n(strict, g, [g.shape[1]])[0].mean()) for k, g in grouped.items()}}, text)
    return 0


if __name__ == "__main__":
    harness.main(main)
