"""What do the model's densities know? The prompt-swap test on ground-truth renders.

    python -m benchmarks.studies.prompt_swap [--images 48] [--samples 64] [--model FOLDER] [--results STEM]

Renders scenes that satisfy their prompts exactly (aligned by construction), then measures the
unbiased point-wise MI log p(x|y) − log p(x) of each render under its true prompt and under each
near-miss edit (colours swapped, shapes swapped, relation flipped, shape changed, count changed),
with the same noise draws for all prompts of an image. If the model has learnt a fact, the true
prompt wins on most renders; at ½ the MI cannot select for that fact.
"""

import functools
from collections import defaultdict

import numpy as np
import torch

from benchmarks import harness
from minitune import mi as M
from minitune.families import denoiser_for
from minitune.toy import world


def by_edit(pmi, prompts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per kind of edit: the point-wise MI under the true and under the edited prompt, of the renders it applies to."""
    by_kind = defaultdict(list)
    kinds = sorted({k for p in prompts for k in world.edits(p)})
    for kind in kinds:
        edited = [world.edits(p).get(kind, p) for p in prompts]
        has = np.array([kind in world.edits(p) for p in prompts])
        res = M.prompt_swap_test(lambda ps: pmi(tuple(ps)), prompts, edited)
        by_kind[kind] = (res["true"][has].numpy(), res["edited"][has].numpy())
    return by_kind


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=0)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--samples", type=int, default=64)
    run = harness.start(ap, argv)
    args = run.args
    pipe = harness.load_model(args.model)
    den = denoiser_for(pipe)
    prompts = world.sample_prompts("train", args.images, seed=2000 + args.seed)
    x0 = world.render_batch(prompts, range(args.images))

    @functools.cache
    def pmi(texts: tuple) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(args.seed + i) for i in range(len(texts))]  # common noise per image
        return M.renoise_mi(den.eps_pair(den.encode(list(texts))), x0, den.scheduler, n_samples=args.samples, generator=gens)[0]

    true = pmi(tuple(prompts))
    by_kind = by_edit(pmi, prompts)
    out = harness.Report()
    out(f"{args.images} ground-truth renders, {args.samples} noise levels each (common noise); point-wise MI in nats\n")
    out(f"true prompt: mean {true.mean():.1f}, median {true.median():.1f}\n")
    out("| edit | renders | true wins % | mean MI true | mean MI edited | median gap |")
    out("|---|---:|---:|---:|---:|---:|")
    for kind, (t, e) in by_kind.items():
        out(f"| {kind} | {len(t)} | {100 * np.mean(t > e):.0f} | {t.mean():.1f} | {e.mean():.1f} | {np.median(t - e):.1f} |")
    run.write({"settings": harness.key(args, "model", "images", "samples", "seed"),
               "true_prompt": {"mean": float(true.mean()), "median": float(true.median())},
               "edits": [{"edit": kind, "renders": len(t), "true_wins": float(np.mean(t > e)), "mean_true": float(t.mean()),
                          "mean_edited": float(e.mean()), "median_gap": float(np.median(t - e))}
                         for kind, (t, e) in by_kind.items()]}, out.markdown())
    return 0


if __name__ == "__main__":
    harness.main(main)
