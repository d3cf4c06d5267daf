"""Does the model's density object to its own extra objects as it does to a render's?

    python -m benchmarks.studies.own_mistakes --candidates runs/selection/candidates.pt [--pairs 100] [--samples 32]
                                              [--contrast-samples 8] [--model FOLDER] [--results STEM]

The image-swap test (benchmarks/studies/image_swap.py) finds that the contrast against
:func:`minitune.toy.world.near_misses` prefers an aligned render to the same render with an extra
object, yet the selection study finds it at chance between the model's own candidates. This script
asks whether the difference is in whose mistake it is. From the candidates that
benchmarks/studies/selection_study.py sampled and kept in its ``--out`` folder (``--candidates``
names that ``candidates.pt``) it takes those whose only failure is an extra object and which
become strictly aligned when one foreground component (dilated by a pixel, to take its anti-aliased
rim) is painted black: the model's own extra object, and the same image without it. For the same
prompts it draws the image-swap test's pair (an aligned render and the same render with an extra
copy of its first object). Each pair is scored under the true prompt on common noise (re-noising
point-wise MI, log p(x|y), log p(x), and the contrast against the near misses), and the script
prints in how many pairs the image without the extra object scores higher (ties count half).
"""

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from benchmarks import harness
from minitune import mi as M
from minitune.families import denoiser_for
from minitune.sampling import Candidates
from minitune.toy import world

FORMS = {"point-wise": "pointwise", "log p(x|y)": "conditional", "log p(x)": "unconditional"}


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


def load_candidates(path: Path) -> Candidates:
    """The candidates a selection study kept in `path` (its ``<out>/candidates.pt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"No candidates file {path}: run python -m benchmarks.studies.selection_study --out FOLDER "
                                "first and pass its FOLDER/candidates.pt.")
    kept = torch.load(path)
    return Candidates(**kept.get("value", kept.get("candidates")))  # "candidates": files written before the harness


def own_pairs(cands: Candidates, most: int) -> list[tuple]:
    """(prompt, clean image, image) of up to `most` candidates whose only failure is one erasable extra object."""
    images = world.to_uint8(cands.images)
    own = []  # (prompt, clean image, image with the model's extra object)
    for image, prompt, record in zip(images, cands.prompts, world.evaluate(images, cands.prompts).records):
        if record["failures"] == ["extra object"] and len(own) < most:
            clean = without_extra(image, prompt)
            if clean is not None:
                own.append((prompt, clean, image))
    return own


def render_pairs(prompts: list[str], seed: int) -> list[tuple]:
    """(prompt, aligned render, the same with an extra copy of its first object) for each prompt that has one."""
    renders = []
    for j, prompt in enumerate(prompts):
        scene = world.render_edits(prompt, seed + j)
        if "extra object" in scene:
            renders.append((prompt, scene["aligned"], scene["extra object"]))
    return renders


def clean_wins(den, pairs: list[tuple], args, desc: str) -> dict[str, float]:
    """Per signal, the share of pairs (ties count half) in which the clean image scores higher, on common noise."""
    prompts = [p for p, _, _ in pairs for _ in range(2)]
    x0 = world.to_tensor(np.stack([im for _, clean, extra in pairs for im in (clean, extra)]))
    seeds = [args.seed + 7919 * j for j in range(len(pairs)) for _ in range(2)]  # a pair shares its noise
    scores = {k: [] for k in [*FORMS, "contrast"]}
    for s in tqdm(range(0, len(prompts), 32), desc=desc):
        rows = slice(s, s + 32)
        pair = den.eps_pair(den.encode(prompts[rows]))
        gens = [torch.Generator().manual_seed(v) for v in seeds[rows]]
        est = M.renoise_mi(pair, x0[rows], den.scheduler, n_samples=args.samples, generator=gens, form=tuple(FORMS.values()))
        for k, form in FORMS.items():
            scores[k].append(est[form][0])
        scores["contrast"].append(M.contrast_mi(den, x0[rows], prompts[rows], [world.near_misses(p) for p in prompts[rows]],
                                                seeds=seeds[rows], n_samples=args.contrast_samples, batch_size=256)[0])
    wins = {}
    for k, v in scores.items():
        v = torch.cat(v).numpy().reshape(-1, 2)
        wins[k] = float(np.mean((v[:, 0] > v[:, 1]) + 0.5 * (v[:, 0] == v[:, 1])))
    return wins


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, seed=0, model="the Shapes pipeline whose density judges them (default: the "
                        "shipped base model, which sampled the study's candidates)")
    ap.add_argument("--candidates", type=Path, required=True, metavar="PATH",
                    help="the candidates.pt a selection study kept in its --out folder")
    ap.add_argument("--pairs", type=int, default=100, help="at most this many pairs of each kind")
    ap.add_argument("--samples", type=int, default=32, help="re-noising draws per image")
    ap.add_argument("--contrast-samples", type=int, default=8, help="draws per image and prompt for the contrast")
    run = harness.start(ap, argv)
    args = run.args
    own = own_pairs(load_candidates(args.candidates), args.pairs)
    renders = render_pairs([prompt for prompt, _, _ in own], args.seed)
    den = denoiser_for(harness.load_model(args.model))
    out = harness.Report()
    out(f"{len(own)} of the model's candidates whose only failure is one erasable extra object "
        f"(from {args.candidates}); {len(renders)} render pairs of the same prompts; {args.samples} re-noising draws, "
        f"contrast with {args.contrast_samples}; common noise per pair; seed {args.seed}")
    out("\n| pair: clean image vs the same with an extra object | pairs | "
        + " | ".join(f"clean wins %, {k}" for k in [*FORMS, "contrast vs near misses"]) + " |")
    out("|---|---:|" + "---:|" * (len(FORMS) + 1))
    found = {}
    for name, pairs in (("the model's own extra object, erased", own), ("a render's added copy of an object", renders)):
        found[name] = {"pairs": len(pairs), "clean_wins": clean_wins(den, pairs, args, name)}
        out(f"| {name} | {len(pairs)} | " + " | ".join(f"{100 * w:.0f}" for w in found[name]["clean_wins"].values()) + " |")
    print(f"\n{run.seconds():.0f} s")
    run.write({"settings": {**harness.key(args, "model", "pairs", "samples", "contrast_samples", "seed"),
                            "candidates": str(args.candidates)}, "pairs": found}, out.markdown())
    return 0


if __name__ == "__main__":
    harness.main(main)
