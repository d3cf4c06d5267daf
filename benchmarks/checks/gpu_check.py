"""The paper's models at full size on a GPU: build, one fine-tuning step at the paper's micro-batch, an evaluation.

For the SD-2.1-base, SDXL-base and SD3.5-medium architectures, built from configs written here with random weights
(no download; SD3 without its T5 encoder, whose place the pipeline fills with zeros), it samples a small pool with
MI and its latents kept (``selection.build``), trains one LoRA step on the kept latents in micro-batches of the
paper's 8 images (DoRA for SDXL, the x0 loss for SD3, as the presets), evaluates with the adapter, and prints the
seconds per image of sampling, the seconds and peak memory of the training step, and how far the mean trajectory MI
moves in fp16 and bf16 from fp32 on the same seeds. Random weights draw noise, so only time, memory and drift mean
anything. Without CUDA it says so and exits 2; ``--tiny`` runs the same code on tiny pipelines on the CPU.

    python -m benchmarks.checks.gpu_check [--steps 50] [--results book/results/gpu_check]
"""

from __future__ import annotations

import gc
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from minitune import selection
from minitune.evaluate import evaluate_pipeline
from minitune.finetune import finetune
from minitune.io import markdown_table
from minitune.sampling import sample_with_mi
from minitune.testing import _tokenizer, tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPTS = ["a red circle and a blue square", "two green triangles", "a yellow square left of a cyan circle",
           "a magenta circle above a red triangle"]
MICRO_BATCH = 8  # the paper's images per micro-batch
DRIFT = ("fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _clip(hidden, layers, heads, projection=None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(_tokenizer()), hidden_size=hidden, intermediate_size=4 * hidden,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            hidden_act="gelu", projection_dim=projection or hidden, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(latent_channels=4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, **extra)


def _ddpm():
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         steps_offset=1, timestep_spacing="leading")


def sd21():
    """SD-2.1-base: a 865M-parameter UNet on 64×64×4 latents, OpenCLIP-H's 23 text layers."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
    return StableDiffusionPipeline(vae=_vae(sample_size=512), text_encoder=_clip(1024, 23, 16), tokenizer=_tokenizer(),
                                   unet=unet, scheduler=_ddpm(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def sdxl():
    """SDXL-base: a 2.6B-parameter UNet on 128×128×4 latents, CLIP-L and OpenCLIP-bigG."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=128, block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816)
    tok = _tokenizer()
    return StableDiffusionXLPipeline(vae=_vae(sample_size=1024, scaling_factor=0.13025, force_upcast=True),
                                     text_encoder=_clip(768, 12, 12), text_encoder_2=_clip(1280, 32, 20, 1280),
                                     tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=_ddpm())


