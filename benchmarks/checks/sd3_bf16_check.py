"""The rectified-flow path in bf16 on an accelerator: MI-tracked sampling, re-noising and a LoRA step, timed.

    python benchmarks/sd3_bf16_check.py [--model FOLDER] [--n 4] [--steps 28] [--device auto]

Without ``--model`` it builds the tiny random SD3 pipeline (minitune.tiny) and also compares the bf16
values with an fp32 run of the same pipeline (MI relative difference, latent difference); with a
local diffusers folder of an SD3/SD3.5 model it loads it in bf16 and reports times only. It prints
one line per check and exits non-zero if a value is not finite or the bf16/fp32 MI differ by more
than ``--tolerance`` (relative, default 0.1).
"""

import argparse
import sys
import tempfile
import time

import torch

from minitune import flow, resolve_device
from minitune.flow_denoisers import SD35_DEFAULTS, SD3Denoiser, finetune_lora, sample_with_mi
from minitune.tiny import tiny_sd3_pipeline

PROMPTS = ["a red circle", "a blue square left of a green triangle"]


def load(model: str | None, dtype: torch.dtype, device: torch.device):
    if model is None:
        pipe = tiny_sd3_pipeline(0).to(dtype=dtype)
    else:
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline.from_pretrained(model, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    if torch.accelerator.is_available():
        torch.accelerator.synchronize()
    print(f"{label}: {time.perf_counter() - t0:.2f} s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a local diffusers folder of an SD3/SD3.5 model (default: tiny)")
    ap.add_argument("--n", type=int, default=4, help="candidates per prompt")
    ap.add_argument("--steps", type=int, default=SD35_DEFAULTS["num_inference_steps"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tolerance", type=float, default=0.1)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    print(f"device {device}, model {args.model or 'tiny SD3'}, {args.n} × {len(PROMPTS)} candidates, {args.steps} steps")
    kw = dict(n_per_prompt=args.n, guidance_scale=SD35_DEFAULTS["guidance_scale"], num_inference_steps=args.steps, seed=0,
              mi_weights="quadrature", progress=False)
    pipe = load(args.model, torch.bfloat16, device)
    timed("warm-up", lambda: sample_with_mi(pipe, PROMPTS[:1], **{**kw, "n_per_prompt": 1, "num_inference_steps": 2}))
    low = timed("bf16 sampling with MI", lambda: sample_with_mi(pipe, PROMPTS, **kw))
    den = SD3Denoiser(pipe)
    pair = den.velocity_pair(den.encode(PROMPTS).take(torch.arange(len(PROMPTS)).repeat_interleave(args.n)))
    gens = [torch.Generator().manual_seed(s) for s in low.seeds]
    est, se = timed("bf16 re-noising MI (32 draws)", lambda: flow.renoise_mi(pair, low.latents.to(device), n_samples=32,
                                                                            generator=gens, form="orthogonal", batch_size=64))
    ok = bool(torch.isfinite(low.mi).all() and torch.isfinite(est).all())
    print(f"trajectory MI {low.mi.mean():.3f} (dtype {low.mi.dtype}), re-noising {est.mean():.3f} ± {se.mean():.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        timed("bf16 LoRA, 5 steps", lambda: finetune_lora(pipe, low.latents[:2], low.prompts[:2], tmp, steps=5, progress=False))
    if args.model is None:
        ref = sample_with_mi(load(None, torch.float32, device), PROMPTS, **kw)
        rel = float(((low.mi - ref.mi).abs() / ref.mi.abs()).max())
        gap = float((low.latents - ref.latents).abs().max())
        print(f"bf16 vs fp32: MI max relative difference {rel:.4f}, latents max |Δ| {gap:.4f}")
        ok = ok and rel <= args.tolerance
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
