"""Training and sampling throughput of the Shapes-world base model on this machine.

    python benchmarks/toy_speed.py [--steps 10] [--threads N]

Times `--steps` training steps of the shipped architecture and config (after two warm-up steps),
reports images/s and the extrapolated wall time of the full training run that made the shipped
weights, then times 25-step CFG sampling of one batch.
"""

import argparse
import json
import time

import torch

from minitune.toy import world
from minitune.toy.pipeline import WEIGHTS_DIR, load_pipeline
from minitune.toy.train import TrainConfig, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shipped = TrainConfig(**json.loads((WEIGHTS_DIR / "train_config.json").read_text()))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(**{**shipped.__dict__, "steps": args.steps + 2, "checkpoint_every": 10**9})
        train(d, cfg, progress=False, until=2)  # warm-up (also builds the model)
        t0 = time.perf_counter()
        train(d, cfg, progress=False)
        dt = (time.perf_counter() - t0) / args.steps
    ips = cfg.batch_size / dt
    print(f"threads: {args.threads}")
    print(f"training: {dt:.2f} s/step, {ips:.1f} images/s (batch {cfg.batch_size})")
    print(f"full training run of the shipped weights ({shipped.steps} steps): {shipped.steps * dt / 60:.1f} min (goal <= 60)")

    pipe = load_pipeline()
    prompts = world.eval_prompts(per_category=4)[:16]
    pipe(prompts[:2], num_inference_steps=2)  # warm-up
    t0 = time.perf_counter()
    pipe(prompts, num_images_per_prompt=4, guidance_scale=4.0, num_inference_steps=25, generator=torch.Generator().manual_seed(0))
    dt = time.perf_counter() - t0
    print(f"sampling: 64 images, 25 CFG steps, batch 64: {dt:.1f} s, {64 / dt:.1f} images/s")


if __name__ == "__main__":
    main()
