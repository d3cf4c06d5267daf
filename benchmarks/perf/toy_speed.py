"""Training and sampling throughput of the Shapes-world base model on this machine.

    python -m benchmarks.perf.toy_speed [--steps 10] [--threads N] [--results STEM]

Times `--steps` training steps of the shipped architecture and config (after two warm-up steps),
reports images/s and the extrapolated wall time of the full training run that made the shipped
weights, then times 25-step CFG sampling of one batch. Exits with status 1 when the extrapolated
full training run takes longer than the goal of 60 minutes.
"""

import json
import tempfile
import time

import torch

from benchmarks import harness
from minitune.toy import world
from minitune.toy.pipeline import WEIGHTS_DIR
from minitune.toy.train import TrainConfig, train

GOAL_MIN = 60  # minutes for the full training run of the shipped weights


def training_step_s(shipped: TrainConfig, steps: int) -> tuple[float, TrainConfig]:
    """Seconds per training step of the shipped config (after two warm-up steps), and the config timed."""
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(**{**shipped.__dict__, "steps": steps + 2, "checkpoint_every": 10**9})
        train(d, cfg, progress=False, until=2)  # warm-up (also builds the model)
        t0 = time.perf_counter()
        train(d, cfg, progress=False)
        return (time.perf_counter() - t0) / steps, cfg


def sampling_s() -> float:
    """Seconds to sample 64 images (16 prompts × 4) with 25 CFG steps in one batch, after a warm-up."""
    pipe = harness.load_model()
    prompts = world.eval_prompts(per_category=4)[:16]
    pipe(prompts[:2], num_inference_steps=2)  # warm-up
    t0 = time.perf_counter()
    pipe(prompts, num_images_per_prompt=4, guidance_scale=4.0, num_inference_steps=25, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None, threads=True)
    ap.add_argument("--steps", type=int, default=10)
    run = harness.start(ap, argv)
    args = run.args
    shipped = TrainConfig(**json.loads((WEIGHTS_DIR / "train_config.json").read_text()))
    dt, cfg = training_step_s(shipped, args.steps)
    full_min = shipped.steps * dt / 60
    out = harness.Report()
    out(f"threads: {args.threads}")
    out(f"training: {dt:.2f} s/step, {cfg.batch_size / dt:.1f} images/s (batch {cfg.batch_size})")
    out(f"full training run of the shipped weights ({shipped.steps} steps): {full_min:.1f} min (goal <= {GOAL_MIN})")
    sample = sampling_s()
    out(f"sampling: 64 images, 25 CFG steps, batch 64: {sample:.1f} s, {64 / sample:.1f} images/s")
    status = harness.goal(full_min, GOAL_MIN, "full training run of the shipped weights, min", at_most=True, fmt=".1f")
    run.write({"threads": args.threads, "train_s_per_step": dt, "batch_size": cfg.batch_size, "shipped_steps": shipped.steps,
               "full_training_min": full_min, "goal_min": GOAL_MIN, "goal_met": status == 0, "sampling_s": sample,
               "sampling_images_per_s": 64 / sample}, out.markdown(fenced=True))
    return status


if __name__ == "__main__":
    harness.main(main)
