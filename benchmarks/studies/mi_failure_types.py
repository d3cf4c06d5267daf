"""On which failures is a model's own MI right? Every MI signal against every one-object edit, on renders and samples.

    python -m benchmarks.studies.mi_failure_types [--models NAME=FOLDER ...] [--prompts 48] [--images 4]
        [--samples 16] [--contrast-samples 4] [--results STEM]

For each Shapes model and each of ``--prompts`` training-split prompts, two kinds of aligned image:
the world's render (:func:`minitune.toy.world.render_edits`) and the model's own first aligned sample
of ``--images`` (``--sampler`` at ``--steps``, by default the experiment's DDPM at 25, and the model's
guidance scale, ``--guidance NAME=SCALE`` where it is not the shipped base's;
:func:`minitune.toy.world.sample_edits`); each beside its copies with one object missing, one extra,
colours swapped, the shape changed and, for spatial prompts, the relation flipped. Every image is
scored under the true prompt by the model itself, with the same noise for the images of a scene
(:func:`minitune.mi.image_swap_test`):

- orthogonal re-noising MI, the integral of ‖ε̂_c − ε̂_u‖²: the quantity the paper's trajectory MI
  estimates along the sampler's own path (an edited image has no path, so the trajectory form itself
  cannot score it);
- point-wise re-noising MI, log p(x|y) − log p(x);
- with ``--contrast-samples``, the contrast against the prompt's near-miss prompts.

The table gives the share of scenes whose aligned image scores higher than its edit (ties half;
50 % is blind to the edit, below 50 % prefers the failure).
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import harness
from benchmarks.studies.image_swap import scorer
from minitune import GUIDANCE_SCALE
from minitune import mi as M
from minitune.families import denoiser_for
from minitune.io import markdown_table
from minitune.sampling import SAMPLERS, use_sampler
from minitune.toy import world

SIGNALS = {"orthogonal": "orthogonal (≈ paper's MI)", "point-wise": "point-wise", "contrast": "contrast"}


def own_samples(pipe, prompts: list[str], args, guidance: float) -> list[tuple[int, np.ndarray]]:
    """(prompt index, image) of the first of `args.images` samples per prompt that the oracle judges aligned."""
    g = torch.Generator().manual_seed(args.seed)
    images = args.images
    drawn = use_sampler(pipe, args.sampler)(prompts, num_images_per_prompt=images, guidance_scale=guidance,
                                            num_inference_steps=args.steps, generator=g, output_type="np").images
    out = []
    for i, p in enumerate(prompts):
        ok = [im for im in drawn[i * images : (i + 1) * images] if world.check(im, p)["strict"]]
        if ok:
            out.append((i, ok[0]))
    return out


def swap(den, args, prompts: list[str], scenes: list[tuple[int, dict]]) -> dict:
    """Per edit, the share of scenes whose aligned image each signal scores higher."""
    rows = [(i, kind, img) for i, edits in scenes for kind, img in edits.items()]
    x0 = world.to_tensor(np.stack([img for _, _, img in rows]))
    found = M.image_swap_test(scorer(den, args), x0, [prompts[i] for i, _, _ in rows], [i for i, _, _ in rows],
                              [kind for _, kind, _ in rows], seed=args.seed)
    return {edit: {"pairs": e["pairs"], "aligned_wins": {k: e["wins"][k] for k in SIGNALS if k in e["wins"]}}
            for edit, e in found["edits"].items()}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None, seed=0)
    ap.add_argument("--models", nargs="*", default=["shipped"], help="NAME=FOLDER of Shapes pipelines; shipped alone "
                    "is the base minitune ships")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--images", type=int, default=4, help="samples per prompt to find an aligned one")
    ap.add_argument("--samples", type=int, default=16, help="re-noising draws per image")
    ap.add_argument("--contrast-samples", type=int, default=4, help="draws per image and prompt for the contrast (0: off)")
    ap.add_argument("--sampler", choices=list(SAMPLERS), default="ddpm", help="the sampler of the own samples")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps of the own samples")
    ap.add_argument("--guidance", nargs="*", default=[], metavar="NAME=SCALE",
                    help=f"NAME's guidance scale for its own samples (default {GUIDANCE_SCALE:g}, the shipped base's)")
    run = harness.start(ap, argv)
    args = run.args
    prompts = world.sample_prompts("train", args.prompts, seed=3000 + args.seed)
    models = harness.named_models(args.models)
    scales = harness.named_scales(args.guidance, models, GUIDANCE_SCALE, "--guidance")
    results, table = {}, []
    for name, folder in models.items():
        pipe = harness.load_model(folder)
        den = denoiser_for(pipe)
        own = own_samples(pipe, prompts, args, scales[name])
        sources = {"renders": [(i, world.render_edits(p, args.seed + i)) for i, p in enumerate(prompts)],
                   "own samples": [(i, world.sample_edits(img, prompts[i], args.seed + i)) for i, img in own]}
        results[name] = {src: swap(den, args, prompts, scenes) for src, scenes in sources.items()}
        for src, edits in results[name].items():
            table += [[name, src, edit, e["pairs"], *(f"{100 * e['aligned_wins'][k]:.0f}" if k in e["aligned_wins"]
                                                      else "–" for k in SIGNALS)] for edit, e in edits.items()]
    out = harness.Report()
    cfg = ", ".join(f"{scales[n]:g} ({n})" for n in models)
    out(f"{len(prompts)} training-split prompts; renders and each model's first aligned sample of {args.images} "
        f"({args.sampler} {args.steps} steps, CFG {cfg}), each against its one-edit copies; {args.samples} re-noising draws"
        + (f", contrast with {args.contrast_samples}" if args.contrast_samples else "") + " per image, common noise per "
        f"scene; seed {args.seed}. Share of scenes whose aligned image scores higher (%; 50 is blind, below 50 prefers "
        "the failure).\n")
    out(markdown_table(table, ["model", "images", "edit", "pairs", *SIGNALS.values()], align="lllr" + "r" * len(SIGNALS)))
    run.write({"settings": {**harness.key(args, "models", "prompts", "images", "samples", "contrast_samples", "seed",
                                          "sampler", "steps"), "guidance": scales},
               "signals": SIGNALS, "results": results}, out.markdown(),
              model=", ".join(f"{k}={harness.model_name(v)}" for k, v in models.items()))
    return 0


if __name__ == "__main__":
    harness.main(main)
