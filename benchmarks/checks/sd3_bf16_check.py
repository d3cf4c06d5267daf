"""The rectified-flow path in bf16 on an accelerator: MI-tracked sampling, re-noising and a LoRA step, timed.

    python -m benchmarks.checks.sd3_bf16_check [--model FOLDER] [--n 4] [--steps 28] [--device auto] [--results STEM]

Without ``--model`` it builds the tiny random SD3 pipeline (minitune.testing) and also compares the bf16
values with an fp32 run of the same pipeline (MI relative difference, latent difference); with a
local diffusers folder of an SD3/SD3.5 model it loads it in bf16 and reports times only. It prints
one line per check and exits non-zero if a value is not finite or the bf16/fp32 MI differ by more
than ``--tolerance`` (relative, default 0.1).
"""

import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from minitune import flow, resolve_device
from minitune.families.sd3 import StableDiffusion3
from minitune.finetune import FinetuneSet, finetune
from minitune.sampling import sample_with_mi
from minitune.testing import tiny_sd3_pipeline

PROMPTS = ["a red circle", "a blue square left of a green triangle"]


def load(model: str | None, dtype: torch.dtype, device: torch.device):
    """The tiny random SD3 pipeline (`model` None) or a local SD3 folder, in `dtype` on `device`."""
    if model is None:
        pipe = tiny_sd3_pipeline(0).to(dtype=dtype)
    else:
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline.from_pretrained(model, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def timed(label: str, fn):
    """`fn()`, with its wall time printed after `label` (waiting for the accelerator)."""
    t0 = time.perf_counter()
    out = fn()
    if torch.accelerator.is_available():
        torch.accelerator.synchronize()
    print(f"{label}: {time.perf_counter() - t0:.2f} s")
    return out


def check_bf16(pipe, kw: dict, n: int, device) -> tuple[object, dict]:
    """bf16 sampling with MI, re-noising MI of its latents and a 5-step LoRA, timed; the samples and what they gave."""
    timed("warm-up", lambda: sample_with_mi(pipe, PROMPTS[:1], **{**kw, "n_per_prompt": 1, "num_inference_steps": 2}))
    low = timed("bf16 sampling with MI", lambda: sample_with_mi(pipe, PROMPTS, **kw))
    den = StableDiffusion3(pipe)
    pair = den.velocity_pair(den.encode(PROMPTS).take(torch.arange(len(PROMPTS)).repeat_interleave(n)))
    gens = [torch.Generator().manual_seed(s) for s in low.seeds]
    est, se = timed("bf16 re-noising MI (32 draws)", lambda: flow.renoise_mi(pair, low.latents.to(device), n_samples=32,
                                                                            generator=gens, form="orthogonal", batch_size=64))
    print(f"trajectory MI {low.mi.mean():.3f} (dtype {low.mi.dtype}), re-noising {est.mean():.3f} ± {se.mean():.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = FinetuneSet(Path(tmp), low.images[:2], low.prompts[:2],
                           [{"file_name": f"{i}.png", "text": p} for i, p in enumerate(low.prompts[:2])], "in memory")
        timed("bf16 LoRA, 5 steps", lambda: finetune(pipe, data, Path(tmp) / "lora", steps=5, validate_every=0,
                                                    sample_prompts=0, device=str(device), progress=False))
    return low, {"finite": bool(torch.isfinite(low.mi).all() and torch.isfinite(est).all()),
                 "trajectory_mi": float(low.mi.float().mean()), "renoise_mi": float(est.float().mean())}


def against_fp32(low, kw: dict, device) -> dict:
    """The tiny pipeline's bf16 samples against an fp32 run of it: MI relative difference and latent difference."""
    ref = sample_with_mi(load(None, torch.float32, device), PROMPTS, **kw)
    rel = float(((low.mi - ref.mi).abs() / ref.mi.abs()).max())
    gap = float((low.latents - ref.latents).abs().max())
    print(f"bf16 vs fp32: MI max relative difference {rel:.4f}, latents max |Δ| {gap:.4f}")
    return {"mi_max_rel_diff": rel, "latents_max_abs_diff": gap}


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model="a local diffusers folder of an SD3/SD3.5 model (default: tiny)")
    ap.add_argument("--n", type=int, default=4, help="candidates per prompt")
    ap.add_argument("--steps", type=int, default=StableDiffusion3.num_inference_steps)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tolerance", type=float, default=0.1)
    run = harness.start(ap, argv)
    args = run.args
    device = resolve_device(args.device)
    print(f"device {device}, model {args.model or 'tiny SD3'}, {args.n} × {len(PROMPTS)} candidates, {args.steps} steps")
    kw = dict(n_per_prompt=args.n, guidance_scale=StableDiffusion3.guidance_scale, num_inference_steps=args.steps, seed=0,
              mi_weights="quadrature", progress=False)
    low, found = check_bf16(load(args.model, torch.bfloat16, device), kw, args.n, device)
    ok = found["finite"]
    if args.model is None:
        found.update(against_fp32(low, kw, device))
        ok = ok and found["mi_max_rel_diff"] <= args.tolerance
    print("OK" if ok else "FAILED")
    run.write({"device": str(device), "settings": harness.key(args, "n", "steps", "tolerance"), **found, "ok": ok},
              "\n".join(f"- {k}: {v}" for k, v in found.items()) + f"\n\n{'OK' if ok else 'FAILED'}\n",
              model=args.model or "tiny SD3")
    return 0 if ok else 1


if __name__ == "__main__":
    harness.main(main)
