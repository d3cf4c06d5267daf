"""Candidates per minute against DDPM-25 at equal alignment: which sampler the pool and the evaluations use.

    python -m benchmarks.perf.sampler_speed [--prompts 128] [--images 2] [--seed 7] [--model FOLDER]
                                            [--samplers ddpm:25 dpmpp-sde:12 dpmpp-sde:10 ...] [--results STEM]

Samples the same training-split dev prompts with the same candidate seeds under each sampler (a name
in ``minitune.sampling.SAMPLERS`` and a step count; the first is the reference) at the documented CFG,
times it, and asks the oracle. A row's Δ strict is paired by prompt against the reference, with a 95 %
bootstrap CI over prompts. A sampler "matches" when that interval contains 0; ``speedup`` is the
best candidates/min among the matching samplers over the reference's, measured in this run; the script
exits with status 1 when it is below the goal of 2× (no matching sampler misses it too).
``ddim-clipped`` is DDIM built from the model's config as it stands (x0 clipping on): the DDIM
collapse, kept as a row so the explanation in ``minitune.sampling.SAMPLERS`` stays measured.
The held-out test prompts are not touched.
"""

import time

import numpy as np
import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from benchmarks import harness
from minitune import GUIDANCE_SCALE
from minitune.evaluate import bootstrap_ci
from minitune.sampling import SAMPLERS, sample_with_mi, use_sampler
from minitune.tools.sweep import markdown_table
from minitune.toy import world

GOAL = 2.0  # candidates per minute at equal alignment, against the reference (twice DDPM-25's)


def set_sampler(pipe, name: str, shipped) -> None:
    """Give `pipe` the sampler `name`, built from the shipped scheduler (not from the last one set)."""
    pipe.scheduler = shipped
    if name == "ddim-clipped":
        pipe.scheduler = DDIMScheduler.from_config(shipped.config)
    else:
        use_sampler(pipe, name)


def measure(pipe, prompts, images: int, steps: int, seed: int) -> tuple[dict, dict[str, float]]:
    """One sampler's row (without Δ) and its per-prompt strict rate."""
    t0 = time.perf_counter()
    cands = sample_with_mi(pipe, prompts, images, guidance_scale=GUIDANCE_SCALE, num_inference_steps=steps,
                           seed=seed, progress=False)
    wall = time.perf_counter() - t0
    ev = world.evaluate(cands.images, cands.prompts)
    strict = np.array([r["strict"] for r in ev.records], float)
    per_prompt = {p: float(strict[i * images:(i + 1) * images].mean()) for i, p in enumerate(prompts)}
    return {"strict": float(strict.mean()), "well_formed": float(ev.well_formed),
            "area": float(np.mean([r["area"] for r in ev.records])), "mean_mi": float(cands.mi.mean()),
            "seconds": wall, "candidates_per_min": 60 * len(cands.prompts) / wall}, per_prompt


def parse_samplers(ap, specs: list[str]) -> list[tuple[str, int]]:
    """(name, steps) of each ``NAME:STEPS``; an unknown name or a bad step count is a usage error."""
    out = []
    for spec in specs:
        name, _, steps = spec.partition(":")
        if name not in (*SAMPLERS, "ddim-clipped") or not steps.isdigit() or int(steps) < 1:
            ap.error(f"--samplers takes NAME:STEPS with NAME one of {', '.join(SAMPLERS)}, ddim-clipped; got {spec!r}.")
        out.append((name, int(steps)))
    return out


def compare(pipe, specs, prompts, images: int, seed: int) -> list[dict]:
    """One row per sampler, the first the reference: its measurement, Δ strict against the reference
    (paired by prompt, bootstrap 95 % CI), speed ratio and whether it matches the reference's alignment."""
    shipped = pipe.scheduler
    rows, ref = [], None
    for name, steps in tqdm(specs, desc="samplers"):
        set_sampler(pipe, name, shipped)
        row, per_prompt = measure(pipe, prompts, images, steps, seed)
        if ref is None:
            ref = (row, per_prompt)
        d = [per_prompt[p] - ref[1][p] for p in prompts]
        lo, hi = bootstrap_ci(d)
        row.update(sampler=name, steps=steps, delta_strict=float(np.mean(d)), delta_ci=[lo, hi],
                   speed_ratio=row["candidates_per_min"] / ref[0]["candidates_per_min"], matches=bool(lo <= 0 <= hi))
        rows.append(row)
        print(f"{name}:{steps}  strict {100 * row['strict']:.1f}  Δ {100 * row['delta_strict']:+.1f} "
              f"({100 * lo:+.1f} to {100 * hi:+.1f})  wf {100 * row['well_formed']:.1f}  px {row['area']:.0f}  "
              f"{row['candidates_per_min']:.0f} cand/min ({row['speed_ratio']:.2f}×)", flush=True)
    return rows


def markdown(rows: list[dict], best: dict | None, args) -> str:
    """The results page: the settings, one table row per sampler and the verdict."""
    table = markdown_table(
        [{"sampler": f"{r['sampler']}, {r['steps']} steps", "strict %": f"{100 * r['strict']:.1f}",
          "Δ strict vs reference (95 % CI)": "–" if i == 0 else
          f"{100 * r['delta_strict']:+.1f} ({100 * r['delta_ci'][0]:+.1f} to {100 * r['delta_ci'][1]:+.1f})",
          "well-formed %": f"{100 * r['well_formed']:.1f}", "coloured px": f"{r['area']:.0f}",
          "candidates/min": f"{r['candidates_per_min']:.0f}", "× reference": f"{r['speed_ratio']:.2f}"}
         for i, r in enumerate(rows)])
    verdict = (f"Fastest sampler whose Δ strict interval contains 0: **{best['sampler']}, {best['steps']} steps**, "
               f"{best['speed_ratio']:.2f}× the candidates per minute of {rows[0]['sampler']}-{rows[0]['steps']}."
               if best else "No sampler matched the reference's alignment.")
    return (f"{args.prompts} training-split dev prompts × {args.images} images, CFG {GUIDANCE_SCALE:g}, seed {args.seed}, "
            f"{torch.get_num_threads()} CPU threads, batch 64.\n\n{table}\n\n{verdict}\n")


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=7)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--samplers", nargs="+", default=["ddpm:25", "dpmpp-sde:12", "dpmpp-sde:10", "dpmpp-2m:12",
                                                      "ddim:25", "ddim-clipped:25"],
                    help="NAME:STEPS, the first one the reference")
    run = harness.start(ap, argv)
    args = run.args
    specs = parse_samplers(ap, args.samplers)
    torch.manual_seed(args.seed)
    pipe = harness.load_model(args.model)
    prompts = world.sample_prompts("train", args.prompts, seed=args.seed)
    rows = compare(pipe, specs, prompts, args.images, args.seed)
    best = max((r for r in rows[1:] if r["matches"]), key=lambda r: r["candidates_per_min"], default=None)
    md = markdown(rows, best, args)
    print("\n" + md)
    run.write({"settings": {"prompts": args.prompts, "images": args.images, "seed": args.seed,
                            "guidance_scale": GUIDANCE_SCALE, "threads": torch.get_num_threads()},
               "reference": f"{rows[0]['sampler']}:{rows[0]['steps']}", "rows": rows,
               "winner": f"{best['sampler']}:{best['steps']}" if best else None,
               "speedup": best["speed_ratio"] if best else None}, md)
    return harness.goal(best["speed_ratio"] if best else float("nan"), GOAL, "candidates/min at equal alignment, "
                        "× the reference")


if __name__ == "__main__":
    harness.main(main)
