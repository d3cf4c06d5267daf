"""How the shipped model's documented sampler was chosen: guidance scale (minitune.GUIDANCE_SCALE), scheduler
and step count, on training-split prompts.

    python benchmarks/cfg_choice.py [--prompts 64] [--images 2] [--scales 2 3 4] [--steps 25]
                                    [--schedulers ddpm] [--seed 7]

Samples the same training-split prompts with the same seeds under every combination of guidance
scale, scheduler (``ddpm``: the shipped DDPMScheduler, ancestral; ``ddim``: a DDIMScheduler made
from its config, deterministic) and step count, and prints what the oracle says: strict alignment
overall and per category, soft alignment, the well-formed rate (every blob a clean palette shape)
and the mean coloured area in pixels (how much the model draws). The held-out test prompts are
not touched, so the choice does not peek at the numbers it is later judged on.
"""

import argparse
import itertools

import numpy as np
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from minitune.evaluate import bootstrap_ci
from minitune.sampling import sample_with_mi
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved Shapes pipeline (default: the shipped base model)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[25])
    ap.add_argument("--schedulers", nargs="+", choices=sorted(SCHEDULERS), default=["ddpm"])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    prompts = world.sample_prompts("train", args.prompts, seed=args.seed)
    config = pipe.scheduler.config
    print(f"{args.prompts} training-split prompts × {args.images} images, seed {args.seed}\n")
    print("| CFG | scheduler | steps | strict % (95 % CI) | " + " | ".join(world.CATEGORIES)
          + " | soft % | well-formed % | coloured px |\n|---:|---|---:|---:|" + "---:|" * (len(world.CATEGORIES) + 3))
    runs = list(itertools.product(args.scales, args.schedulers, args.steps))
    for g, name, steps in tqdm(runs, desc="samplers"):
        pipe.scheduler = SCHEDULERS[name].from_config(config)
        cands = sample_with_mi(pipe, prompts, args.images, guidance_scale=g, num_inference_steps=steps,
                               seed=args.seed, progress=False)
        ev = world.evaluate(cands.images, cands.prompts)
        strict = [r["strict"] for r in ev.records]
        lo, hi = bootstrap_ci(strict)
        per = ev.per_category()
        print(f"| {g:g} | {name} | {steps} | {100 * np.mean(strict):.1f} ({100 * lo:.1f}–{100 * hi:.1f}) | "
              + " | ".join(f"{100 * per[c]['strict']:.1f}" if c in per else "–" for c in world.CATEGORIES)
              + f" | {100 * ev.soft:.1f} | {100 * ev.well_formed:.1f} | "
              f"{np.mean([r['area'] for r in ev.records]):.0f} |", flush=True)


if __name__ == "__main__":
    main()
