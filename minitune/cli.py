"""The ``minitune`` command. Every subcommand prints bad input as one sentence and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import GUIDANCE_SCALE


def _pipe(args):
    from . import resolve_device
    from .sampling import use_sampler
    from .toy.pipeline import load_pipeline

    pipe = load_pipeline(args.model, device=resolve_device(args.device))
    return use_sampler(pipe, getattr(args, "sampler", None))


def _prompts(args):
    """The prompts of a command, checked before any model is loaded."""
    from .toy import world

    if not (args.prompt or args.prompt_file):
        return world.eval_prompts(args.per_category, seed=args.seed)
    prompts = args.prompt
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"Prompt file {path} does not exist; give a text file with one prompt per line.")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"Prompt file {path} is empty; put one prompt per line.")
    for p in prompts:
        world.parse(p)
    return prompts


def cmd_toy_train(args):
    from .toy.train import TrainConfig, train

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, snr_gamma=args.snr_gamma,
                      caption_noise=args.caption_noise, channels=args.channels, width=args.width,
                      category_weights=args.category_weights)
    final = train(args.output_dir, cfg)
    print(f"pipeline saved to {final}")


def cmd_toy_ship(args):
    from .toy.train import ship

    print(f"shipped {ship(args.run_dir, args.step, args.dest)}")


def cmd_toy_eval(args):
    from .evaluate import alignment_table, failure_table
    from .plotting import save_grid
    from .sampling import sample_with_mi
    from .toy import world

    prompts = _prompts(args)
    pipe = _pipe(args)
    t0 = time.time()
    cands = sample_with_mi(pipe, prompts, args.n_per_prompt, guidance_scale=args.guidance_scale,
                           num_inference_steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    images = cands.images
    ev = world.evaluate(images, cands.prompts)
    report = (
        f"Model: {args.model}; {len(prompts)} prompts × {args.n_per_prompt} images; CFG {args.guidance_scale}, "
        f"{args.steps} DDPM steps, seed {args.seed}; {time.time() - t0:.0f} s; mean trajectory MI "
        f"{cands.mi.mean():.1f} nats.\n\n"
        f"Alignment (exact oracle):\n\n{alignment_table(ev)}\n\n"
        f"Failure modes (% of images; an image can show several):\n\n{failure_table(ev)}\n"
    )
    print(report)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report)
        (out / "records.json").write_text(json.dumps(ev.records, indent=1))
        save_grid(out / "grid.png", images[: 8 * args.n_per_prompt], cols=args.n_per_prompt * 2)
        print(f"wrote {out}/report.md, records.json and grid.png")


def cmd_mi(args):
    from .plotting import save_grid
    from .sampling import sample_with_mi
    from .toy import world

    prompts = _prompts(args)
    pipe = _pipe(args)
    cands = sample_with_mi(pipe, prompts, args.n_per_prompt, guidance_scale=args.guidance_scale,
                           num_inference_steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    ev = world.evaluate(cands.images, cands.prompts)
    order = []
    for p in range(len(prompts)):
        rows = sorted(range(p * args.n_per_prompt, (p + 1) * args.n_per_prompt), key=lambda r: -float(cands.mi[r]))
        order += rows
        print(f"\n{prompts[p]}")
        print("  rank  MI (nats)  strict  soft  seed")
        for rank, r in enumerate(rows):
            rec = ev.records[r]
            print(f"  {rank:4d}  {cands.mi[r]:9.2f}  {rec['strict']:6.0f}  {rec['soft']:4.2f}  {cands.seeds[r]}")
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_grid(out / "ranked.png", cands.images[order], cols=args.n_per_prompt)
        print(f"\nwrote {out / 'ranked.png'} (one row per prompt, highest MI first)")


def cmd_evaluate(args):
    from .evaluate import comparison_table, evaluate_pipeline
    from .finetune import WEIGHTS_NAME
    from .plotting import save_grid

    prompts = _prompts(args)
    if args.lora and not (Path(args.lora) / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"No LoRA adapter in {args.lora}: the folder must hold {WEIGHTS_NAME} "
                                "(made by `minitune finetune`).")
    pipe = _pipe(args)
    if args.lora:
        pipe.load_lora_weights(args.lora)
    res, cands = evaluate_pipeline(pipe, prompts, args.n_per_prompt, guidance_scale=args.guidance_scale,
                                   num_inference_steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    name = "base" if not args.lora else Path(args.lora).name
    table = comparison_table({name: res}, "strict")
    print(table)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        res.save(out / "eval.json")
        save_grid(out / "grid.png", cands.images[: 8 * args.n_per_prompt], cols=args.n_per_prompt * 2)
        print(f"wrote {out}/eval.json and grid.png")


def cmd_experiment(args):
    from dataclasses import replace

    from .experiment import PRESETS, publish, run_experiment
    from .results import git_commit

    cfg = PRESETS[args.preset]
    overrides = {k: v for k, v in (("selectors", args.selectors and tuple(args.selectors)), ("rounds", args.rounds),
                                   ("renoise_samples", args.renoise_samples),
                                   ("contrast_samples", args.contrast_samples), ("objective", args.objective),
                                   ("dpo_beta", args.dpo_beta), ("sampler", args.sampler), ("steps", args.steps))
                 if v is not None}
    t0, commit = time.time(), git_commit()  # the code that runs, whatever changes while it does
    data = run_experiment(args.output_dir, replace(cfg, **overrides), model=None if args.model == "toy" else args.model,
                          device=args.device)
    print((Path(args.output_dir) / "results.md").read_text())
    print(f"wrote {args.output_dir}/results.json, results.md and figures/ in {time.time() - t0:.0f} s")
    if args.results_dir:
        wall = sum(data["timings"].values())
        paths = publish(data, args.results_dir, model=args.model, command="minitune " + " ".join(sys.argv[1:]),
                        wall_s=wall, commit=commit, figures=Path(args.output_dir) / "figures")
        print(f"wrote {paths[0]} and {paths[1]}")


def cmd_build(args):
    from .selection import build, check_top_k, load_records, read_prompts, train_prompts
    from .toy import world

    check_top_k(args.top_k, args.candidates)  # before the model loads
    prompts = read_prompts(args.prompts) if args.prompts else train_prompts(args.n_prompts, seed=args.seed)
    for p in prompts:
        world.parse(p)
    selectors = [args.selector] + (["random", "oracle"] if args.controls else [])
    paths = build(_pipe(args), prompts, args.output_dir, args.candidates, args.top_k, selectors=selectors,
                  guidance_scale=args.cfg, num_inference_steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                  renoise_samples=args.renoise_samples, contrast_samples=args.contrast_samples,
                  keep_latents=args.keep_latents, model=args.model, pairs=args.pairs)
    print(f"{len(prompts)} prompts × {args.candidates} candidates, top-{args.top_k} per prompt; CFG {args.cfg}, "
          f"{args.steps} {args.sampler or 'DDPM'} steps, seed {args.seed}\n")
    print("| folder | images | mean MI (nats) | strict % | soft % |\n|---|---:|---:|---:|---:|")
    for path in paths.values():
        _, records = load_records(path)
        mean = {key: sum(r[key] for r in records) / len(records) for key in ("mi", "strict", "soft")}
        print(f"| {path} | {len(records)} | {mean['mi']:.1f} | {100 * mean['strict']:.1f} | {100 * mean['soft']:.1f} |")


def cmd_finetune(args):
    from accelerate import PartialState

    from .finetune import FinetuneConfig, check_objective, finetune, load_finetune_set

    cfg = FinetuneConfig(rank=args.rank, alpha=args.alpha if args.alpha is not None else args.rank, dora=args.dora,
                         steps=args.steps, batch_size=args.batch_size, lr=args.lr, prompt_dropout=args.prompt_dropout,
                         seed=args.seed, validate_every=args.validate_every, checkpoint_every=args.checkpoint_every,
                         sample_prompts=args.sample_prompts, init_adapter=args.init_adapter, objective=args.objective,
                         dpo_beta=args.dpo_beta)
    data = load_finetune_set(args.data_dir)  # a bad set is reported before the model loads
    check_objective(cfg, data)
    out = finetune(_pipe(args), data, args.output_dir, cfg, device=args.device)
    if PartialState().is_main_process:  # once, also under `accelerate launch`
        last = (out / "loss.csv").read_text().splitlines()[-1].split(",")
        print(f"LoRA adapter saved to {out} (step {last[0]}, loss {last[1]}); "
              f"load it with pipe.load_lora_weights({str(out)!r})")


def cmd_sweep(args):
    from .sweep import parse_param, run_sweep

    params = dict(parse_param(text) for text in args.param)
    table = run_sweep(args.notebook, params, args.output_dir, metric=args.metric, x=args.x, kernel_name=args.kernel)
    out = Path(args.output_dir)
    print((out / "sweep.md").read_text())
    print(f"wrote {out}/sweep.md, sweep.csv and sweep.png ({len(table)} rows); executed notebooks in {out}/<run>/")


def _sampling_args(p, per_category=70):
    p.add_argument("--model", default="toy", help="'toy' (the shipped base model) or a saved pipeline folder")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); default: held-out test prompts")
    p.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument("--per-category", type=int, default=per_category, help=f"test prompts per category (default {per_category})")
    p.add_argument("--n-per-prompt", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--steps", type=int, default=25)
    _sampler_arg(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def _sampler_arg(p, default_help="the model's own scheduler"):
    from .sampling import SAMPLERS

    p.add_argument("--sampler", choices=list(SAMPLERS), help=f"the sampler, built from the model's scheduler config "
                   f"(default: {default_help}); book/results/sampler.md compares them")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minitune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("toy-train", help="train the Shapes-world base model from scratch (resumable)")
    p.add_argument("--output-dir", default="runs/base")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--snr-gamma", type=float, help="Min-SNR-γ loss weighting (e.g. 5; default: plain ε-loss)")
    p.add_argument("--channels", type=int, nargs=3, default=[32, 64, 64], metavar="C",
                   help="UNet channels at 32×32, 16×16 and 8×8")
    p.add_argument("--width", type=int, default=64, help="text-encoder width (= the UNet's cross-attention dimension)")
    p.add_argument("--caption-noise", type=float, default=0.0,
                   help="fraction of training images that leave out one object their caption names (loose captions)")
    p.add_argument("--category-weights", type=float, nargs=5, metavar="W",
                   help="share of the batches for color, shape, spatial, count and complex prompts (default: equal)")
    p.set_defaults(func=cmd_toy_train)

    p = sub.add_parser("toy-ship", help="copy a trained base model (with config and curve) into the package")
    p.add_argument("--run-dir", default="runs/base")
    p.add_argument("--step", type=int, help="which saved step (default: the last)")
    p.add_argument("--dest", help="destination folder (default: the package's weights folder)")
    p.set_defaults(func=cmd_toy_ship)

    p = sub.add_parser("toy-eval", help="sample a Shapes model on held-out prompts and print the oracle's tables")
    _sampling_args(p)
    p.add_argument("--output-dir", help="also write report.md, records.json and grid.png here")
    p.set_defaults(func=cmd_toy_eval)

    p = sub.add_parser("mi", help="sample N candidates per prompt and rank them by trajectory MI (with the oracle's verdict)")
    _sampling_args(p, per_category=1)
    p.add_argument("--output-dir", help="also write ranked.png here")
    p.set_defaults(func=cmd_mi)
    p = sub.add_parser("evaluate", help="judge a model (optionally with a LoRA adapter) on held-out prompts")
    _sampling_args(p)
    p.add_argument("--lora", help="a LoRA folder to load with pipe.load_lora_weights")
    p.add_argument("--output-dir", help="also write eval.json and grid.png here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("experiment", help="the whole MI-TUNE experiment: pool, MI/random/oracle sets, LoRA, evaluation")
    p.add_argument("--preset", choices=["tiny", "full"], default="full")
    p.add_argument("--output-dir", default="outputs/experiment")
    p.add_argument("--model", default="toy", help="'toy' (the shipped base model) or a saved Shapes pipeline folder")
    p.add_argument("--selectors", nargs="+", choices=["mi", "mi_renoise", "mi_contrast"],
                   help="MI signals, one fine-tuned arm each")
    p.add_argument("--rounds", type=int, help="self-training rounds")
    p.add_argument("--renoise-samples", type=int, help="re-noising MI samples per candidate (needed by mi_renoise)")
    p.add_argument("--contrast-samples", type=int, help="contrast MI samples per candidate and prompt (needed by mi_contrast)")
    p.add_argument("--objective", choices=["mse", "dpo"],
                   help="fine-tune on each arm's top-k (mse, the paper) or by Diffusion-DPO on its best-vs-worst pairs (dpo)")
    p.add_argument("--dpo-beta", type=float, help="DPO's β (with --objective dpo)")
    _sampler_arg(p, "the preset's")
    p.add_argument("--steps", type=int, help="sampling steps for the pool and the evaluations (default: the preset's)")
    p.add_argument("--results-dir", help="also write experiment.json and experiment.md here (e.g. book/results), "
                   "headed with the model, commit, command and wall time")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("build", help="build the MI-filtered fine-tuning set: N candidates per prompt, top-k by MI (resumable)")
    p.add_argument("--model", default="toy", help="'toy' (the shipped base model) or a saved Shapes pipeline folder")
    p.add_argument("--prompts", "--prompt-file", dest="prompts",
                   help="a text file with one prompt per line (default: Shapes-world training prompts)")
    p.add_argument("--n-prompts", type=int, default=64, help="training prompts to draw when no --prompts file is given")
    p.add_argument("--candidates", type=int, default=16, help="N, candidates sampled per prompt")
    p.add_argument("--top-k", type=int, default=1, help="k, candidates kept per prompt")
    p.add_argument("--cfg", "--guidance-scale", dest="cfg", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--steps", type=int, default=25)
    _sampler_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--renoise-samples", type=int, default=0,
                   help="re-noising MI samples per candidate (0: off; the mi_renoise selector needs at least 2)")
    p.add_argument("--contrast-samples", type=int, default=0,
                   help="contrast MI samples per candidate and prompt (0: off; the mi_contrast selector needs at least 2)")
    p.add_argument("--selector", choices=["mi", "mi_renoise", "mi_contrast", "random", "oracle"], default="mi")
    p.add_argument("--controls", action="store_true", help="also write the random-k and oracle top-k sets of the same pool")
    p.add_argument("--keep-latents", action="store_true", help="also store latents and prompt embeddings (safetensors)")
    p.add_argument("--pairs", action="store_true", help="preference sets for `finetune --objective dpo`: each kept "
                   "candidate paired with a worst one of its prompt (needs --candidates ≥ 2 × --top-k)")
    p.add_argument("--output-dir", default="runs/build", help="gets pool/ and one folder per selected set")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("finetune", help="train a LoRA adapter on a fine-tuning set (resumable; diffusers LoRA format)")
    p.add_argument("--data-dir", required=True, help="the set: PNG images and metadata.jsonl (as `minitune build` writes)")
    p.add_argument("--output-dir", required=True, help="gets pytorch_lora_weights.safetensors, checkpoints, loss.csv, samples/")
    p.add_argument("--model", default="toy", help="'toy' (the shipped base model) or a saved Shapes pipeline folder")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    p.add_argument("--dora", action="store_true", help="train a DoRA (weight-decomposed) adapter")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=32, help="global batch, split over accelerate processes")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--prompt-dropout", type=float, default=0.0, help="fraction of prompts replaced by the empty prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-every", type=int, default=100, help="held-out loss and a sample grid every N steps")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--sample-prompts", type=int, default=4, help="prompts in each validation sample grid (0: no grids)")
    p.add_argument("--init-adapter", help="continue from this adapter folder (e.g. the previous self-training round)")
    p.add_argument("--objective", choices=["mse", "dpo"], default="mse", help="mse: the diffusion loss on the set's "
                   "images; dpo: Diffusion-DPO on a preference set (`minitune build --pairs`) against the starting model")
    p.add_argument("--dpo-beta", type=float, default=2000.0, help="DPO's β: larger keeps the adapter closer to the model")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("sweep", help="run a notebook over a parameter grid (papermill) and tabulate and plot its results.json")
    p.add_argument("notebook", help="the notebook; it writes results.json into its output_dir parameter")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="values of one notebook parameter (repeatable: the grid is the product); lists in brackets, "
                        "quoted for the shell, e.g. 'guidance_scales=[1.0],[3.0],[6.0]'")
    p.add_argument("--output-dir", required=True, help="gets one folder per run, sweep.md, sweep.csv and sweep.png")
    p.add_argument("--metric", help="the results column to plot (default: strict, else the first numeric column)")
    p.add_argument("--x", help="the column on the x axis (default: the first swept parameter)")
    p.add_argument("--kernel", help="Jupyter kernel name (default: the notebook's)")
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"minitune {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
