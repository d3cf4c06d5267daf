"""Which image does MI prefer for a prompt: the aligned render or the same scene with one thing wrong?

    python benchmarks/image_swap.py [--prompts 60] [--samples 32] [--contrast-samples 0] [--model FOLDER]

Selection compares images under one prompt, so this is the test that matters for it (the
prompt-swap test, benchmarks/prompt_swap.py, holds the image and changes the prompt, where
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

import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from minitune import mi as M
from minitune.denoisers import denoiser_for
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved Shapes pipeline (default: the shipped base model)")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--samples", type=int, default=32, help="re-noising draws per image")
    ap.add_argument("--contrast-samples", type=int, default=0, help="draws per image and prompt for the contrast (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    pipe = load_pipeline(args.model)
    den = denoiser_for(pipe)
    prompts = world.sample_prompts("train", args.prompts, seed=3000 + args.seed)
    rows = []  # (prompt index, kind, image)
    for i, p in enumerate(prompts):
        rows += [(i, kind, img) for kind, img in world.render_edits(p, args.seed + i).items()]
    x0 = world.to_tensor(np.stack([img for _, _, img in rows]))
    texts = [prompts[i] for i, _, _ in rows]
    seeds = [args.seed + i for i, _, _ in rows]  # an image shares its noise draws with its prompt's aligned scene
    conds = den.encode(prompts)
    forms = {"point-wise": "pointwise", "orthogonal": "orthogonal", "log p(x|y)": "conditional", "log p(x)": "unconditional"}
    rivals = {"contrast": lambda p: list(world.edits(p).values()), "contrast, ± one object": world.near_misses}
    scores = {**{k: [] for k in forms}, **{k: [] for k in rivals}}
    chunk = 32
    for s in tqdm(range(0, len(rows), chunk), desc="scoring"):
        idx = list(range(s, min(len(rows), s + chunk)))
        pair = den.eps_pair(conds.take(torch.tensor([rows[j][0] for j in idx])))
        gens = [torch.Generator().manual_seed(seeds[j]) for j in idx]
        est = M.renoise_mi(pair, x0[idx], den.scheduler, n_samples=args.samples, generator=gens,
                           form=tuple(forms.values()))  # one set of network evaluations for all forms
        for name, form in forms.items():
            scores[name].append(est[form][0])
        for name, of in rivals.items() if args.contrast_samples else ():
            near = [of(texts[j]) for j in idx]
            scores[name].append(M.contrast_mi(den, x0[idx], [texts[j] for j in idx], near, seeds=[seeds[j] for j in idx],
                                              n_samples=args.contrast_samples, batch_size=None)[0])
    scores = {k: torch.cat(v).numpy() for k, v in scores.items() if v}
    aligned = {i: j for j, (i, kind, _) in enumerate(rows) if kind == "aligned"}
    kinds = list(dict.fromkeys(kind for _, kind, _ in rows if kind != "aligned"))
    print(f"{len(prompts)} training-split prompts, ground-truth renders and one-edit copies of each; "
          f"{args.samples} re-noising draws per image"
          + (f", contrast with {args.contrast_samples}" if args.contrast_samples else "")
          + f" (common noise per scene); seed {args.seed}; {time.time() - t0:.0f} s\n")
    gaps = ("point-wise", "log p(x|y)", "log p(x)")
    print("| edit | pairs | " + " | ".join(f"aligned wins %, {k}" for k in scores) + " | "
          + " | ".join(f"median gap, {k} (nats)" for k in gaps) + " |")
    print("|---|---:|" + "---:|" * (len(scores) + len(gaps)))
    for kind in kinds:
        pairs = [(aligned[i], j) for j, (i, k, _) in enumerate(rows) if k == kind]
        cells = []
        for v in scores.values():
            wins = [1.0 if v[a] > v[e] else 0.5 if v[a] == v[e] else 0.0 for a, e in pairs]
            cells.append(f"{100 * np.mean(wins):.0f}")
        cells += [f"{np.median([scores[k][a] - scores[k][e] for a, e in pairs]):+.1f}" for k in gaps]
        print(f"| {kind} | {len(pairs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
