"""Which image does MI prefer for a prompt: the aligned render or the same scene with one thing wrong?

    python -m benchmarks.studies.image_swap [--prompts 60] [--samples 32] [--contrast-samples 0] [--model FOLDER]
                                           [--results STEM]

Selection compares images under one prompt, so this is the test that matters for it (the
prompt-swap test, benchmarks/studies/prompt_swap.py, holds the image and changes the prompt, where
log p(x) cancels; here it does not). For training-split prompts, :func:`minitune.toy.world.render_edits`
draws the aligned scene and edits of that very scene (an extra copy of the first object, the last
object missing, colours swapped, the last shape changed, a spatial pair's places swapped). Every
image is scored under the true prompt with the same noise draws as its aligned scene:

- re-noising point-wise MI, log p(x|y) − log p(x) (unbiased);
- re-noising orthogonal MI, ‖ε̂_c − ε̂_u‖² integrated;
- the two halves of the point-wise form, log p(x|y) and log p(x) up to a constant that the
  common noise cancels (``form="conditional"`` / ``"unconditional"``), from the same network
  evaluations: is an edit penalised because it is unlikely under the prompt, or rewarded because it
  is unlikely without one?
- with ``--contrast-samples S``, the contrast against the prompt's near-miss prompts
  (:func:`minitune.mi.contrast_mi`), which cancels log p(x): against its edits
  (:func:`minitune.toy.world.edits`, one fact wrong) and against the wider neighbourhood of
  :func:`minitune.toy.world.near_misses` (the edits, and one object more or fewer).

For each edit it prints in how many pairs the aligned image scores higher (ties count half;
50 % is blind to the edit, below 50 % prefers it) and the median gap aligned − edited in nats.
"""

import numpy as np

from benchmarks import harness
from minitune import mi as M
from minitune.families import denoiser_for
from minitune.toy import world


def scenes(prompts: list[str], seed: int) -> list[tuple[int, str, np.ndarray]]:
    """(prompt index, kind, image) of every prompt's aligned render and its one-edit copies."""
    rows = []  # (prompt index, kind, image)
    for i, p in enumerate(prompts):
        rows += [(i, kind, img) for kind, img in world.render_edits(p, seed + i).items()]
    return rows


FORMS = {"point-wise": "pointwise", "orthogonal": "orthogonal", "log p(x|y)": "conditional", "log p(x)": "unconditional"}
RIVALS = {"contrast": lambda p: list(world.edits(p).values()), "contrast, ± one object": world.near_misses}
GAPS = ("point-wise", "log p(x|y)", "log p(x)")


def scorer(den, args):
    """``score(images, prompts, seeds)`` for :func:`minitune.mi.image_swap_test`: the re-noising forms from one set
    of network evaluations, and the contrasts when ``--contrast-samples`` is given."""
    renoise = M.renoise_score_fn(den, n_samples=args.samples, forms=FORMS)

    def score(images, prompts, seeds) -> dict:
        out = renoise(images, prompts, seeds)
        for name, of in RIVALS.items() if args.contrast_samples else ():
            out[name] = M.contrast_mi(den, images, prompts, [of(p) for p in prompts], seeds=seeds,
                                      n_samples=args.contrast_samples, batch_size=None)[0]
        return out

    return score


def table(found: dict, out) -> list[dict]:
    """Per edit: the share of pairs the aligned image wins under each signal, and median gaps; printed and returned."""
    signals = list(found["scores"])
    out("| edit | pairs | " + " | ".join(f"aligned wins %, {k}" for k in signals) + " | "
        + " | ".join(f"median gap, {k} (nats)" for k in GAPS) + " |")
    out("|---|---:|" + "---:|" * (len(signals) + len(GAPS)))
    rows = []
    for kind, e in found["edits"].items():
        median = {k: e["median_gap"][k] for k in GAPS}
        out(f"| {kind} | {e['pairs']} | " + " | ".join(f"{100 * w:.0f}" for w in e["wins"].values()) + " | "
            + " | ".join(f"{m:+.1f}" for m in median.values()) + " |")
        rows.append({"edit": kind, "pairs": e["pairs"], "aligned_wins": e["wins"], "median_gap": median})
    return rows


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=0)
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--samples", type=int, default=32, help="re-noising draws per image")
    ap.add_argument("--contrast-samples", type=int, default=0, help="draws per image and prompt for the contrast (0: off)")
    run = harness.start(ap, argv)
    args = run.args
    pipe = harness.load_model(args.model)
    den = denoiser_for(pipe)
    prompts = world.sample_prompts("train", args.prompts, seed=3000 + args.seed)
    rows = scenes(prompts, args.seed)
    x0 = world.to_tensor(np.stack([img for _, _, img in rows]))
    found = M.image_swap_test(scorer(den, args), x0, [prompts[i] for i, _, _ in rows], [i for i, _, _ in rows],
                              [kind for _, kind, _ in rows], seed=args.seed)
    out = harness.Report()
    out(f"{len(prompts)} training-split prompts, ground-truth renders and one-edit copies of each; "
        f"{args.samples} re-noising draws per image"
        + (f", contrast with {args.contrast_samples}" if args.contrast_samples else "")
        + f" (common noise per scene); seed {args.seed}; {run.seconds():.0f} s\n")
    found = table(found, out)
    run.write({"settings": harness.key(args, "model", "prompts", "samples", "contrast_samples", "seed"), "edits": found},
              out.markdown())
    return 0


if __name__ == "__main__":
    harness.main(main)
