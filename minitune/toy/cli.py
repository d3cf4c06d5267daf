"""The Shapes world's commands: ``toy-train``, ``toy-ship``, ``toy-eval`` and ``experiment``.

Its plug-in (:mod:`minitune.toy.plugin`) adds them to the ``minitune`` command; they share the core
command's options and helpers (:mod:`minitune.cli`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..cli import (add_alias, add_pairing_arg, add_recipe_arg, add_sample_steps_arg, add_sampler_arg, add_samples_args,
                   add_sampling_command, command_prompts, load_model, sampling_of)
from . import world
from .pipeline import ShapesPipeline


def _shapes_only(args, instead: str) -> None:
    """Refuse a model that is not a Shapes pipeline; a missing folder is left to the loader's own sentence."""
    from ..models import check_model, pipeline_class

    check_model(args.model)
    if pipeline_class(args.model) != ShapesPipeline.__name__:
        raise ValueError(f"`minitune {args.command}` needs the Shapes world's oracle, and {args.model} is not a Shapes "
                         f"pipeline; {instead}.")


def cmd_toy_eval(args):
    from ..images import save_grid
    from ..sampling import sample_with_mi
    from .scoring import alignment_table, failure_table

    _shapes_only(args, "use `minitune evaluate --scorer blip-vqa` for other models")
    prompts = command_prompts(args)
    pipe = load_model(args)
    guidance, steps = sampling_of(pipe, args.guidance_scale, args.steps)
    t0 = time.time()
    cands = sample_with_mi(pipe, prompts, args.n_per_prompt, guidance_scale=guidance, num_inference_steps=steps,
                           seed=args.seed, batch_size=args.batch_size)
    images = cands.images
    ev = world.evaluate(images, cands.prompts)
    report = (
        f"Model: {args.model}; {len(prompts)} prompts × {args.n_per_prompt} images; CFG {guidance}, "
        f"{steps} steps of {type(pipe.scheduler).__name__}, seed {args.seed}; {time.time() - t0:.0f} s; mean trajectory MI "
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


def cmd_experiment(args):
    from dataclasses import replace

    from ..selection import SIGNALS, sample_options
    from ..tools.results import git_commit
    from .experiment import PRESETS, publish, run_experiment

    _shapes_only(args, "on other models run `minitune build`, `finetune` and `evaluate`")
    cfg = PRESETS[args.recipe]
    samples = [(option, getattr(args, option)) for option in sample_options(SIGNALS).values()]
    overrides = {k: v for k, v in (("selectors", args.selectors and tuple(args.selectors)), ("rounds", args.rounds),
                                   *samples, ("objective", args.objective),
                                   ("dpo_beta", args.dpo_beta), ("pairing", args.pairing), ("sampler", args.sampler),
                                   ("steps", args.steps))
                 if v is not None}
    t0, commit = time.time(), git_commit()  # the code that runs, whatever changes while it does
    data = run_experiment(args.output_dir, replace(cfg, **overrides), model=None if args.model == "toy" else args.model,
                          device=args.device, pool_from=args.pool_from)
    print((Path(args.output_dir) / "results.md").read_text())
    print(f"wrote {args.output_dir}/results.json, results.md and figures/ in {time.time() - t0:.0f} s")
    if args.results_dir:
        wall = sum(data["timings"].values())
        paths = publish(data, args.results_dir, model=args.model, command="minitune " + " ".join(sys.argv[1:]),
                        wall_s=wall, commit=commit, figures=Path(args.output_dir) / "figures", name=args.results_name)
        print(f"wrote {paths[0]} and {paths[1]}")


def cmd_toy_train(args):
    from .train import TrainConfig, train

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, snr_gamma=args.snr_gamma,
                      caption_noise=args.caption_noise, channels=args.channels, width=args.width,
                      category_weights=args.category_weights, warmup=args.warmup, init_from=args.init_from,
                      single_object_share=args.single_object_share)
    final = train(args.output_dir, cfg)
    print(f"pipeline saved to {final}")


def cmd_toy_ship(args):
    from .train import ship

    print(f"shipped {ship(args.run_dir, args.step, args.dest)}")


def _add_toy_train(sub) -> None:
    p = sub.add_parser("toy-train", help="train the Shapes-world base model from scratch (resumable)")
    p.add_argument("--output-dir", default="runs/base")
    p.add_argument("--train-steps", dest="steps", type=int, default=1500)
    add_alias(p, "--steps", "--train-steps", "steps", type=int)
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
    p.add_argument("--single-object-share", type=float, default=0.0, help="share of the training prompts replaced by "
                   "one-object prompts, as a web corpus holds mostly pictures of one thing")
    p.add_argument("--warmup", type=int, default=50, help="steps of linear learning-rate warm-up before the cosine decay")
    p.add_argument("--init-from", help="start from this saved Shapes pipeline's weights (same --channels and --width), "
                   "e.g. to train a second stage on another data mix")
    p.set_defaults(func=cmd_toy_train, resumable=True)


def _add_toy_ship(sub) -> None:
    p = sub.add_parser("toy-ship", help="copy a trained base model (with config and curve) into the package")
    p.add_argument("--run-dir", default="runs/base")
    p.add_argument("--step", type=int, help="which saved step (default: the last)")
    p.add_argument("--dest", help="destination folder (default: the package's weights folder)")
    p.set_defaults(func=cmd_toy_ship)


def _add_toy_eval(sub) -> None:
    add_sampling_command(sub, "toy-eval", "sample a Shapes model on held-out prompts and print the oracle's tables",
                          cmd_toy_eval, "report.md, records.json and grid.png")


def _add_experiment(sub) -> None:
    from ..finetune import OBJECTIVES
    from ..selection import SIGNALS
    from .experiment import PRESETS

    p = sub.add_parser("experiment", help="the whole MI-TUNE experiment: pool, MI/random/oracle sets, LoRA, evaluation")
    add_recipe_arg(p, PRESETS, "the experiment's settings (minitune.toy.experiment.PRESETS; default: full); "
                   "options given here override them", default="full")
    p.add_argument("--output-dir", default="outputs/experiment")
    p.add_argument("--model", default="toy", help="'toy' (the shipped base model) or a saved Shapes pipeline folder; "
                   "the experiment needs the Shapes world's oracle (real models: build, finetune and evaluate)")
    p.add_argument("--selectors", nargs="+", choices=list(SIGNALS), help="MI signals, one fine-tuned arm each")
    p.add_argument("--rounds", type=int, help="self-training rounds")
    add_samples_args(p)
    p.add_argument("--objective", choices=list(OBJECTIVES),
                   help="fine-tune on each arm's top-k (mse, the paper) or by Diffusion-DPO on its preference pairs (dpo)")
    p.add_argument("--dpo-beta", type=float, help="DPO's β (with --objective dpo)")
    add_pairing_arg(p, "with --objective dpo, default: the recipe's")
    add_sampler_arg(p, "the recipe's")
    add_sample_steps_arg(p, "sampling steps for the pool and the evaluations (default: the recipe's)")
    p.add_argument("--results-dir", help="also write experiment.json and experiment.md here (e.g. book/results), "
                   "headed with the model, commit, command and wall time")
    p.add_argument("--results-name", default="experiment",
                   help="the results files' name in --results-dir (e.g. experiment_paper_recipe)")
    p.add_argument("--pool-from", help="a finished experiment's output folder whose candidate pool (and base evaluation, "
                   "where made with the same settings) this one reuses, e.g. to change only the fine-tuning recipe")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_experiment, resumable=True)


COMMANDS = (_add_toy_train, _add_toy_ship, _add_toy_eval, _add_experiment)
