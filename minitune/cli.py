"""The ``minitune`` command. Every subcommand prints bad input as one sentence and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _pipe(args):
    from . import resolve_device
    from .toy.pipeline import load_pipeline

    return load_pipeline(args.model if args.model != "toy" else None, device=resolve_device(args.device))


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
                      checkpoint_every=args.checkpoint_every)
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


def _sampling_args(p, per_category=70):
    p.add_argument("--model", default="toy", help="'toy' (the shipped base model) or a saved pipeline folder")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); default: held-out test prompts")
    p.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument("--per-category", type=int, default=per_category, help=f"test prompts per category (default {per_category})")
    p.add_argument("--n-per-prompt", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


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