def sd3():
    """SD3.5-medium: a 2.2B-parameter MMDiT-X on 128×128×16 latents, CLIP-L and CLIP-G (T5 left out)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                                        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                        caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=384,
                                        dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
    vae = _vae(16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
               use_post_quant_conv=False)
    tok = _tokenizer()
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=_clip(768, 12, 12, 768), tokenizer=tok,
                                    text_encoder_2=_clip(1280, 32, 20, 1280), tokenizer_2=tok, text_encoder_3=None,
                                    tokenizer_3=None)


FULL = {"SD 2.1": sd21, "SDXL": sdxl, "SD3.5": sd3}
TINY = {"SD 2.1": tiny_sd_pipeline, "SDXL": tiny_sdxl_pipeline, "SD3.5": tiny_sd3_pipeline}
TRAIN = {"SD 2.1": {}, "SDXL": {"dora": True}, "SD3.5": {"precondition": True}}  # what the presets switch on


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def build_on(make, device: torch.device, dtype: torch.dtype, seed: int):
    """The pipeline `make` builds, with weights drawn from `seed` on `device` (fast for billions of weights), in `dtype`."""
    torch.manual_seed(seed)
    with torch.device(device):
        pipe = make()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _mean_mi(pipe, args, n: int) -> float:
    cands = sample_with_mi(pipe, PROMPTS[:1], n, num_inference_steps=args.steps, batch_size=n, seed=args.seed,
                           progress=False)
    return float(cands.mi.double().mean())


def check(name: str, make, device: torch.device, args, work: Path) -> dict:
    """One architecture: sampling, one training step, an evaluation with the adapter, and the MI drift of the half
    precisions against fp32 on the same seeds."""
    pipe, n, micro = build_on(make, device, torch.float32, args.seed), args.images, args.micro_batch
    _sync(device)
    t0 = time.time()
    mi = {"fp32": _mean_mi(pipe, args, n)}
    _sync(device)
    sample_s = (time.time() - t0) / n
    data = selection.build(pipe, (PROMPTS * micro)[:micro], work / "train", n_candidates=1, num_inference_steps=4,
                           keep_latents=True, batch_size=micro, seed=args.seed, progress=False)["mi"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    finetune(pipe, data, work / "lora", rank=32, steps=1, batch_size=micro, latents="saved", val_fraction=0.0,
             validate_every=0, sample_prompts=0, device=str(device), progress=False, **TRAIN[name])
    _sync(device)
    train_s, peak = time.time() - t0, _peak_gib(device)
    pipe.load_lora_weights(str(work / "lora"))
    t0 = time.time()
    _, cands = evaluate_pipeline(pipe, PROMPTS[:1], n, num_inference_steps=args.steps, batch_size=n, seed=args.seed,
                                 scorers={}, progress=False)
    _sync(device)
    eval_s = (time.time() - t0) / n
    pipe.unload_lora_weights()
    for half in DRIFT:
        mi[half] = _mean_mi(pipe.to(dtype=DTYPES[half]), args, n)
    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    values = [*mi.values(), *cands.mi.tolist()]
    return {"model": name, "sample_s_per_image": sample_s, "eval_s_per_image": eval_s, "train_step_s": train_s,
            "peak_gib": peak, "mi_fp32": mi["fp32"], **{f"drift_{h}": abs(mi[h] / mi["fp32"] - 1) for h in DRIFT},
            "finite": all(math.isfinite(v) for v in values)}


COLUMNS = ["model", "s / image", "s / image with LoRA", "training step s", "peak GiB", "MI drift fp16 %",
           "MI drift bf16 %"]


def _cells(r: dict) -> list[str]:
    peak = "–" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
    return [r["model"], f"{r['sample_s_per_image']:.2f}", f"{r['eval_s_per_image']:.2f}", f"{r['train_step_s']:.1f}",
            peak, f"{100 * r['drift_fp16']:.2f}", f"{100 * r['drift_bf16']:.2f}"]


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None, seed=0)
    ap.add_argument("--tiny", action="store_true", help="tiny pipelines on the CPU: the check's code path, no GPU")
    ap.add_argument("--steps", type=int, help="sampling steps of each measurement (default 50; tiny: 4)")
    ap.add_argument("--images", type=int, default=2, help="images sampled per measurement")
    ap.add_argument("--micro-batch", type=int, help=f"images of the training step (default the paper's {MICRO_BATCH}; "
                    "tiny: 2)")
    run = harness.start(ap, argv)
    args = run.args
    if not args.tiny and not torch.cuda.is_available():
        print("No CUDA device here: this check builds the full-size models on a GPU (--tiny runs its code on the CPU).",
              file=sys.stderr)
        return 2
    from diffusers.utils import logging

    logging.set_verbosity_error()  # casting random models in code warns once per module
    device = torch.device("cpu" if args.tiny else "cuda")
    args.steps = args.steps or (4 if args.tiny else 50)
    args.micro_batch = args.micro_batch or (2 if args.tiny else MICRO_BATCH)
    rows = []
    for name, make in (TINY if args.tiny else FULL).items():
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(check(name, make, device, args, Path(tmp)))
        print(" | ".join(_cells(rows[-1])), flush=True)
    where = "tiny pipelines on the CPU" if args.tiny else torch.cuda.get_device_name()
    table = markdown_table([_cells(r) for r in rows], COLUMNS)
    text = (f"{where}; random weights; {args.images} images at {args.steps} steps per measurement, a training step "
            f"of {args.micro_batch} images in fp32.\n\n{table}")
    run.write({"device": where, "steps": args.steps, "micro_batch": args.micro_batch, "rows": rows}, text,
              model="random weights")
    return 0 if all(r["finite"] for r in rows) else 1


if __name__ == "__main__":
    harness.main(main)
