"""Data-parallel fine-tuning gives the single-process result: two CPU processes against one.

    python -m benchmarks.checks.finetune_ddp_check [--steps 8] [--batch-size 16] [--images 24] [--results STEM]

Writes a fine-tuning set of rendered Shapes scenes, then fine-tunes the shipped toy model on it
twice with the same global batch: once with one process, once with
``accelerate launch --num_processes 2 --cpu`` (each process trains on half of every batch and
DDP averages the gradients). Prints the largest difference of the final LoRA weights and of the
logged losses; they should agree to float rounding (goal: max weight difference < 1e-4). Exits with
status 1 when they do not.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.perf.finetune_speed import write_set  # the same rendered set as the speed benchmark

GOAL = 1e-4  # largest |1 process − 2 processes| of a final LoRA weight


def worker(args):
    """One process's share of the fine-tuning (run by accelerate launch)."""
    from minitune.finetune import finetune

    finetune(harness.load_model(), args.data, args.out, rank=8, alpha=8, steps=args.steps, batch_size=args.batch_size,
             lr=1e-3, prompt_dropout=0.1, validate_every=0, sample_prompts=0, device="cpu", progress=False)


def launch(processes: int, args, out: Path) -> float:
    """Fine-tune with `processes` CPU processes into `out`; the wall time, start-up included."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--num_machines", "1",
           "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--module", harness.module_name(__file__),
           "--worker", "--data", str(args.data), "--out", str(out), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size)]
    path = os.pathsep.join(p for p in (str(harness.ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // processes)), "PYTHONPATH": path}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=harness.ROOT)
    return time.perf_counter() - t0


def compare(args) -> tuple[dict, list, list]:
    """Wall times of 1 and 2 processes, their final LoRA weights and their logged losses."""
    with tempfile.TemporaryDirectory() as d:
        args.data = Path(d) / "set"
        write_set(args.data, args.images)
        times = {n: launch(n, args, Path(d) / f"procs{n}") for n in (1, 2)}
        weights = [torch.load(Path(d) / f"procs{n}" / "state.pt", weights_only=False)["lora"] for n in (1, 2)]
        logs = [(Path(d) / f"procs{n}" / "loss.csv").read_text().split()[1:] for n in (1, 2)]
    return times, weights, [[float(row.split(",")[1]) for row in log] for log in logs]


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over the processes)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    run = harness.start(ap, argv)
    args = run.args
    if args.worker:
        return worker(args)
    times, (one, two), losses = compare(args)
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    scale = max(v.abs().max().item() for v in one.values())
    loss_diff = max(abs(a - b) for a, b in zip(*losses))
    out = harness.Report()
    out(f"toy model, rank-8 LoRA, {args.steps} steps, global batch {args.batch_size}, {args.images} images")
    out(f"wall time: 1 process {times[1]:.1f} s, 2 processes {times[2]:.1f} s (each including start-up)")
    out(f"final LoRA weights: max |1 proc - 2 procs| = {diff:.2e} (largest weight {scale:.2e}; goal < 1e-4)")
    out(f"logged losses: max difference {loss_diff:.2e} over {len(losses[0])} steps")
    status = harness.goal(diff, GOAL, "max |1 proc - 2 procs| of the final LoRA weights", at_most=True, fmt=".2e")
    run.write({"settings": harness.key(args, "steps", "batch_size", "images", "threads"), "seconds": times,
               "max_weight_diff": diff, "largest_weight": scale, "max_loss_diff": loss_diff, "goal": GOAL,
               "goal_met": status == 0}, out.markdown(fenced=True))
    return status


if __name__ == "__main__":
    harness.main(main)
