"""Train the Shapes-world base model from scratch (``minitune toy-train``).

The data are rendered on the fly: step ``s`` draws its prompts and layouts from seeds derived
from ``(seed, s)``, and its noise and timesteps from a generator seeded the same way, so a run
resumed from a checkpoint continues exactly as if it had never stopped. The UNet and the text
encoder are trained jointly with the plain ε-prediction loss; ~10 % of prompts are replaced by
the empty prompt so that classifier-free guidance works. With ``snr_gamma`` set, each sample's loss
is weighted by min(SNR_t, γ)/SNR_t (Min-SNR-γ, Hang et al. 2023, as in diffusers' training
examples): the nearly clean timesteps, where the ε-loss is easy and uninformative about layout,
count for less, and training converges faster. With ``init_from`` set, the UNet and text encoder
start from a saved pipeline's weights instead of a fresh initialisation: a second stage of training
on another data mix, as Stable Diffusion 2.1 continued from 2.0. With ``caption_noise`` set, that fraction of the
images whose caption names several objects leaves one of them out (:func:`world.render_missing`), like
the loose captions of web data: the model learns to neglect named objects, a failure that selection by
MI can see. With ``single_object_share`` set, that share of the prompts is replaced by one-object
prompts, as a web corpus holds mostly pictures of one thing: a model that has seldom seen two named
things together tends to leave one out. An exponential moving average (EMA) of the
weights is what gets saved as the pipeline.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io import claim, replaced
from . import world
from .pipeline import ShapesPipeline, build_components


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    prompt_dropout: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    width: int = 64
    channels: list = field(default_factory=lambda: [32, 64, 64])
    checkpoint_every: int = 250
    snr_gamma: float | None = None
    caption_noise: float = 0.0
    category_weights: list | None = None  # share of each category in the batches (default: equal)
    init_from: str | None = None  # a saved Shapes pipeline whose weights start the run (same architecture)
    single_object_share: float = 0.0  # share of the batches' prompts replaced by one-object prompts ("one red circle")


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))


def loss_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, snr_gamma: float | None) -> torch.Tensor:
    """Per-sample ε-loss weights: 1 (plain loss) or min(SNR_t, γ)/SNR_t (Min-SNR-γ)."""
    if snr_gamma is None:
        return torch.ones(len(t))
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return snr.clamp(max=snr_gamma) / snr


_SINGLE = [p for p in world.prompts("train", "count") if world.parse(p).n_objects == 1]


def batch(cfg: TrainConfig, step: int):
    """The prompts, clean images and noise generator of one training step (pure function of seed, step)."""
    prompts = world.sample_prompts("train", cfg.batch_size, seed=cfg.seed * 1_000_003 + step,
                                   weights=cfg.category_weights)
    if cfg.single_object_share:
        rng = np.random.default_rng([cfg.seed, step, 2])
        single = rng.random(cfg.batch_size) < cfg.single_object_share
        picks = rng.integers(len(_SINGLE), size=cfg.batch_size)
        prompts = [_SINGLE[k] if s else p for p, s, k in zip(prompts, single, picks)]
    seeds = np.random.default_rng([cfg.seed, step]).integers(2**32, size=cfg.batch_size)
    loose = np.random.default_rng([cfg.seed, step, 1]).random(cfg.batch_size) < cfg.caption_noise
    loose &= np.array([world.parse(p).n_objects > 1 for p in prompts])  # a caption never names only what is absent
    images = world.render_batch(prompts, seeds, missing=loose)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    drop = torch.rand(cfg.batch_size, generator=g) < cfg.prompt_dropout
    prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
    return prompts, images, g


def _check(cfg: TrainConfig) -> None:
    """One sentence, before anything is written, for a config that cannot train."""
    if not 0.0 <= cfg.caption_noise <= 1.0:
        raise ValueError(f"caption_noise is the fraction of training images with an object left out, from 0 to 1; "
                         f"got {cfg.caption_noise}.")
    if not 0.0 <= cfg.single_object_share <= 1.0:
        raise ValueError(f"single_object_share is the share of training prompts that name one object, from 0 to 1; "
                         f"got {cfg.single_object_share}.")
    world.sample_prompts("train", 1, weights=cfg.category_weights)  # bad weights fail here
    if cfg.init_from is not None and not (Path(cfg.init_from) / "unet").is_dir():
        raise FileNotFoundError(f"init_from names a saved Shapes pipeline folder (with unet/ and text_encoder/); "
                                f"{cfg.init_from} is not one.")


def _init_weights(parts: dict, folder: str) -> None:
    """Load a saved pipeline's UNet and text-encoder weights into freshly built parts of the same architecture."""
    from safetensors.torch import load_file

    for name, file in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        try:
            parts[name].load_state_dict(load_file(Path(folder) / name / file))
        except RuntimeError as e:
            raise ValueError(f"The {name} in {folder} has another architecture than --channels/--width ask for; "
                             f"give the sizes it was trained with (its train_config.json).") from e


def _claim(out: Path, cfg: TrainConfig, check_only: bool = False) -> None:
    """Create `out` with its config.json, or reopen it to train on, refusing one made with another config
    (:func:`minitune.io.claim`; only the step count may change, and fields added since count as their defaults)."""
    def view(saved: dict) -> dict:
        return {k: v for k, v in {**asdict(TrainConfig()), **saved}.items() if k != "steps"}

    def refuse(changes: str) -> str:
        return (f"{out} holds a training run made with another config ({changes}); use a new output folder or the "
                f"same options (only --steps may grow, to train on).")
    claim(out / "config.json", asdict(cfg), refuse, view=view, check_only=check_only)


