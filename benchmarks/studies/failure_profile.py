"""Failure profiles counted as GenEval counts: Stable Diffusion 2 (GenEval's human annotations) beside Shapes bases.

    python -m benchmarks.studies.failure_profile --geneval-annotations annotations_sdv2.csv
        --geneval-metadata evaluation_metadata.jsonl [--models NAME=FOLDER ...] [--split test]
        [--per-category 30] [--images 2] [--guidance 2] [--results STEM]

SD 2's row comes from two public files of GenEval's repository (djghosh13/geneval):
``annotations/annotations_sdv2.csv`` (five raters' counts of each requested object in 400 SD 2
images) and ``prompts/evaluation_metadata.jsonl`` (what each prompt asks); the files are read, not
committed. Each Shapes model (``NAME=FOLDER``; ``shipped`` alone is the base minitune ships) samples
``--images`` images of up to ``--per-category`` prompts of each category of ``--split`` with
``--sampler`` at ``--steps`` (default: the pipeline's own and the experiment's, DDPM at 25), at each ``--guidance`` scale, and
:mod:`minitune.toy.profile` reads them as GenEval reads SD's. For calibration use ``--split train``
(dev prompts); ``--split test`` is for the committed rows. Also printed per model and scale: the
oracle's strict alignment, well-formed share, per-prompt diversity (pixel distance, and the layout distance of
:func:`minitune.toy.profile.layout_diversity`, which colour contrast does not move), and the area of a requested
object against the world's renders of the same prompts and seeds.
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness
from minitune import GUIDANCE_SCALE
from minitune.evaluate import evaluate_pipeline
from minitune.io import markdown_table
from minitune.sampling import SAMPLERS, use_sampler
from minitune.toy import profile as P
from minitune.toy import world

# GenEval's detector scores for SD v2.1 (Ghosh et al. 2023, Table 2): the published target of the calibration
SD21_SCORES = {"single object": 0.98, "two object": 0.51, "counting": 0.44, "colors": 0.85, "position": 0.07,
               "color attribution": 0.17}


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def measure(model, prompts: list[str], images: int, guidance: float, seed: int, sampler: str, steps: int) -> dict:
    """One model at one guidance scale: its failure profile and the oracle's summary."""
    pipe = use_sampler(harness.load_model(model), sampler)
    res, cands = evaluate_pipeline(pipe, prompts, images, guidance_scale=guidance, num_inference_steps=steps, seed=seed)
    renders = np.stack([world.render(p, int(s)) for p, s in zip(cands.prompts, cands.seeds)])
    prof = P.failure_profile(cands.images, cands.prompts)
    return {"profile": prof, "overall": P.overall(prof), "omission_ratio": P.omission_ratio(prof),
            "strict": float(np.mean([r["strict"] for r in res.records])),
            "well_formed": float(np.mean([r["well_formed"] for r in res.records])),
            "diversity": _mean([v for v in res.diversity.values() if not np.isnan(v)]),
            "layout_diversity": P.layout_diversity(cands.images, cands.prompts),
            "area_ratio": P.object_area(cands.images, cands.prompts) / P.object_area(renders, cands.prompts)}


def _profile_table(profiles: dict) -> str:
    rows = []
    for name, prof in profiles.items():
        for task in P.TASKS:
            if task in prof:
                v = prof[task]
                score = SD21_SCORES.get(task) if name == "sd2" else v.get("score")
                rows.append([name, task, v["images"], "–" if score is None else f"{100 * score:.0f}",
                             f"{100 * v['fewer']:.1f}", f"{100 * v['more']:.1f}", f"{100 * v['exact']:.1f}"])
    return markdown_table(rows, ["model", "task", "images", "score %", "fewer %", "more %", "exact %"], align="llrrrrr")


def _summary_table(runs: dict) -> str:
    rows = [[name, f"{g:g}", f"{100 * m['overall']:.1f}", f"{m['omission_ratio']:.2f}", f"{100 * m['strict']:.1f}",
             f"{100 * m['well_formed']:.1f}", f"{m['diversity']:.3f}", f"{m['layout_diversity']:.3f}",
             f"{m['area_ratio']:.2f}"]
            for name, by_g in runs.items() for g, m in by_g.items()]
    return markdown_table(rows, ["model", "CFG", "GenEval-style overall %", "min fewer/more", "strict %", "well-formed %",
                                 "pixel diversity", "layout diversity", "object area / renders"],
                          align="lrrrrrrrr")


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None, seed=0)
    ap.add_argument("--geneval-annotations", help="GenEval's annotations/annotations_sdv2.csv (SD 2's row)")
    ap.add_argument("--geneval-metadata", help="GenEval's prompts/evaluation_metadata.jsonl")
    ap.add_argument("--models", nargs="*", default=["shipped"], help="NAME=FOLDER of Shapes pipelines; shipped alone "
                    "is the base minitune ships")
    ap.add_argument("--split", choices=["train", "test"], default="test", help="train: dev prompts for calibration")
    ap.add_argument("--per-category", type=int, default=30)
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--sampler", choices=list(SAMPLERS), default="ddpm", help="the sampler (default: the experiment's)")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps")
    ap.add_argument("--guidance", type=float, nargs="+", default=[GUIDANCE_SCALE],
                    help="guidance scales; the profiles are reported at the first")
    ap.add_argument("--profile-guidance", nargs="*", default=[], metavar="NAME=SCALE",
                    help="report NAME's profile at SCALE (one of --guidance), e.g. each model at its own default")
    run = harness.start(ap, argv)
    a = run.args
    if (a.geneval_annotations is None) != (a.geneval_metadata is None):
        raise ValueError("Give both --geneval-annotations and --geneval-metadata, or neither.")
    models = harness.named_models(a.models)
    at = harness.named_scales(a.profile_guidance, models, a.guidance[0], "--profile-guidance", allowed=a.guidance)
    prompts = world.eval_prompts(a.per_category, seed=a.seed, split=a.split)
    profiles = {}
    if a.geneval_annotations:
        profiles["sd2"] = P.geneval_human_profile(a.geneval_annotations, a.geneval_metadata)
    runs = {name: {g: measure(folder, prompts, a.images, g, a.seed, a.sampler, a.steps) for g in a.guidance}
            for name, folder in models.items()}
    profiles.update({name: by_g[at[name]]["profile"] for name, by_g in runs.items()})
    report = harness.Report()
    scales = ", ".join(f"{at[n]:g} ({n})" for n in models)
    report(f"Failure profiles on {len(prompts)} {a.split}-split prompts × {a.images} images, {a.sampler} {a.steps} steps, "
           f"CFG {scales}; SD 2 from GenEval's human annotations (counts) and its published SD 2.1 scores.\n")
    report(_profile_table(profiles))
    report("\nPer model and guidance scale:\n")
    report(_summary_table(runs))
    data = {"split": a.split, "prompts": len(prompts), "images_per_prompt": a.images, "sampler": a.sampler, "steps": a.steps,
            "guidance": a.guidance, "profile_guidance": at,
            "models": {k: harness.model_name(v) for k, v in models.items()},
            "sd21_scores": SD21_SCORES, "profiles": profiles,
            "runs": {name: {f"{g:g}": {k: v for k, v in m.items() if k != "profile"} for g, m in by_g.items()}
                     for name, by_g in runs.items()}}
    run.write(data, report.markdown(), model=", ".join(f"{k}={harness.model_name(v)}" for k, v in models.items()))
    return 0


if __name__ == "__main__":
    harness.main(main)
