"""Is it the fine-tuning step, the fine-tuning data or the loss? Self-training checks on training-split prompts.

    python -m benchmarks.studies.self_training_check [--prompts 64] [--dev 64] [--candidates 8] [--k 2] [--arms ...]
                                                     [--rank R] [--steps S] [--lr LR] [--rounds 1] [--checkpoints 25,75]
                                                     [--dpo-beta 2000] [--dpo-lr LR] [--dpo-steps S]
                                                     [--pairing extremes|nearest]
                                                     [--model DIR] [--out runs/self_training] [--results STEM]

With the paper's recipe (the denoising loss on each prompt's top-k own samples) every arm, the
oracle's included, loses alignment. This script separates the suspects without touching the test
prompts. Training-split prompts are split into a fine-tuning group and a disjoint dev group. With
the LoRA settings of ``ExperimentConfig``'s defaults (the paper-like recipe: rank 8, 150 steps, lr
3e-4, 10 % prompt dropout), the shipped model (or ``--model``, a saved Shapes pipeline) is
fine-tuned on k images per fine-tuning prompt taken from:

- ``renders``: ground-truth renders of the prompts (perfect data: tests the fine-tuning step itself);
- ``oracle top-k (CFG g)``: the oracle's best k of the model's own N candidates sampled with CFG g
  (the best data self-training can select), for the experiment's CFG and for CFG 1 (no guidance);
- ``random-k (CFG g)``: a random k of the same CFG-g pool;
- ``MI top-k (CFG g)``: the top k of the same pool by the paper's trajectory MI (the method itself);
- ``perfect own (CFG g)``: only the own candidates the oracle finds strictly aligned and well formed
  (up to k per prompt; prompts without one contribute nothing): is it what the images show or how
  they are drawn?
- ``oracle-dpo``, ``random-dpo``, ``mi-dpo``: Diffusion-DPO (``finetune(objective="dpo")``, β
  ``--dpo-beta``, no prompt dropout) on k pairs per prompt of the same CFG-g pool, each prompt's r-th
  best candidate by the oracle, at random or by trajectory MI against its r-th worst: a loss in which
  what the model's own samples share cancels out. With ``--pairing nearest`` the rejected candidate is instead the
  best one left out of the top k that scores lower (a hard negative: for the oracle, as few facts wrong as the pool
  offers).

It prints what each set holds (the oracle's verdict, the coloured area and the starting
model's denoising loss on it) and how the base and every adapter do on the dev prompts (strict alignment
with the paired change vs the base, soft, well-formed, coloured area, mean trajectory MI);
``--checkpoints`` also judges the adapters part-way through their training (a dose-response).
``--k``, ``--candidates``, ``--rank`` and ``--rounds`` vary the knobs of the method itself: with
``--rounds R`` every arm that picks from the model's own samples (oracle, random, MI) samples a new
pool from its latest adapter, picks again the same way and fine-tunes on from that adapter, R times
in all. The LoRA alpha follows the rank, so the adapter's scale stays 1.
Every stage is skipped when its result is already in ``--out``; one folder holds one setting of
these knobs (the script refuses a folder made with other settings), and arms can be added to it later.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import harness
from minitune.evaluate import EvalResult, comparison_table, evaluate_pipeline, paired_delta
from minitune.finetune import WEIGHTS_NAME, finetune, load_finetune_set
from minitune.io import atomic_write
from minitune.sampling import SAMPLERS, use_sampler
from minitune.selection import PAIRINGS, build_pool, load_records, pool_complete, select
from minitune.toy import world
from minitune.toy.experiment import ExperimentConfig
from minitune.toy.scoring import oracle_scorer
from minitune.toy.world import train_prompts


def judge(images, prompts) -> dict:
    """The oracle's scores plus the coloured area (pixels) of each image."""
    ev = world.evaluate(images, list(prompts))
    return {k: np.array([r[k] for r in ev.records], float) for k in ("strict", "soft", "well_formed", "area")}