def _resume(ckpt: Path, cfg: TrainConfig, parts: dict, opt, ema: list) -> tuple[int, list]:
    """Load the last checkpoint into the model and optimiser; returns (step, EMA weights), (0, ema) without one."""
    if not ckpt.exists():
        return 0, ema
    state = torch.load(ckpt, weights_only=False)
    if cfg.steps < state["step"]:
        raise ValueError(f"The checkpoint in {ckpt.parent} is at step {state['step']}, past the {cfg.steps} asked; "
                         f"use a new output folder or the same options (only --steps may grow, to train on).")
    parts["unet"].load_state_dict(state["unet"])
    parts["text_encoder"].load_state_dict(state["text_encoder"])
    opt.load_state_dict(state["opt"])
    return state["step"], state["ema"]


def _step(cfg: TrainConfig, step: int, pipe: ShapesPipeline, params: list, opt, ema: list) -> float:
    """One optimiser step on a fresh batch of renders, then the EMA update; returns the batch's loss."""
    prompts, x0, g = batch(cfg, step)
    for group in opt.param_groups:
        group["lr"] = _lr(cfg, step)
    sched = pipe.scheduler
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=g)
    z = sched.add_noise(x0, noise, t)
    emb = pipe.text_encoder(pipe.tokenize(prompts)).last_hidden_state
    err = F.mse_loss(pipe.unet(z, t, encoder_hidden_states=emb).sample, noise, reduction="none").mean(dim=(1, 2, 3))
    loss = (err * loss_weights(sched.alphas_cumprod, t, cfg.snr_gamma)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
    return loss.item()


def _checkpoint(out: Path, done: int, cfg: TrainConfig, pipe: ShapesPipeline, params: list, opt, ema: list) -> None:
    """last.pt (weights, optimiser, EMA and step, to resume from) and pipeline-<done>/ with the EMA weights."""
    state = {"unet": pipe.unet.state_dict(), "text_encoder": pipe.text_encoder.state_dict(), "opt": opt.state_dict()}
    with replaced(out / "last.pt") as tmp:
        torch.save({**state, "ema": ema, "step": done, "config": asdict(cfg)}, tmp)
    _save_ema(pipe, params, ema, out / f"pipeline-{done}")


def train(output_dir: str | os.PathLike, cfg: TrainConfig | None = None, progress: bool = True,
          until: int | None = None) -> Path:
    """Train (or resume) a Shapes pipeline in `output_dir`; returns the folder of the last saved pipeline.

    `until` stops after that many steps (with a checkpoint), e.g. to train in chunks; running
    again with the same config resumes and ends with exactly the weights of an uninterrupted run.
    Running again with a larger `steps` trains on from the last checkpoint (the learning-rate
    schedule is then that of the longer run, a warm restart).
    """
    cfg = cfg or TrainConfig()
    _check(cfg)
    out = Path(output_dir)
    _claim(out, cfg, check_only=True)
    torch.manual_seed(cfg.seed)
    parts = build_components(cfg.seed, cfg.width, cfg.channels)
    if cfg.init_from is not None:
        _init_weights(parts, cfg.init_from)
    pipe = ShapesPipeline(**parts)
    params = list(parts["unet"].parameters()) + list(parts["text_encoder"].parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, ema = _resume(out / "last.pt", cfg, parts, opt, [p.detach().clone() for p in params])
    _claim(out, cfg)  # written once the checkpoint agrees too
    log_path = out / "loss.csv"
    rows = list(csv.reader(log_path.open()))[1 : start + 1] if log_path.exists() else []
    end = cfg.steps if until is None else min(until, cfg.steps)
    with log_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["step", "loss", "lr"], *rows])
        bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="toy-train", disable=not progress)
        for step in bar:
            loss = _step(cfg, step, pipe, params, opt, ema)
            w.writerow([step + 1, f"{loss:.5f}", f"{_lr(cfg, step):.2e}"])
            bar.set_postfix(loss=f"{loss:.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
                f.flush()
                _checkpoint(out, step + 1, cfg, pipe, params, opt, ema)
    return out / f"pipeline-{end}"


def _save_ema(pipe: ShapesPipeline, params, ema, folder: Path):
    """Save the pipeline with EMA weights swapped in (training weights restored afterwards)."""
    with torch.no_grad():
        backup = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, ema)
        with replaced(folder) as tmp:
            pipe.save_pretrained(tmp)
        torch._foreach_copy_(params, backup)


def ship(run_dir: str | os.PathLike, step: int | None = None, dest: str | os.PathLike | None = None) -> Path:
    """Copy a trained pipeline with its config, loss log and training curve into the package."""
    from ..tools.plotting import plot_training_curve
    from .pipeline import WEIGHTS_DIR

    run = Path(run_dir)
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else None
    if cfg is None:
        raise FileNotFoundError(f"{run} is not a training run folder (no config.json); train one with `minitune toy-train`.")
    step = step or cfg["steps"]
    src = run / f"pipeline-{step}"
    if not src.is_dir():
        raise FileNotFoundError(f"{run} has no pipeline saved at step {step}; saved steps are every {cfg['checkpoint_every']}.")
    dest = Path(dest) if dest is not None else WEIGHTS_DIR
    with replaced(dest) as tmp:
        shutil.copytree(src, tmp)
        (tmp / "train_config.json").write_text(json.dumps({**cfg}, indent=2))
        rows = list(csv.reader((run / "loss.csv").open()))[: step + 1]
        with (tmp / "loss.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        plot_training_curve(tmp / "loss.csv", tmp / "training_curve.png")
    return dest
