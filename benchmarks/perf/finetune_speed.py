"""LoRA fine-tuning throughput of the Shapes model next to its full base-model training step.

    python -m benchmarks.perf.finetune_speed [--steps 4] [--repeats 3] [--rank 32] [--threads N] [--results STEM]

For batch 32 and 64, times ``minitune.finetune.finetune`` (rank-`--rank` LoRA on the UNet
attention projections of the shipped model, on a set of rendered scenes) and
``minitune.toy.train.train`` (the full training step that made the shipped model: UNet and text
encoder, on-the-fly rendering, EMA) on the same batch. After one warm-up step each, both train
on in alternating chunks of `--steps` steps (so that drifts in machine load hit both alike); a
chunk's time, less the fixed cost of a call (resuming without a step), over its steps is one
measurement, and the fastest of `--repeats` counts. Each chunk ends with a checkpoint, as real
runs do. Prints steps/s, images/s and the LoRA/full time ratio (no goal: a measurement).
"""

import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks import harness
from minitune.finetune import finetune
from minitune.toy import world
from minitune.toy.pipeline import WEIGHTS_DIR
from minitune.toy.train import TrainConfig, train


def write_set(folder: Path, n: int) -> None:
    """A fine-tuning set (imagefolder) of renders of the first `n` training prompts drawn with seed 0."""
    folder.mkdir(parents=True)
    prompts = world.sample_prompts("train", n, seed=0)
    with (folder / "metadata.jsonl").open("w") as f:
        for i, (p, a) in enumerate(zip(prompts, world.to_uint8(world.render_batch(prompts, range(n))))):
            Image.fromarray(a).save(folder / f"{i:04d}.png")
            f.write(json.dumps({"file_name": f"{i:04d}.png", "text": p, "mi": 0.0, "seed": i, "rank": 0}) + "\n")


def timed(fn) -> float:
    """Wall-clock seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_step(runs: dict, steps: int, repeats: int) -> dict:
    """Seconds per step of each ``run(until)``, measured in alternating chunks; the fastest chunk counts."""
    for run in runs.values():
        run(1)
    fixed = {name: timed(lambda: run(1)) for name, run in runs.items()}
    times = {name: [] for name in runs}
    for r in range(repeats):
        for name, run in runs.items():
            times[name].append((timed(lambda: run(1 + (r + 1) * steps)) - fixed[name]) / steps)
    return {name: min(t) for name, t in times.items()}


def batch_row(pipe, shipped: TrainConfig, d: Path, batch: int, args) -> dict:
    """Seconds per step of LoRA fine-tuning and of full training at one batch size."""
    total = 1 + args.repeats * args.steps
    cfg = TrainConfig(**{**shipped.__dict__, "steps": total, "batch_size": batch, "checkpoint_every": 10**9})
    t = per_step({
        "lora": lambda until: finetune(
            pipe, d / "set", d / f"lora{batch}", rank=args.rank, alpha=args.rank, steps=total,
            batch_size=batch, val_fraction=0, validate_every=0, sample_prompts=0, checkpoint_every=10**9,
            progress=False, until=until),
        "full": lambda until: train(d / f"full{batch}", cfg, progress=False, until=until),
    }, args.steps, args.repeats)
    return {"batch": batch, "lora_s_per_step": t["lora"], "full_s_per_step": t["full"], "ratio": t["lora"] / t["full"]}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None, threads=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    run = harness.start(ap, argv)
    args = run.args
    shipped = TrainConfig(**json.loads((WEIGHTS_DIR / "train_config.json").read_text()))
    pipe = harness.load_model()
    out = harness.Report()
    out(f"threads: {args.threads}; shipped Shapes model; LoRA rank {args.rank} on to_q/to_k/to_v/to_out.0\n")
    out("| batch | LoRA steps/s | LoRA images/s | full steps/s | full images/s | LoRA/full time |")
    out("|---:|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_set(d / "set", 64)
        for batch in (32, 64):
            rows.append(r := batch_row(pipe, shipped, d, batch, args))
            lora, full = r["lora_s_per_step"], r["full_s_per_step"]
            out(f"| {batch} | {1 / lora:.2f} | {batch / lora:.1f} | {1 / full:.2f} | {batch / full:.1f} | {lora / full:.2f} |")
    run.write({"settings": harness.key(args, "steps", "repeats", "rank", "threads"), "rows": rows}, out.markdown())
    return 0


if __name__ == "__main__":
    harness.main(main)
