"""How the shipped model's documented guidance scale (minitune.GUIDANCE_SCALE) was chosen: on training-split prompts.

    python benchmarks/cfg_choice.py [--prompts 64] [--images 2] [--scales 2 3 4] [--seed 7]

Samples the same training-split prompts with the same seeds at each guidance scale and prints what
the oracle says: strict and soft alignment, the well-formed rate (every blob a clean palette shape)
and the mean coloured area in pixels (how much the model draws). The held-out test prompts are
not touched, so the choice does not peek at the numbers it is later judged on.
"""

import argparse

import numpy as np
from tqdm.auto import tqdm

from minitune.evaluate import bootstrap_ci
from minitune.sampling import sample_with_mi
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved Shapes pipeline (default: the shipped base model)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    prompts = world.sample_prompts("train", args.prompts, seed=args.seed)
    print(f"{args.prompts} training-split prompts × {args.images} images, {args.steps} DDPM steps, seed {args.seed}\n")
    print("| CFG | strict % (95 % CI) | soft % | well-formed % | coloured px |\n|---:|---:|---:|---:|---:|")
    for g in tqdm(args.scales, desc="guidance scales"):
        cands = sample_with_mi(pipe, prompts, args.images, guidance_scale=g, num_inference_steps=args.steps,
                               seed=args.seed, progress=False)
        ev = world.evaluate(cands.images, cands.prompts).records
        strict = [r["strict"] for r in ev]
        lo, hi = bootstrap_ci(strict)
        print(f"| {g:g} | {100 * np.mean(strict):.1f} ({100 * lo:.1f}–{100 * hi:.1f}) | "
              f"{100 * np.mean([r['soft'] for r in ev]):.1f} | {100 * np.mean([r['well_formed'] for r in ev]):.1f} | "
              f"{np.mean([r['area'] for r in ev]):.0f} |", flush=True)


if __name__ == "__main__":
    main()
