"""Does the model's density object to its own extra objects as it does to a render's?

    python benchmarks/own_mistakes.py [--from runs/selection] [--pairs 100] [--samples 32] [--contrast-samples 8]

The image-swap test (benchmarks/image_swap.py) finds that the contrast against
:func:`minitune.toy.world.near_misses` prefers an aligned render to the same render with an extra
object, yet the selection study finds it at chance between the model's own candidates. This script
asks whether the difference is in whose mistake it is. From the candidates that
benchmarks/selection_study.py sampled and cached (``<from>/candidates.pt``) it takes those whose
only failure is an extra object and which become strictly aligned when one foreground component
(dilated by a pixel, to take its anti-aliased rim) is painted black: the model's own extra object,
and the same image without it. For the same prompts it draws the image-swap test's pair (an aligned
render and the same render with an extra copy of its first object). Each pair is scored under the
true prompt on common noise (re-noising point-wise MI, log p(x|y), log p(x), and the contrast
against the near misses), and the script prints in how many pairs the image without the extra
object scores higher (ties count half).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from minitune import mi as M
from minitune.denoisers import denoiser_for
from minitune.sampling import Candidates
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline


def without_extra(image: np.ndarray, prompt: str):
    """The image with one foreground component erased, if exactly one erasure makes it strictly aligned."""
    comp, n = ndimage.label(image.max(-1) > 127)
    fixed = []
    for k in range(1, n + 1):
        erased = image.copy()
        erased[ndimage.binary_dilation(comp == k)] = 0
        if world.check(erased, prompt)["strict"]:
            fixed.append(erased)
    return fixed[0] if len(fixed) == 1 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="source", default="runs/selection", help="a selection-study output folder")
    ap.add_argument("--model", default=None, help="the Shapes pipeline whose density judges them (default: the shipped "
                    "base model, which sampled the study's candidates)")
    ap.add_argument("--pairs", type=int, default=100, help="at most this many pairs of each kind")
    ap.add_argument("--samples", type=int, default=32, help="re-noising draws per image")
    ap.add_argument("--contrast-samples", type=int, default=8, help="draws per image and prompt for the contrast")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = Path(args.source) / "candidates.pt"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run benchmarks/selection_study.py --out {args.source} first.")
    t0 = time.time()
    cands = Candidates(**torch.load(path)["candidates"])
    images = world.to_uint8(cands.images)
    own = []  # (prompt, clean image, image with the model's extra object)
    for image, prompt, record in zip(images, cands.prompts, world.evaluate(images, cands.prompts).records):
        if record["failures"] == ["extra object"] and len(own) < args.pairs:
            clean = without_extra(image, prompt)
            if clean is not None:
                own.append((prompt, clean, image))
    renders = []
    for j, (prompt, _, _) in enumerate(own):
        scene = world.render_edits(prompt, args.seed + j)
        if "extra object" in scene:
            renders.append((prompt, scene["aligned"], scene["extra object"]))
    den = denoiser_for(load_pipeline(args.model))
    forms = {"point-wise": "pointwise", "log p(x|y)": "conditional", "log p(x)": "unconditional"}
    print(f"{len(own)} of the model's candidates whose only failure is one erasable extra object "
          f"(from {path}); {len(renders)} render pairs of the same prompts; {args.samples} re-noising draws, "
          f"contrast with {args.contrast_samples}; common noise per pair; seed {args.seed}")
    print("\n| pair: clean image vs the same with an extra object | pairs | "
          + " | ".join(f"clean wins %, {k}" for k in [*forms, "contrast vs near misses"]) + " |")
    print("|---|---:|" + "---:|" * (len(forms) + 1))
    for name, pairs in (("the model's own extra object, erased", own), ("a render's added copy of an object", renders)):
        prompts = [p for p, _, _ in pairs for _ in range(2)]
        x0 = world.to_tensor(np.stack([im for _, clean, extra in pairs for im in (clean, extra)]))
        seeds = [args.seed + 7919 * j for j in range(len(pairs)) for _ in range(2)]  # a pair shares its noise
        scores = {k: [] for k in [*forms, "contrast"]}
        for s in tqdm(range(0, len(prompts), 32), desc=name):
            rows = slice(s, s + 32)
            pair = den.eps_pair(den.encode(prompts[rows]))
            gens = [torch.Generator().manual_seed(v) for v in seeds[rows]]
            est = M.renoise_mi(pair, x0[rows], den.scheduler, n_samples=args.samples, generator=gens, form=tuple(forms.values()))
            for k, form in forms.items():
                scores[k].append(est[form][0])
            scores["contrast"].append(M.contrast_mi(den, x0[rows], prompts[rows], [world.near_misses(p) for p in prompts[rows]],
                                                    seeds=seeds[rows], n_samples=args.contrast_samples, batch_size=256)[0])
        cells = []
        for v in scores.values():
            v = torch.cat(v).numpy().reshape(-1, 2)
            cells.append(f"{100 * np.mean((v[:, 0] > v[:, 1]) + 0.5 * (v[:, 0] == v[:, 1])):.0f}")
        print(f"| {name} | {len(pairs)} | " + " | ".join(cells) + " |")
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
