"""MI-tracked sampling against plain CFG sampling of the same images, side by side in one run.

    python benchmarks/mi_overhead.py [--repeats 3] [--images 64]

Both produce bit-identical images (same per-image generators); the MI-tracked sampler only adds
the accumulation of ‖ε̂_c − ε̂_u‖² on tensors the guidance already computed. Prints the time ratio
(goal ≤ 1.03). Runs alternate so that drifts in machine load hit both sides alike.
"""

import argparse
import time

import torch

from minitune.sampling import sample_with_mi
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    pipe = load_pipeline()
    prompts = world.eval_prompts(per_category=4)[: args.images // 4]
    kw = dict(guidance_scale=4.0, num_inference_steps=args.steps)
    tracked = sample_with_mi(pipe, prompts, 4, batch_size=args.images, progress=False, **kw)  # warm-up, and the seeds
    def gens():
        return [torch.Generator().manual_seed(s) for s in tracked.seeds]
    plain_images = pipe(tracked.prompts, generator=gens(), output_type="pt", **kw).images
    assert torch.equal(plain_images, tracked.images), "MI-tracked and plain sampling should draw the same images"
    t_plain, t_mi = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pipe(tracked.prompts, generator=gens(), output_type="pt", **kw)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sample_with_mi(pipe, prompts, 4, batch_size=args.images, progress=False, **kw)
        t_mi.append(time.perf_counter() - t0)
    p, m = min(t_plain), min(t_mi)
    print(f"{len(tracked.prompts)} images, {args.steps} CFG steps, best of {args.repeats}")
    print(f"plain pipeline call : {p:.2f} s")
    print(f"MI-tracked sampler  : {m:.2f} s")
    print(f"ratio               : {m / p:.3f} (goal <= 1.03)")


if __name__ == "__main__":
    main()
