"""How the shipped model's documented sampler was chosen: guidance scale (minitune.GUIDANCE_SCALE), scheduler
and step count, on training-split prompts.

    python -m benchmarks.studies.cfg_choice [--prompts 64] [--images 2] [--scales 2 3 4] [--steps 25]
                                            [--schedulers ddpm] [--seed 7] [--model FOLDER] [--results STEM]

Samples the same training-split prompts with the same seeds under every combination of guidance
scale, scheduler (``ddpm``: the shipped DDPMScheduler, ancestral; ``ddim``: a DDIMScheduler made
from its config, deterministic) and step count, and prints what the oracle says: strict alignment
overall and per category, soft alignment, the well-formed rate (every blob a clean palette shape)
and the mean coloured area in pixels (how much the model draws). The held-out test prompts are
not touched, so the choice does not peek at the numbers it is later judged on.
"""

import itertools

import numpy as np
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from benchmarks import harness
from minitune.evaluate import bootstrap_ci
from minitune.sampling import sample_with_mi
from minitune.toy import world

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def measure(pipe, prompts, images: int, g: float, steps: int, seed: int) -> dict:
    """The oracle's verdict on the candidates of one guidance scale and step count, with the scheduler set."""
    cands = sample_with_mi(pipe, prompts, images, guidance_scale=g, num_inference_steps=steps, seed=seed, progress=False)
    ev = world.evaluate(cands.images, cands.prompts)
    strict = [r["strict"] for r in ev.records]
    lo, hi = bootstrap_ci(strict)
    per = ev.per_category()
    return {"strict": float(np.mean(strict)), "strict_ci": [lo, hi],
            "per_category": {c: per[c]["strict"] for c in world.CATEGORIES if c in per}, "soft": float(ev.soft),
            "well_formed": float(ev.well_formed), "area": float(np.mean([r["area"] for r in ev.records]))}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=7)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[25])
    ap.add_argument("--schedulers", nargs="+", choices=sorted(SCHEDULERS), default=["ddpm"])
    run = harness.start(ap, argv)
    args = run.args
    pipe = harness.load_model(args.model)
    prompts = world.sample_prompts("train", args.prompts, seed=args.seed)
    config = pipe.scheduler.config
    out = harness.Report()
    out(f"{args.prompts} training-split prompts × {args.images} images, seed {args.seed}\n")
    out("| CFG | scheduler | steps | strict % (95 % CI) | " + " | ".join(world.CATEGORIES)
        + " | soft % | well-formed % | coloured px |\n|---:|---|---:|---:|" + "---:|" * (len(world.CATEGORIES) + 3))
    rows = []
    for g, name, steps in tqdm(list(itertools.product(args.scales, args.schedulers, args.steps)), desc="samplers"):
        pipe.scheduler = SCHEDULERS[name].from_config(config)
        rows.append(r := {"cfg": g, "scheduler": name, "steps": steps,
                          **measure(pipe, prompts, args.images, g, steps, args.seed)})
        per, (lo, hi) = r["per_category"], r["strict_ci"]
        out(f"| {g:g} | {name} | {steps} | {100 * r['strict']:.1f} ({100 * lo:.1f}–{100 * hi:.1f}) | "
            + " | ".join(f"{100 * per[c]:.1f}" if c in per else "–" for c in world.CATEGORIES)
            + f" | {100 * r['soft']:.1f} | {100 * r['well_formed']:.1f} | {r['area']:.0f} |")
    run.write({"settings": harness.key(args, "model", "prompts", "images", "scales", "steps", "schedulers", "seed"),
               "rows": rows}, out.markdown())
    return 0


if __name__ == "__main__":
    harness.main(main)