def _finish(folder: Path, records: list[dict]) -> Path:
    """Write metadata.jsonl last and atomically: its presence marks a complete set."""
    atomic_write(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return folder


def render_set(prompts: list[str], k: int, folder: Path, seed: int) -> Path:
    """An imagefolder of k ground-truth renders per prompt."""
    if (folder / "metadata.jsonl").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, p in enumerate(p for p in prompts for _ in range(k)):
        Image.fromarray(world.render(p, seed + i)).save(folder / f"{i:05d}.png")
        records.append({"file_name": f"{i:05d}.png", "text": p, "seed": seed + i})
    return _finish(folder, records)


def perfect_set(pool: Path, k: int, folder: Path) -> Path:
    """An imagefolder of up to k pool candidates per prompt that are strictly aligned and well formed."""
    if (folder / "metadata.jsonl").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    taken, records = {}, []
    for r in load_records(pool)[1]:
        if r["strict"] == 1 and r["well_formed"] == 1 and taken.get(r["text"], 0) < k:
            taken[r["text"]] = taken.get(r["text"], 0) + 1
            (folder / r["file_name"]).write_bytes((pool / r["file_name"]).read_bytes())
            records.append({key: r[key] for key in ("file_name", "text", "mi", "seed")})
    return _finish(folder, records)


def set_row(folder: Path, lora: Path) -> dict:
    """The oracle's verdict on a set's images and the starting model's held-out loss on it (step 0 of the run)."""
    data = load_finetune_set(folder)
    scores = judge(data.images, data.prompts)
    val = list(csv.reader((lora / "validation.csv").open()))[1:]  # no rows when the set is too small to hold some out
    return {"images": len(data.prompts), **{k: float(v.mean()) for k, v in scores.items()},
            "base_loss": float(val[0][1]) if val else float("nan")}


ARMS = ("renders", "oracle", "random", "mi", "oracle-cfg1", "perfect", "oracle-dpo", "random-dpo", "mi-dpo")
SET_NAMES = {"oracle": "oracle top-k", "random": "random-k", "mi": "MI top-k"}
DPO_NAMES = {"oracle": "oracle pairs, DPO", "random": "random pairs, DPO", "mi": "MI pairs, DPO"}


def arguments() -> argparse.ArgumentParser:
    """The script's options: the shared ones, the knobs of the method, the arms and the DPO settings."""
    ap = harness.parser(__file__, __doc__, seed=0, model="a Shapes pipeline folder (save_pretrained) to start from "
                        "instead of the shipped model")
    ap.add_argument("--prompts", type=int, default=64, help="training-split prompts to fine-tune on")
    ap.add_argument("--dev", type=int, default=64, help="other training-split prompts to judge on (the same "
                    "prompts whatever --prompts is)")
    ap.add_argument("--candidates", type=int, default=8, help="N candidates per prompt in each pool")
    ap.add_argument("--k", type=int, help="images per fine-tuning prompt (default: the full experiment's)")
    ap.add_argument("--images", type=int, default=2, help="images per dev prompt")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--steps", type=int, help="fine-tuning steps (default: the full experiment's)")
    ap.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the full experiment's)")
    ap.add_argument("--rank", type=int, help="LoRA rank, with alpha equal to it (default: the full experiment's)")
    ap.add_argument("--rounds", type=int, default=1, help="self-training rounds of the own-sample arms")
    ap.add_argument("--dpo-beta", type=float, default=2000.0, help="β of the *-dpo arms (Diffusion-DPO)")
    ap.add_argument("--dpo-lr", type=float, help="learning rate of the *-dpo arms (default: --lr)")
    ap.add_argument("--pairing", choices=PAIRINGS, default="extremes", help="the *-dpo arms' rejected candidates: "
                    "each prompt's r-th worst (extremes) or the best left out of the top k that scores lower (nearest); "
                    "the two kinds of set live side by side in one --out folder")
    ap.add_argument("--dpo-steps", type=int, help="fine-tuning steps of the *-dpo arms (default: --steps)")
    ap.add_argument("--checkpoints", default="", help="also judge the adapters after these steps, e.g. 25,50,100 "
                    "(a dose-response: does a lighter touch help?)")
    ap.add_argument("--out", default="runs/self_training", help="the folder of this setting's pools, sets, adapters "
                    "and evaluations")
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler of every pool and evaluation (default: the "
                    "model's own DDPM)")
    ap.add_argument("--sample-steps", type=int, help="sampling steps of every pool and evaluation (default: the full "
                    "experiment's default, 25)")
    return ap


def configure(ap: argparse.ArgumentParser, args) -> tuple[ExperimentConfig, list[str], list[int], dict]:
    """The experiment config the knobs give, the arms, the checkpoint doses and the DPO options; a bad value is a
    usage error."""
    arms = args.arms.split(",")
    doses = sorted({int(x) for x in args.checkpoints.split(",") if x})
    if set(arms) - set(ARMS):
        ap.error(f"unknown arm(s) {', '.join(sorted(set(arms) - set(ARMS)))}: use {', '.join(ARMS)}.")
    cfg = replace(ExperimentConfig(), n_prompts=args.prompts, candidates=args.candidates, seed=args.seed,
                  pairing=args.pairing)
    cfg = replace(cfg, finetune_steps=args.steps or cfg.finetune_steps, lr=args.lr or cfg.lr,
                  steps=args.sample_steps or cfg.steps,
                  top_k=args.k or cfg.top_k, rank=args.rank or cfg.rank, alpha=float(args.rank or cfg.alpha))
    longest = max(cfg.finetune_steps, args.dpo_steps or 0)
    if any(not 0 < d < longest for d in doses):
        ap.error(f"--checkpoints must lie between 1 and {longest - 1} (the fine-tuning steps).")
    if not 1 <= cfg.top_k <= args.candidates:
        ap.error(f"--k must lie between 1 and --candidates ({args.candidates}), got {cfg.top_k}.")
    if args.rounds < 1 or cfg.rank < 1 or cfg.steps < 1:
        ap.error("--rounds, --rank and --sample-steps must be at least 1.")
    if not args.dpo_beta > 0 or (args.dpo_lr is not None and not args.dpo_lr > 0) or (args.dpo_steps or 1) < 1:
        ap.error("--dpo-beta, --dpo-lr and --dpo-steps must be positive.")
    dpo = dict(objective="dpo", dpo_beta=args.dpo_beta, lr=args.dpo_lr or cfg.lr,
               steps=args.dpo_steps or cfg.finetune_steps, prompt_dropout=0.0)
    return cfg, arms, doses, dpo


def settings_of(args, cfg: ExperimentConfig, arms: list[str], dpo: dict) -> dict:
    """What one --out folder holds one setting of (the cache key of the whole study)."""
    settings = harness.key(args, "prompts", "dev", "candidates", "images", "rounds", "model", "seed")
    settings.update(k=cfg.top_k, rank=cfg.rank, steps=cfg.finetune_steps, lr=cfg.lr)
    if args.sampler or args.sample_steps:  # only when given, so that folders of older runs still resume
        settings.update(sampler=args.sampler, sample_steps=cfg.steps)
    if any(a.endswith("-dpo") for a in arms):  # DPO settings may be added to a folder later
        settings.update(dpo_beta=dpo["dpo_beta"], dpo_lr=dpo["lr"], dpo_steps=dpo["steps"])
    return settings


class Study:
    """The stages of one --out folder: pools, sets, adapters and evaluations, each skipped when already there."""

    def __init__(self, args, cfg: ExperimentConfig, doses: list[int], dpo: dict):
        self.args, self.cfg, self.doses, self.dpo = args, cfg, doses, dpo
        self.out = Path(args.out)
        self.timings_path = self.out / "timings.json"
        prompts = train_prompts(args.dev + args.prompts, seed=cfg.seed)
        self.dev, self.train = prompts[: args.dev], prompts[args.dev :]

    def timed(self, key: str, fn, *a, **kw):
        """Run one stage and add its wall time to the folder's timings.json."""
        t0 = time.time()
        result = fn(*a, **kw)
        atomic_write(self.timings_path, json.dumps({**self.timings(), key: time.time() - t0}, indent=1))
        return result

    def timings(self) -> dict:
        """{stage: seconds} of every stage timed in the folder so far."""
        return json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}

    def pipe(self, adapter=None):
        """The starting model with the study's sampler, and `adapter` loaded if given."""
        pipe = use_sampler(harness.load_model(self.args.model), self.args.sampler)
        if adapter is not None:
            pipe.load_lora_weights(str(adapter))
        return pipe

    def own_pool(self, folder: Path, g: float, seed: int, adapter=None) -> Path:
        """N candidates per fine-tuning prompt from the model (with `adapter` loaded, if given) at CFG g."""
        cfg = self.cfg
        if not pool_complete(folder):
            self.timed(f"pool {folder}", build_pool, self.pipe(adapter), self.train, folder, cfg.candidates,
                       guidance_scale=g, num_inference_steps=cfg.steps, seed=seed, batch_size=cfg.batch_size)
        return folder

    def tune(self, folder: Path, lora: Path, init=None, **options) -> Path:
        """A LoRA adapter fine-tuned on the set `folder` into `lora` (from `init`, if given)."""
        cfg = self.cfg
        if not (lora / WEIGHTS_NAME).exists():
            steps = options.get("steps", cfg.finetune_steps)
            self.timed(f"finetune {lora}", finetune, self.pipe(), folder, lora, **{
                "rank": cfg.rank, "alpha": cfg.alpha, "steps": steps, "batch_size": cfg.finetune_batch, "lr": cfg.lr,
                "prompt_dropout": cfg.prompt_dropout, "seed": cfg.seed, "sample_prompts": 0,
                "checkpoint_every": math.gcd(steps, *(d for d in self.doses if d < steps)), "init_adapter": init and str(init),
                **options})
        return lora

    def sets(self, arms: list[str]) -> tuple[dict, dict]:
        """The fine-tuning sets of the top-k arms, and which of them were picked from own samples (by what, at which CFG)."""
        cfg, out = self.cfg, self.out
        sets, picks = {}, {}
        if "renders" in arms:
            sets["renders"] = render_set(self.train, cfg.top_k, out / "renders" / "set", seed=10_000 * (cfg.seed + 1))
        for arm in ("oracle", "random", "mi", "oracle-cfg1", "perfect"):
            if arm not in arms:
                continue
            g = 1.0 if arm == "oracle-cfg1" else cfg.guidance_scale
            pool = self.own_pool(out / f"pool-cfg{g:g}", g, cfg.seed)
            by = arm.split("-")[0]
            folder = out / f"{by}-cfg{g:g}" / "set"
            if by == "perfect":
                folder = perfect_set(pool, cfg.top_k, folder)
                if (folder / "metadata.jsonl").read_text().strip():
                    sets[f"perfect own (CFG {g:g})"] = folder
                else:
                    print(f"No candidate in {pool} is strictly aligned and well formed: the perfect arm is skipped.")
                continue
            if not (folder / "manifest.json").exists():
                select(pool, folder, cfg.top_k, by=by, seed=cfg.seed)
            sets[f"{SET_NAMES[by]} (CFG {g:g})"] = folder
            picks[f"{SET_NAMES[by]} (CFG {g:g})"] = by, g
        return sets, picks

    def pairs(self, arms: list[str]) -> dict:
        """The preference sets (chosen vs rejected candidate of the same prompt) of the *-dpo arms."""
        cfg, pairs = self.cfg, {}
        for by in (a.removesuffix("-dpo") for a in arms if a.endswith("-dpo")):
            g = cfg.guidance_scale
            pool = self.own_pool(self.out / f"pool-cfg{g:g}", g, cfg.seed)
            near = cfg.pairing == "nearest"
            folder = self.out / f"{by}{'-nearest' if near else ''}-pairs-cfg{g:g}" / "set"
            if not (folder / "manifest.json").exists():
                select(pool, folder, cfg.top_k, by=by, seed=cfg.seed, pairs=True, pairing=cfg.pairing)
            name = DPO_NAMES[by].replace(" pairs", " nearest pairs") if near else DPO_NAMES[by]
            pairs[f"{name} (CFG {g:g})"] = folder
        return pairs

    def adapters(self, sets: dict, pairs: dict) -> dict:
        """One adapter per set and per preference set."""
        dpo = self.dpo
        adapters = {name: self.tune(folder, folder.parent / "lora") for name, folder in sets.items()}
        adapters.update({name: self.tune(folder, folder.parent / f"lora-beta{dpo['dpo_beta']:g}-lr{dpo['lr']:g}-"
                                                                 f"{dpo['steps']}", **dpo) for name, folder in pairs.items()})
        return adapters

    def more_rounds(self, sets: dict, picks: dict, adapters: dict) -> None:
        """With --rounds R > 1: sample each own-sample arm's latest adapter, pick again, fine-tune on from it; the
        last round's adapter and set replace the first round's in `adapters` and join `sets`."""
        rounds, cfg = self.args.rounds, self.cfg
        for name, (by, g) in picks.items() if rounds > 1 else ():
            for r in range(2, rounds + 1):  # sample the latest adapter, pick again, fine-tune on from it
                rdir = sets[name].parent / f"round{r}"
                self.own_pool(rdir / "pool", g, cfg.seed + r - 1, adapter=adapters[name])
                if not (rdir / "set" / "manifest.json").exists():
                    select(rdir / "pool", rdir / "set", cfg.top_k, by=by, seed=cfg.seed)
                adapters[name] = self.tune(rdir / "set", rdir / "lora", init=adapters[name])
            adapters[f"{name}, {rounds} rounds"] = adapters.pop(name)
            sets[f"{name}, round {rounds}"] = rdir / "set"

    def models(self, adapters: dict, pairs: dict) -> dict:
        """{name: adapter folder, or None for the base}: every adapter, and its checkpoints at the --checkpoints doses."""
        models = {"base": None}
        for name, lora in adapters.items():
            steps = self.dpo["steps"] if name in pairs else self.cfg.finetune_steps
            models.update({f"{name} @ {d} steps": lora / f"checkpoint-{d}" for d in self.doses if d < steps})
            models[name + (f" @ {steps} steps" if self.doses else "")] = lora
        return models

    def evaluate(self, models: dict, pairs: dict) -> dict:
        """Each model judged by the oracle on the dev prompts (kept in <out>/eval)."""
        cfg, dpo, results = self.cfg, self.dpo, {}
        (self.out / "eval").mkdir(parents=True, exist_ok=True)
        for name, lora in models.items():
            slug = name.replace(' ', '_').replace('(', '').replace(')', '').replace('@_', '').replace(',', '')
            if name.split(" @ ")[0] in pairs:
                slug += f"_beta{dpo['dpo_beta']:g}_lr{dpo['lr']:g}_{dpo['steps']}"
            path = self.out / "eval" / f"{slug}.json"
            if not path.exists():
                res, _ = self.timed(f"evaluate {path.name}", evaluate_pipeline, self.pipe(lora), self.dev, self.args.images,
                                    guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps, seed=cfg.seed + 1000,
                                    batch_size=cfg.batch_size, scorers={"oracle": judge})
                res.save(path)
            results[name] = EvalResult.load(path)
        return results

    def head(self, pairs: dict) -> str:
        """The report's first line: the settings of the study."""
        args, cfg, dpo = self.args, self.cfg, self.dpo
        return (f"{args.prompts} training-split prompts to fine-tune on (k = {cfg.top_k} per prompt; pools of N = "
                f"{args.candidates}, {cfg.steps} steps of {args.sampler or 'ddpm'}; {args.rounds} round(s)), {args.dev} "
                f"other training-split "
                f"prompts × {args.images} images to judge on; LoRA rank {cfg.rank}; the top-k arms: {cfg.finetune_steps} "
                f"steps of batch {cfg.finetune_batch}, lr {cfg.lr:g}, prompt dropout {cfg.prompt_dropout:g}"
                + (f"; the DPO arms: β {dpo['dpo_beta']:g}, {dpo['steps']} steps of {cfg.finetune_batch} pairs, lr "
                   f"{dpo['lr']:g}, no prompt dropout" if pairs else "") + f"; seed {cfg.seed}; "
                f"model {args.model or 'shipped'}.\n")


def report(head: str, results: dict, sets: dict, pairs: dict) -> tuple[str, dict]:
    """The printed report (what each set and preference set holds, how each model does on the dev prompts) and
    its numbers."""
    rows = {name: _model_row(res, results["base"]) for name, res in results.items()}
    set_rows = {name: set_row(folder, folder.parent / "lora") for name, folder in sets.items()}
    pair_rows = {name: pair_row(folder) for name, folder in pairs.items()}
    lines = [head, "What each set holds (base loss: the starting model's ε-prediction loss on the set's held-out images)\n",
             "| set | images | strict % | soft % | well-formed % | coloured px | base loss |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['images']} | {100 * r['strict']:.1f} | {100 * r['soft']:.1f} | {100 * r['well_formed']:.1f} "
              f"| {r['area']:.0f} | {r['base_loss']:.4f} |" for name, r in set_rows.items()]
    if pairs:
        lines += ["\nWhat each preference set holds (chosen / rejected; ties, which DPO leaves out, counted apart)\n",
                  "| pairs | pairs | ties | chosen strict % | rejected strict % | rejected soft % | rejected with a "
                  "wrong colour % | chosen px | rejected px |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {r['pairs']} | {r['ties']} | {100 * r['chosen_strict']:.1f} | "
                  f"{100 * r['rejected_strict']:.1f} | {100 * r['rejected_soft']:.1f} | "
                  f"{100 * r['rejected_failures']['wrong colour']:.1f} | {r['chosen_area']:.0f} | {r['rejected_area']:.0f} |"
                  for name, r in pair_rows.items()]
    lines += [f"\nOn the dev prompts (strict % with 95 % CI over prompts)\n\n{comparison_table(results, 'strict', 'base')}\n",
              "| model | soft % | coloured px |", "|---|---:|---:|"]
    lines += [f"| {name} | {100 * r['soft']:.1f} | {r['area']:.0f} |" for name, r in rows.items()]
    return "\n".join(lines), {"sets": set_rows, "pairs": pair_rows, "models": rows}


def main(argv=None) -> int:
    ap = arguments()
    run = harness.start(ap, argv)
    cfg, arms, doses, dpo = configure(ap, run.args)
    settings = settings_of(run.args, cfg, arms, dpo)
    harness.claim(run.args.out, settings)
    study = Study(run.args, cfg, doses, dpo)
    sets, picks = study.sets(arms)
    pairs = study.pairs(arms)
    adapters = study.adapters(sets, pairs)
    study.more_rounds(sets, picks, adapters)
    results = study.evaluate(study.models(adapters, pairs), pairs)
    text, data = report(study.head(pairs), results, sets, pairs)
    print(text)
    timings = study.timings()  # the wall time is that of the stages timed in --out, over every run that filled it
    run.write({"settings": settings, **data, "timed_stages": len(timings)},
              f"{text}\n\nWall time: the {len(timings)} stages timed in {run.args.out} (pools, fine-tuning, evaluations).",
              wall_s=sum(timings.values()))
    return 0


def _model_row(res: EvalResult, base: EvalResult) -> dict:
    s = res.summary()["all"]
    delta, ci = paired_delta(base, res, "strict", "all") if res is not base else (0.0, (0.0, 0.0))
    return {"strict": s["strict"], "delta_strict": delta, "delta_ci": list(ci), "soft": s["soft"],
            "well_formed": s["well_formed"], "area": s["area"]}


def pair_row(folder: Path) -> dict:
    """The oracle's verdict on a preference set's chosen and rejected images, and how often each failure mode
    makes a rejected image wrong (what the pairs teach against)."""
    data = load_finetune_set(folder)
    win, lose = oracle_scorer(data.images, data.prompts), oracle_scorer(data.rejected, data.prompts)
    return {"pairing": load_records(folder)[0].get("pairing", "extremes"), "pairs": len(data.prompts),
            "ties": sum(bool(r.get("tie")) for r in data.records),
            "chosen_strict": float(win["strict"].mean()), "rejected_strict": float(lose["strict"].mean()),
            "chosen_soft": float(win["soft"].mean()), "rejected_soft": float(lose["soft"].mean()),
            "chosen_area": float(win["area"].mean()), "rejected_area": float(lose["area"].mean()),
            "rejected_failures": {m: float(lose[m].mean()) for m in world.FAILURE_MODES}}


if __name__ == "__main__":
    harness.main(main)
