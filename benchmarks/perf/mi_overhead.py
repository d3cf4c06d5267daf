"""MI-tracked sampling against plain CFG sampling of the same images, side by side in one run.

    python -m benchmarks.perf.mi_overhead [--repeats 3] [--images 64] [--steps 25] [--results STEM]

Both produce bit-identical images (same per-image generators); the MI-tracked sampler only adds
the accumulation of ‖ε̂_c − ε̂_u‖² on tensors the guidance already computed. Prints the time ratio
(goal ≤ 1.03) and exits with status 1 when it is missed. Runs alternate so that drifts in machine
load hit both sides alike.
"""

import time

import torch

from benchmarks import harness
from minitune.sampling import sample_with_mi
from minitune.toy import world

GOAL = 1.03  # MI-tracked time / plain time


def best_times(pipe, prompts, tracked, images: int, repeats: int, kw: dict) -> tuple[float, float]:
    """The fastest of `repeats` alternating runs of the plain pipeline call and of the MI-tracked sampler."""
    def gens():
        return [torch.Generator().manual_seed(s) for s in tracked.seeds]

    t_plain, t_mi = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe(tracked.prompts, generator=gens(), output_type="pt", **kw)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sample_with_mi(pipe, prompts, 4, batch_size=images, progress=False, **kw)
        t_mi.append(time.perf_counter() - t0)
    return min(t_plain), min(t_mi)


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    run = harness.start(ap, argv)
    args = run.args
    pipe = harness.load_model()
    prompts = world.eval_prompts(per_category=4)[: args.images // 4]
    kw = dict(guidance_scale=4.0, num_inference_steps=args.steps)
    tracked = sample_with_mi(pipe, prompts, 4, batch_size=args.images, progress=False, **kw)  # warm-up, and the seeds
    plain_images = pipe(tracked.prompts, generator=[torch.Generator().manual_seed(s) for s in tracked.seeds],
                        output_type="pt", **kw).images
    assert torch.equal(plain_images, tracked.images), "MI-tracked and plain sampling should draw the same images"
    p, m = best_times(pipe, prompts, tracked, args.images, args.repeats, kw)
    out = harness.Report()
    out(f"{len(tracked.prompts)} images, {args.steps} CFG steps, best of {args.repeats}")
    out(f"plain pipeline call : {p:.2f} s")
    out(f"MI-tracked sampler  : {m:.2f} s")
    out(f"ratio               : {m / p:.3f} (goal <= {GOAL:g})")
    status = harness.goal(m / p, GOAL, "time ratio MI-tracked / plain", at_most=True)
    run.write({"settings": harness.key(args, "repeats", "images", "steps"), "plain_s": p, "mi_tracked_s": m,
               "ratio": m / p, "goal": GOAL, "goal_met": status == 0}, out.markdown(fenced=True))
    return status


if __name__ == "__main__":
    harness.main(main)
