"""Is the contrast signal limited by Monte Carlo noise? Two independent estimates per candidate.

    python -m benchmarks.studies.contrast_noise [--prompts 8] [--candidates 8] [--samples 8 64] [--results STEM]

Samples training-split candidates at the documented CFG, then estimates each candidate's contrast
against near-miss prompts (:func:`minitune.mi.contrast_mi`) twice, with independent noise, at each
number of draws. Within a prompt it prints the spread of the contrast between candidates, the Monte
Carlo std of one estimate (from the difference of the two replicates), the correlation between
the two replicates (how much of the ranking is reproducible) and each estimate's Spearman ρ with
the oracle's soft score. If the replicates agree and ρ stays near 0, more draws will not help: the
density does not rank these candidates by alignment.
"""

import time

import numpy as np
from scipy.stats import pearsonr
from tqdm.auto import tqdm

from benchmarks import harness
from minitune.families import denoiser_for
from minitune.evaluate import within_prompt_spearman
from minitune.mi import contrast_mi
from minitune.sampling import sample_with_mi
from minitune.toy import world


def replicate_stats(den, cands, near, soft, n: int) -> dict:
    """Two independent contrast estimates per candidate at `n` draws: spread, Monte Carlo std, replicate r and ρ(soft)."""
    t0 = time.time()
    reps = [cands.grouped(contrast_mi(den, cands.latents, cands.prompts, near, n_samples=n, batch_size=None,
                                      seeds=[s + 10**6 * (r + 1) for s in cands.seeds])[0]).numpy() for r in range(2)]
    centred = [x - x.mean(1, keepdims=True) for x in reps]
    spread = float(np.mean([x.std(ddof=1) for x in (reps[0] + reps[1]) / 2]))
    mc = float(np.std(reps[0] - reps[1], ddof=1) / np.sqrt(2))
    r = pearsonr(centred[0].ravel(), centred[1].ravel())[0]
    rho = [within_prompt_spearman(x, soft) for x in (*reps, (reps[0] + reps[1]) / 2)]
    return {"draws": n, "spread": spread, "mc_std": mc, "replicate_r": float(r), "rho_soft": [float(v) for v in rho],
            "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=0)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--samples", type=int, nargs="+", default=[8, 64], help="draws per candidate and prompt")
    run = harness.start(ap, argv)
    args = run.args
    pipe = harness.load_model(args.model)
    den = denoiser_for(pipe)
    prompts = world.sample_prompts("train", args.prompts, seed=3000 + args.seed)
    cands = sample_with_mi(pipe, prompts, args.candidates, seed=args.seed, progress=False)
    soft = cands.grouped([r["soft"] for r in world.evaluate(cands.images, cands.prompts).records]).numpy()
    near = [list(world.edits(p).values()) for p in cands.prompts]
    out = harness.Report()
    out(f"{args.prompts} training-split prompts × {args.candidates} candidates (CFG of the shipped model), seed {args.seed}\n")
    out("| draws | spread within prompt (nats) | MC std of one estimate | replicate r | ρ(soft) rep. 1 | rep. 2 "
        "| mean of both | s |")
    out("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n in tqdm(args.samples, desc="draws"):
        rows.append(r := replicate_stats(den, cands, near, soft, n))
        rho = r["rho_soft"]
        out(f"| {n} | {r['spread']:.1f} | {r['mc_std']:.1f} | {r['replicate_r']:+.2f} | {rho[0]:+.2f} | {rho[1]:+.2f} | "
            f"{rho[2]:+.2f} | {r['seconds']:.0f} |")
    run.write({"settings": harness.key(args, "model", "prompts", "candidates", "samples", "seed"), "rows": rows},
              out.markdown())
    return 0


if __name__ == "__main__":
    harness.main(main)
