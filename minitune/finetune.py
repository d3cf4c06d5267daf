"""LoRA fine-tuning on an MI-filtered set (MI-TUNE step 3, ``minitune finetune``).

A LoRA adapter (peft) on the attention projections of the denoising network (the UNet's ``to_q``,
``to_k``, ``to_v`` and ``to_out.0``; both streams of SD3's transformer) is trained with the family's
loss (:mod:`minitune.families`: the diffusion loss, or flow matching for rectified flow) on the
images of a fine-tuning set; the text encoders (and the VAE) stay frozen. The set is a Hugging Face
``imagefolder``: PNG files plus a ``metadata.jsonl`` whose lines carry at least ``file_name`` and ``text``.

Everything random is a pure function of ``(seed, step)``: which images a step sees (an epoch-wise
shuffle), their timesteps, noise and prompt dropout. Each process of a data-parallel run
(``accelerate launch``) draws the whole global batch and trains on its own slice, so one process
and several give the same updates up to float rounding, and a run resumed from its checkpoint
continues exactly as if it had never stopped.

The adapter is saved the diffusers way: ``pipe.load_lora_weights(output_dir)`` loads it into a
fresh pipeline of the same family (Shapes, Stable Diffusion, SDXL or SD3).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .families import Conditioning, denoiser_for
from .families.vp import EpsilonFamily
from .io import claim, judge_record, model_record, replaced

ADAPTER = "minitune"
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
OBJECTIVES = ("mse", "dpo")
VAL_DRAWS = 4  # (timestep, noise) draws per held-out image, fixed for the whole run
# Options that may change when a run is resumed; all others must match the saved run.
RESUMABLE = {"steps", "validate_every", "checkpoint_every", "sample_prompts", "sample_steps", "guidance_scale"}
LATENTS = ("vae", "saved")
SCORES = "val_scores.csv"  # step, the judge's mean score of the validation images


@dataclass
class FinetuneConfig:
    """Options of a fine-tuning run; the LoRA defaults are the paper's (rank 32 on the attention projections).

    :func:`finetune` given no config starts from the family's own defaults (``finetune_defaults``, e.g.
    SD3's official recipe); ``None`` for the sample grid's steps and guidance means the family's.
    """

    rank: int = 32
    alpha: float = 32.0
    dora: bool = False
    steps: int = 500
    batch_size: int = 32  # global batch, split evenly over the processes
    grad_accum: int = 1  # micro-batches per process and step: the same update in less memory
    lr: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    warmup: int = 0  # steps of a linear learning-rate warm-up
    prompt_dropout: float = 0.0  # fraction of prompts replaced by the unconditional prompt
    seed: int = 0
    val_fraction: float = 0.1  # images held out for the validation loss (none if the set is too small)
    latents: str = "vae"  # "vae": encode the set's images (a seeded VAE draw); "saved": the sampler's own latents and
    # prompt embeddings, kept by `build --keep-latents` in the set's latents.safetensors
    val_prompts: list = field(default_factory=list)  # prompts sampled (and judged, given a judge) at each validation
    val_images: int = 10  # images per validation prompt
    precondition: bool = False  # SD3: the loss on the implied clean latent (the official RFMI script's)
    validate_every: int = 100  # validation loss and a sample grid; 0: only at the start and the end
    checkpoint_every: int = 250
    sample_prompts: int = 4  # prompts of the sample grid (4 images each); 0: no grid
    sample_steps: int | None = None
    guidance_scale: float | None = None
    init_adapter: str | None = None  # start from this adapter folder (a previous self-training round)
    objective: str = "mse"  # "mse": the diffusion loss on the set's images; "dpo": Diffusion-DPO on its pairs
    dpo_beta: float = 2000.0  # DPO's β: how far the adapter may move from the starting model for a preference


@dataclass
class FinetuneSet:
    """A fine-tuning set in memory."""

    folder: Path
    images: torch.Tensor  # [N, 3, H, W] in [-1, 1]
    prompts: list[str]
    records: list[dict]  # the metadata lines (file_name, text, mi, seed, rank, ...)
    fingerprint: str  # sha256 over metadata.jsonl and the image files
    rejected: torch.Tensor | None = None  # a preference set's rejected image of each line, [N, 3, H, W]


def load_finetune_set(data_dir: str | os.PathLike) -> FinetuneSet:
    """Read an ``imagefolder`` fine-tuning set (PNG files and ``metadata.jsonl``)."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(data_dir)
    meta = folder / "metadata.jsonl"
    if not folder.is_dir():
        raise FileNotFoundError(f"No fine-tuning set at {folder}: give a folder of PNG images with a metadata.jsonl "
                                f"(as `minitune build` writes).")
    if not meta.is_file():
        raise FileNotFoundError(f"{folder} has no metadata.jsonl: a fine-tuning set lists its images there, one JSON "
                                f"line with file_name and text per image.")
    digest = hashlib.sha256(meta.read_bytes())

    def read(name: str) -> np.ndarray:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{meta} lists {name}, which is missing from {folder}; rebuild the set.")
        data = path.read_bytes()
        digest.update(data)
        try:
            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (UnidentifiedImageError, OSError):
            raise ValueError(f"{path} is not a readable image; rebuild the set.") from None

    records, arrays, rejected = [], [], []
    for i, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name, _ = rec["file_name"], rec["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{meta} line {i} is not a JSON object with file_name and text; "
                             f"rebuild the set.") from None
        arrays.append(read(name))
        if "rejected_file_name" in rec:
            rejected.append(read(rec["rejected_file_name"]))
        records.append(rec)
    if not records:
        raise ValueError(f"{meta} lists no images; build a set with at least one image.")
    if rejected and len(rejected) != len(records):
        raise ValueError(f"Only some lines of {meta} name a rejected_file_name; a preference set pairs every image, "
                         f"rebuild it with select(..., pairs=True).")
    if len({a.shape for a in arrays + rejected}) > 1:
        raise ValueError(f"The images in {folder} differ in size; a fine-tuning set needs images of one size.")
    from .images import to_tensor

    return FinetuneSet(folder, to_tensor(np.stack(arrays)), [r["text"] for r in records], records, digest.hexdigest(),
                       to_tensor(np.stack(rejected)) if rejected else None)


def check_objective(cfg: FinetuneConfig, data: FinetuneSet) -> None:
    """Raise the one-sentence error unless the set fits the objective: dpo needs a preference set, mse a plain one."""
    _check(cfg)
    if (cfg.objective == "dpo") != (data.rejected is not None):
        raise ValueError(f"The dpo objective trains on a preference set and mse on a plain one, but {data.folder} is "
                         f"{'a plain' if data.rejected is None else 'a preference'} set; build the set that fits "
                         f"(select(..., pairs=True) makes a preference set) or change the objective.")


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for draw `index` of `stream`, independent of every other (seed, stream, index)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0]))


def _step_draws(cfg: FinetuneConfig, step: int, n_train: int, latent_shape, den):
    """Positions in the training slice, noise levels (the family's), noise and dropout mask of one global batch."""
    pos = torch.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size)
    epoch, offset = pos // n_train, pos % n_train
    idx = torch.empty_like(pos)
    for e in epoch.unique().tolist():
        here = epoch == e
        idx[here] = torch.randperm(n_train, generator=_generator(cfg.seed, 0, e))[offset[here]]
    g = _generator(cfg.seed, 1, step)
    t = den.training_times(cfg.batch_size, g)
    noise = torch.randn((cfg.batch_size, *latent_shape), generator=g)
    drop = torch.rand(cfg.batch_size, generator=g) < cfg.prompt_dropout
    return idx, t, noise, drop


def _conditioning(den, prompts: list[str], chunk: int = 64):
    """The denoiser's conditioning of every prompt, encoded in chunks (the text encoders stay frozen)."""
    return Conditioning.concat([den.encode(prompts[i : i + chunk]) for i in range(0, len(prompts), chunk)])


def _unet_inputs(cond, rows: torch.Tensor, drop: torch.Tensor, dtype):
    """Encoder states and added conditioning for these prompt rows, unconditional where `drop`."""
    c = cond.take(rows)
    drop = drop.to(c.cond.device)
    def pick(u, v):
        return torch.where(drop.view(-1, *[1] * (v.ndim - 1)), u, v).to(dtype)
    added = {k: pick(c.added_uncond[k], v) for k, v in c.added_cond.items()} or None
    return pick(c.uncond, c.cond), added


def dpo_loss(pred: torch.Tensor, ref: torch.Tensor, target: torch.Tensor, beta: float,
             weight: torch.Tensor | None = None):
    """Diffusion-DPO's loss (Wallace et al. 2023) and its preference accuracy, from [B, 2, ...] predictions.

    Index 0 along dim 1 is the chosen image, 1 the rejected one, noised with the same noise at the
    same timestep; `ref` is the frozen starting model's prediction. With e = ‖target − pred‖² (mean
    over elements) and e_ref the same for `ref`, the loss is −log σ(−β/2 · [(e_w − e_ref,w) − (e_l − e_ref,l)]):
    the adapter is rewarded for denoising the chosen image better *than the starting model does* and the
    rejected one worse. What both images share, such as the way the model itself draws, cancels out of the
    difference, so training on the model's own samples does not pull it toward its own sampling habits.
    `weight` [B] weighs the pairs (0 for a tie, whose two images state no preference); both values are
    weighted means, and a batch of weight 0 gives a loss of 0 and no gradient.
    """
    err = (pred - target).pow(2).flatten(2).mean(-1)
    ref_err = (ref - target).pow(2).flatten(2).mean(-1)
    gain = err - ref_err
    inside = -0.5 * beta * (gain[:, 0] - gain[:, 1])
    weight = torch.ones_like(inside) if weight is None else weight.to(inside)
    total = weight.sum().clamp(min=1e-12)
    return (-F.logsigmoid(inside) * weight).sum() / total, ((inside > 0).float() * weight).sum() / total


def lora_config(cfg: FinetuneConfig, targets=EpsilonFamily.lora_targets):
    """The peft LoraConfig of a run: the family's attention projections (`targets`, by default a UNet's)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, use_dora=cfg.dora, init_lora_weights="gaussian",
                      target_modules=list(targets))


def save_adapter(pipe, folder: str | os.PathLike) -> Path:
    """Write the trained adapter of the pipeline's denoising network as diffusers LoRA weights (atomically)
    into `folder`: ``pipe.load_lora_weights(folder)`` loads it."""
    from peft.utils import get_peft_model_state_dict

    den = denoiser_for(pipe)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = den.lora_layers(get_peft_model_state_dict(den.net, adapter_name=ADAPTER))
    owner = den.lora_owner
    with tempfile.TemporaryDirectory(dir=folder, prefix=".saving") as tmp:  # diffusers saves into a folder
        type(pipe).save_lora_weights(tmp, **{f"{owner}_lora_layers": layers,
                                             f"{owner}_lora_adapter_metadata": den.net.peft_config[ADAPTER].to_dict()})
        os.replace(Path(tmp) / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    return folder


def load_adapter(pipe, folder: str | os.PathLike):
    """``pipe.load_lora_weights(folder)`` after checking that the adapter was trained for this family's network."""
    from safetensors import safe_open

    path, den = Path(folder) / WEIGHTS_NAME, denoiser_for(pipe)
    if not path.is_file():
        raise FileNotFoundError(f"No LoRA adapter at {folder}: the folder must contain {WEIGHTS_NAME}, as `minitune "
                                f"finetune` writes it.")
    with safe_open(path, "pt") as f:
        layers = {k.split(".")[0] for k in f.keys()}
    if den.lora_owner not in layers:
        raise ValueError(f"The adapter in {folder} is not for {den.network} "
                         f"(its layers are {', '.join(sorted(layers))}); load it into a pipeline of the family it was "
                         f"trained for.")
    pipe.load_lora_weights(folder, adapter_name=ADAPTER)
    return pipe


def _load_init_adapter(den, folder: Path, cfg: FinetuneConfig) -> None:
    """Copy the weights of a saved adapter into the freshly added one, checking that they fit."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors import safe_open

    owner = den.lora_owner
    with safe_open(folder / WEIGHTS_NAME, "pt") as f:
        meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "{}"))
        weights = {k.removeprefix(f"{owner}."): f.get_tensor(k) for k in f.keys()}
    saved = (meta.get(f"{owner}.r"), meta.get(f"{owner}.lora_alpha"), meta.get(f"{owner}.use_dora"))
    if meta and saved != (cfg.rank, cfg.alpha, cfg.dora):
        raise ValueError(f"The adapter in {folder} has rank {saved[0]}, alpha {saved[1]}, DoRA {saved[2]}; "
                         f"continue it with the same rank, alpha and DoRA setting.")
    weights = den.lora_from_saved(weights)
    expected = get_peft_model_state_dict(den.net, adapter_name=ADAPTER)
    if {k: tuple(v.shape) for k, v in weights.items()} != {k: tuple(v.shape) for k, v in expected.items()}:
        raise ValueError(f"The adapter in {folder} does not fit this model's {owner} (its layers or shapes differ); it "
                         f"was trained on another model: start without it or use that model.")
    set_peft_model_state_dict(den.net, weights, adapter_name=ADAPTER)


def _run_info(cfg: FinetuneConfig, data: FinetuneSet, pipe, judge) -> dict:
    data_info = {"dir": str(data.folder), "images": len(data.prompts), "sha256": data.fingerprint}
    if cfg.latents == "saved":
        data_info["sha256"] += hashlib.sha256(_saved_latents_path(data).read_bytes()).hexdigest()
    info = {"config": asdict(cfg), "data": data_info, "base": model_record(pipe)}
    return {**info, "judge": judge_record(judge)} if judge is not None else info


def _prepare_output(out: Path, info: dict):
    """Make `out` (checking it is writable) and return the state to resume from, if any."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError:
        raise PermissionError(f"Cannot write to the output folder {out}; choose another output folder.") from None
    if _claim(out, info, check_only=True) is None:
        if (out / WEIGHTS_NAME).exists() or (out / "loss.csv").exists():
            raise ValueError(f"{out} already holds LoRA weights or a loss log that no saved run explains; "
                             f"choose a new output folder.")
        return None
    state = torch.load(out / "state.pt", weights_only=False) if (out / "state.pt").exists() else None
    if state is not None and state["step"] > info["config"]["steps"]:
        raise ValueError(f"{out} has already been trained for {state['step']} steps, more than the "
                         f"{info['config']['steps']} asked; ask for at least as many steps or use a new output folder.")
    return state


def _claim(out: Path, info: dict, check_only: bool = False) -> dict | None:
    """:func:`minitune.io.claim` of ``finetune_config.json``: a run resumes only with the same set and options
    (the RESUMABLE ones aside; options added since a run was saved count as their defaults)."""
    def view(s):
        config = {k: v for k, v in {**asdict(FinetuneConfig()), **s["config"]}.items() if k not in RESUMABLE}
        base = {k: v for k, v in s.get("base", {}).items() if k != "model"}  # the base model's name is not compared
        return {**config, "set content": s["data"]["sha256"], **base, **s.get("judge", {})}

    def refuse(changes):
        return (f"{out} holds a fine-tuning run with another set, base model or other options ({changes}); use a new "
                f"output folder or the same set, model and options (only the step count and validation settings may change).")
    return claim(out / "finetune_config.json", info, refuse, view=view, check_only=check_only)


def _check(cfg: FinetuneConfig) -> None:
    if (cfg.rank < 1 or cfg.steps < 1 or cfg.batch_size < 1 or cfg.checkpoint_every < 1 or cfg.validate_every < 0
            or cfg.warmup < 0):
        raise ValueError("rank, steps, batch size and checkpoint interval must be positive (validation interval and "
                         "warm-up >= 0).")
    if not 0 <= cfg.prompt_dropout < 1 or not 0 <= cfg.val_fraction < 1 or cfg.lr <= 0:
        raise ValueError("prompt dropout and validation fraction must lie in [0, 1) and the learning rate be positive.")
    if cfg.latents not in LATENTS:
        raise ValueError(f"Unknown latents {cfg.latents!r}: use vae (encode the set's images) or saved (the sampler's "
                         f"own, kept by build --keep-latents).")
    if cfg.latents == "saved" and cfg.objective == "dpo":
        raise ValueError("Saved latents train the mse objective only (a set keeps the chosen images' latents); use "
                         "latents='vae' for dpo.")
    if cfg.val_images < 1:
        raise ValueError(f"val_images must be at least 1, got {cfg.val_images!r}.")
    if isinstance(cfg.grad_accum, bool) or not isinstance(cfg.grad_accum, int) or cfg.grad_accum < 1:
        raise ValueError(f"grad_accum must be a positive integer, got {cfg.grad_accum!r}.")
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {cfg.objective!r}: use one of {', '.join(OBJECTIVES)}.")
    if not cfg.dpo_beta > 0:
        raise ValueError(f"dpo_beta must be positive, got {cfg.dpo_beta}.")


def _saved_latents_path(data: FinetuneSet) -> Path:
    path = data.folder / "latents.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{data.folder} has no latents.safetensors to train on; build the set with --keep-latents "
                                f"(keep_latents=True) or train on its images (latents='vae').")
    return path


def _saved_set(den, data: FinetuneSet, dev):
    """The sampler's own latents and prompt inputs of each image, as `build --keep-latents` stored them: one
    conditioning row per image (what the official code trains on: no VAE round trip, no re-encoding)."""
    from safetensors.torch import load_file

    t = load_file(_saved_latents_path(data))
    latents = t.pop("latents").float()
    if len(latents) != len(data.prompts) or tuple(latents.shape[1:]) != den.latent_shape:
        raise ValueError(f"The latents in {data.folder} are {tuple(latents.shape)}, but the set has {len(data.prompts)} "
                         f"images and the model draws {den.latent_shape}; rebuild the set with this model.")
    neg = "negative_"
    added = {k: v.to(dev) for k, v in t.items() if not k.startswith(neg) and k != "prompt_embeds"}
    added_u = {k.removeprefix(neg): v.to(dev) for k, v in t.items() if k.startswith(neg) and k != f"{neg}prompt_embeds"}
    cond = Conditioning(t["prompt_embeds"].to(dev), t[f"{neg}prompt_embeds"].to(dev), added, added_u)
    return latents.to(dev), cond, torch.arange(len(latents))


def _encode_set(den, data: FinetuneSet, cfg: FinetuneConfig, dev):
    """The frozen parts' work, done once: latents (seeded VAE draws) and each distinct prompt's conditioning, or the
    set's saved latents and prompt inputs (``cfg.latents == "saved"``).

    A preference set's latents are [N, 2, ...]: the chosen image, then the rejected one."""
    if cfg.latents == "saved":
        return _saved_set(den, data, dev)
    g = _generator(cfg.seed, 2, 0)
    images = data.images if data.rejected is None else torch.stack([data.images, data.rejected], 1).flatten(0, 1)
    chunks = [images[i : i + 16].to(dev) for i in range(0, len(images), 16)]
    latents = torch.cat([den.to_latents(x, g).float() for x in chunks])
    if not hasattr(den.pipe, "vae") and tuple(latents.shape[1:]) != den.latent_shape:
        raise ValueError(f"The images in {data.folder} are {tuple(latents.shape[1:])}, but the model draws "
                         f"{den.latent_shape}; fine-tune on images the model made.")
    if data.rejected is not None:
        latents = latents.unflatten(0, (len(data.images), 2))
    distinct = sorted(set(data.prompts))
    rows = torch.tensor([distinct.index(p) for p in data.prompts])
    return latents, _conditioning(den, distinct), rows


def _validation_draws(val: torch.Tensor, cfg: FinetuneConfig, shape, den):
    """Fixed (image, noise level, noise) triples for the held-out loss: VAL_DRAWS stratified levels per image."""
    g = _generator(cfg.seed, 4, 0)
    i = val.repeat_interleave(VAL_DRAWS)
    t = den.validation_times(torch.arange(VAL_DRAWS).repeat(len(val)) + torch.rand(len(i), generator=g), VAL_DRAWS)
    return i, t, torch.randn((len(i), *shape), generator=g)


def _open_logs(out: Path, start: int, objective: str = "mse") -> dict:
    """loss.csv, validation.csv and val_scores.csv, keeping the rows up to `start` (the step a resumed run continues from)."""
    logs = {}
    loss_header = ["step", "loss"] + (["accuracy"] if objective == "dpo" else [])
    for name, header in (("loss.csv", loss_header), ("validation.csv", ["step", "val_loss"]), (SCORES, ["step", "score"])):
        path = out / name
        kept = [r for r in list(csv.reader(path.open()))[1:] if int(r[0]) <= start] if path.exists() and start else []
        with replaced(path) as tmp, tmp.open("w", newline="") as f:
            csv.writer(f).writerows([header] + kept)
        f = path.open("a", newline="")
        logs[name] = (f, csv.writer(f))
    return logs


@dataclass
class _Run:
    """One fine-tuning run while it trains: the frozen inputs, the adapter's parameters, the logs."""

    cfg: FinetuneConfig
    den: object  # the pipeline's family adapter
    accelerator: object
    latents: torch.Tensor  # [N, ...], or [N, 2, ...] (chosen, rejected) for a preference set
    cond: object  # the Conditioning of each distinct prompt
    rows: torch.Tensor  # the prompt row of each image
    ties: torch.Tensor  # pairs that state no preference (weight 0 in DPO)
    out: Path
    dtype: torch.dtype  # the frozen network's (the adapter trains in float32)
    judge: object = None  # scores the validation prompts' images, for the best checkpoint
    params: list = field(default_factory=list)
    model: object = None  # the network as accelerate prepared it
    opt: object = None
    logs: dict = field(default_factory=dict)  # file name -> (file, csv writer), on the main process

    @property
    def chosen(self) -> torch.Tensor:
        return self.latents[:, 0] if self.preference else self.latents

    @property
    def preference(self) -> bool:
        return self.cfg.objective == "dpo"

    @property
    def dev(self) -> torch.device:
        return self.accelerator.device


def _predict(run: _Run, net, x0, prompt_rows, t, noise, drop):
    """`net`'s prediction for x0 noised at t (unconditional where `drop`), and its training target."""
    hidden, added = _unet_inputs(run.cond, prompt_rows, drop, run.dtype)
    switches = {name: True for name in run.den.loss_options if getattr(run.cfg, name)}
    return run.den.train_prediction(net, x0, noise, t, hidden, added, run.dtype, **switches)


def _step_loss(run: _Run, i, t, noise, drop):
    """The loss of images `i` and, for DPO, the preference accuracy (against the adapter switched off)."""
    if not run.preference:
        pred, target = _predict(run, run.model, run.chosen[i.to(run.dev)], run.rows[i], t, noise, drop)
        return F.mse_loss(pred, target), None

    def pair(x):
        return x.repeat_interleave(2, dim=0)  # (chosen, rejected) rows

    def two(x):
        return x.unflatten(0, (len(i), 2))

    args = run.latents[i.to(run.dev)].flatten(0, 1), pair(run.rows[i]), pair(t), pair(noise), pair(drop)
    pred, target = _predict(run, run.model, *args)
    net = run.den.net
    with torch.no_grad():
        net.disable_adapters()
        ref, _ = _predict(run, net, *args)
        net.enable_adapters()
    return dpo_loss(two(pred), two(ref), two(target), run.cfg.dpo_beta, weight=~run.ties[i].to(run.dev))


def _train_step(run: _Run, step: int, train: torch.Tensor, shape):
    """One optimiser step on this process's slice of the global batch, in `grad_accum` equal micro-batches;
    returns the global batch's loss and the local accuracy (None for mse)."""
    cfg, procs = run.cfg, run.accelerator.num_processes
    per = cfg.batch_size // procs
    mine = slice(run.accelerator.process_index * per, (run.accelerator.process_index + 1) * per)
    idx, t, noise, drop = (x[mine] for x in _step_draws(cfg, step, len(train), shape, run.den))
    loss, accuracy = 0.0, None
    for part in torch.arange(len(idx)).chunk(cfg.grad_accum):  # equal micro-batches: their mean is the batch's
        micro, acc = _step_loss(run, train[idx[part]], t[part].to(run.dev), noise[part].to(run.dev), drop[part])
        run.accelerator.backward(micro / cfg.grad_accum)
        loss = loss + micro.detach() / cfg.grad_accum
        accuracy = None if acc is None else (0.0 if accuracy is None else accuracy) + acc / cfg.grad_accum
    if cfg.max_grad_norm:
        run.accelerator.clip_grad_norm_(run.params, cfg.max_grad_norm)
    if cfg.warmup:  # a pure function of the step, so a resumed run warms up as an uninterrupted one
        for group in run.opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return run.accelerator.reduce(loss.detach(), "mean").item(), accuracy


def _micro_batch(run: _Run) -> int:
    """Images per micro-batch on one process: the most a training step holds in memory at once."""
    return run.cfg.batch_size // (run.accelerator.num_processes * run.cfg.grad_accum)


@torch.no_grad()
def _validate(run: _Run, step: int, val_draws, sample_prompts: list[str]) -> None:
    """The held-out loss (fixed draws) into validation.csv, a sample grid into samples/ and the validation prompts'
    images (judged into val_scores.csv when the run has a judge), all in micro-batches."""
    from .images import save_grid
    from .sampling import sample_with_mi

    val_i, val_t, val_noise = val_draws
    if len(val_i):
        total, bs = 0.0, _micro_batch(run)
        for s in range(0, len(val_i), bs):
            i, t, noise = (x[s : s + bs] for x in (val_i, val_t, val_noise))
            pred, target = _predict(run, run.den.net, run.chosen[i.to(run.dev)], run.rows[i], t.to(run.dev),
                                    noise.to(run.dev), torch.zeros(len(i), dtype=torch.bool))
            total += F.mse_loss(pred, target, reduction="sum").item()
        run.logs["validation.csv"][1].writerow([step, f"{total / val_noise.numel():.5f}"])
    if sample_prompts:
        cands = sample_with_mi(run.den.pipe, sample_prompts, 4, guidance_scale=run.cfg.guidance_scale,
                               num_inference_steps=run.cfg.sample_steps, seed=run.cfg.seed,
                               batch_size=min(_micro_batch(run), run.den.sample_batch_size), progress=False)
        (run.out / "samples").mkdir(exist_ok=True)
        save_grid(run.out / "samples" / f"step-{step:05d}.png", cands.images, cols=4)
    if run.cfg.val_prompts:
        _validation_images(run, step)


def _validation_images(run: _Run, step: int) -> None:
    """The validation prompts' images at this step (samples/val-<step>.png) and, with a judge, their mean score."""
    from .images import save_grid
    from .sampling import sample_with_mi

    cfg = run.cfg
    cands = sample_with_mi(run.den.pipe, cfg.val_prompts, cfg.val_images, guidance_scale=cfg.guidance_scale,
                           num_inference_steps=cfg.sample_steps, seed=cfg.seed,
                           batch_size=min(_micro_batch(run), run.den.sample_batch_size), progress=False)
    (run.out / "samples").mkdir(exist_ok=True)
    save_grid(run.out / "samples" / f"val-{step:05d}.png", cands.images, cols=cfg.val_images)
    if run.judge is not None:
        scores = run.judge(cands.images, cands.prompts)
        value = scores[getattr(run.judge, "metric", None) or next(iter(scores))]
        run.logs[SCORES][1].writerow([step, f"{float(np.mean(value)):.5f}"])


def best_checkpoint(out: str | os.PathLike) -> dict | None:
    """The checkpoint of a finished run whose validation images the judge scored highest (the official code keeps a
    checkpoint every few steps and picks the best on validation images): its step, folder and score, with the
    base model's score at step 0; None for a run without a judge. Ties go to the earlier step."""
    out = Path(out)
    path, config = out / SCORES, out / "finetune_config.json"
    if not path.is_file() or not config.is_file():
        return None
    cfg = json.loads(config.read_text())["config"]
    rows = [(int(r[0]), float(r[1])) for r in list(csv.reader(path.open()))[1:]]
    kept = [(step, score) for step, score in rows if (out / f"checkpoint-{step}").is_dir()]
    if not kept:
        return None
    step, score = max(kept, key=lambda r: (r[1], -r[0]))
    base = next((v for s, v in rows if s == 0), None)
    return {"step": step, "checkpoint": str(out / f"checkpoint-{step}"), "score": score, "base_score": base,
            "last_step": cfg["steps"]}


def _checkpoint(run: _Run, step: int, info: dict) -> None:
    """checkpoint-<step>/ (an adapter) and state.pt (adapter, optimiser and step, to resume from)."""
    from peft.utils import get_peft_model_state_dict

    for f, _ in run.logs.values():
        f.flush()
    save_adapter(run.den.pipe, run.out / f"checkpoint-{step}")
    lora = get_peft_model_state_dict(run.den.net, adapter_name=ADAPTER)
    with replaced(run.out / "state.pt") as tmp:
        torch.save({"lora": lora, "opt": run.opt.state_dict(), "step": step, "config": info["config"]}, tmp)


@contextmanager
def _lora_attached(unet, cfg: FinetuneConfig, targets=EpsilonFamily.lora_targets):
    """Add the run's LoRA adapter on `targets` (seeded, float32, the only trainable weights) and yield its parameters;
    afterwards the adapter is removed and every parameter's requires_grad is as it was."""
    trainable = {name: p.requires_grad for name, p in unet.named_parameters()}
    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # peft draws the initial A matrices from the global CPU generator
        torch.default_generator.manual_seed(_generator(cfg.seed, 5, 0).initial_seed())
        unet.add_adapter(lora_config(cfg, targets), adapter_name=ADAPTER)
    try:
        params = [p for name, p in unet.named_parameters() if "lora_" in name]
        for p in params:
            p.data = p.data.float()  # trainable weights in float32 even when the model runs in half precision
            p.requires_grad_(True)
        yield params
    finally:
        unet.unload_lora()
        for name, p in unet.named_parameters():
            p.requires_grad_(trainable[name])


def _checked_inputs(den, data, config, options):
    """The run's config (the family's defaults where none is given), set and initial adapter folder, each checked
    (one sentence each)."""
    cfg = replace(config or FinetuneConfig(**den.finetune_defaults), **options)
    guidance_scale, sample_steps = den.sampling(cfg.guidance_scale, cfg.sample_steps)
    cfg = replace(cfg, guidance_scale=guidance_scale, sample_steps=sample_steps)
    if cfg.init_adapter is not None:
        cfg = replace(cfg, init_adapter=str(cfg.init_adapter))
    _check(cfg)
    if cfg.precondition and "precondition" not in den.loss_options:
        raise ValueError(f"precondition trains SD3's loss on the implied clean latent; {den.network} has no such loss, "
                         f"leave it off.")
    if getattr(den.net, "peft_config", None):
        raise ValueError(f"The pipeline's network ({den.network}) already carries a LoRA adapter; call "
                         "pipe.unload_lora_weights() first, or pass the adapter folder as init_adapter to continue training it.")
    data = data if isinstance(data, FinetuneSet) else load_finetune_set(data)
    check_objective(cfg, data)
    init = Path(cfg.init_adapter) if cfg.init_adapter else None
    if init is not None and not (init / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"No LoRA adapter at {init}: the folder must contain {WEIGHTS_NAME} "
                                f"(as `minitune finetune` writes).")
    return cfg, data, init


def _accelerator(cfg: FinetuneConfig, device: str):
    """accelerate's Accelerator for the run, after checking that the batch splits over its processes."""
    from accelerate import Accelerator

    from . import resolve_device

    accelerator = Accelerator(cpu=resolve_device(device).type == "cpu")
    procs = accelerator.num_processes
    if cfg.batch_size % (procs * cfg.grad_accum):
        raise ValueError(f"The batch size {cfg.batch_size} does not split over {procs} process(es) × {cfg.grad_accum} "
                         f"accumulation step(s); use a multiple of {procs * cfg.grad_accum}.")
    return accelerator


def finetune(pipe, data: str | os.PathLike | FinetuneSet, output_dir: str | os.PathLike,
             config: FinetuneConfig | None = None, *, device: str = "auto", progress: bool = True,
             until: int | None = None, judge=None, **options) -> Path:
    """Train a LoRA adapter on a fine-tuning set; returns `output_dir`, ready for ``pipe.load_lora_weights``.

    Options are those of :class:`FinetuneConfig`, as a config and/or keywords that override it,
    e.g. ``finetune(pipe, "set", "lora", rank=8, steps=300)``.

    pipe: a pipeline of any family (:func:`minitune.families.family_of`: Shapes, Stable Diffusion, SDXL,
    SD3) without LoRA adapters; it is moved to the accelerator's device and left without an adapter
    afterwards. Without a config the run starts from the family's defaults (SD3: the official RFMI
    recipe), and the sample grid uses the family's guidance scale and steps. data: a set folder or a
    :class:`FinetuneSet`. device: ``"cpu"`` forces the CPU, otherwise accelerate picks the device.
    output_dir receives ``pytorch_lora_weights.safetensors`` (the final adapter),
    ``checkpoint-<step>/`` adapters, ``loss.csv`` (step, loss), ``validation.csv`` (step, held-out
    loss), ``samples/step-<step>.png`` grids, ``finetune_config.json`` and ``state.pt`` (to resume).
    With ``val_prompts`` each validation also samples ``val_images`` images per validation prompt
    (``samples/val-<step>.png``); `judge` (a scorer, e.g. :func:`minitune.judges.make_scorer`) scores them into
    ``val_scores.csv``, and :func:`best_checkpoint` names the checkpoint it scores highest. Validation runs in
    micro-batches (``batch_size`` / processes / ``grad_accum`` images), the memory a training step needs.
    ``latents="saved"`` trains on the sampler's own latents and prompt embeddings (a set built with
    ``keep_latents=True``) instead of encoding its PNGs again.
    Running again on the same folder with the same set and options resumes from the last
    checkpoint (a larger ``steps`` trains on); `until` stops after that many steps, e.g. to train
    in chunks. Latent models train on their VAE latents; a v-prediction scheduler gets v targets,
    rectified flow the flow-matching velocity. ``objective="dpo"`` trains on a preference set (``select(..., pairs=True)``) with
    :func:`dpo_loss` against the starting model (the pipeline with the adapter switched off); pairs
    marked ``"tie"`` weigh 0, so a set of ties only leaves the adapter where it started. Its
    ``loss.csv`` adds the preference accuracy, and the validation loss is that of the chosen images.
    """
    den, out = denoiser_for(pipe), Path(output_dir)
    cfg, data, init = _checked_inputs(den, data, config, options)
    if init is not None and init.resolve() == out.resolve():
        raise ValueError(f"The output folder {out} is the initial adapter's folder; write the new adapter elsewhere.")
    info = _run_info(cfg, data, pipe, judge)
    accelerator = _accelerator(cfg, device)
    state = _prepare_output(out, info)
    accelerator.wait_for_everyone()  # every process has read the folder before the main one writes to it
    pipe.to(accelerator.device)
    latents, cond, rows = _encode_set(den, data, cfg, accelerator.device)
    ties = torch.tensor([bool(r.get("tie")) for r in data.records])  # pairs that state no preference weigh 0
    run = _Run(cfg, den, accelerator, latents, cond, rows, ties, out, den.net.dtype, judge)
    shape = run.chosen.shape[1:]
    train, val_draws, sample_prompts = _split(cfg, data.prompts, shape, den)
    with _lora_attached(den.net, cfg, den.lora_targets) as run.params:
        if init is not None:
            _load_init_adapter(den, init, cfg)
        run.opt = torch.optim.AdamW(run.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = _restore(run, state)
        run.model, run.opt = accelerator.prepare(den.net, run.opt)
        _train(run, start, cfg.steps if until is None else min(until, cfg.steps), train, shape, info,
               val_draws, sample_prompts, progress)
    return out


def validation_prompts(prompts: list[str], n: int, seed: int) -> list[str]:
    """The first `n` of `prompts` in an order drawn from `seed`: the validation prompts of a run (the official code
    draws 10 of the category's validation file)."""
    if n < 1:
        raise ValueError(f"The number of validation prompts must be at least 1, got {n!r}.")
    order = torch.randperm(len(prompts), generator=_generator(seed, 6, 0)).tolist()
    return [prompts[i] for i in order[:n]]


def _split(cfg: FinetuneConfig, prompts: list[str], shape, den):
    """The seeded split of the set's images: the training rows, the fixed validation draws of the held-out
    ones (:func:`_validation_draws`) and the prompts of the sample grid."""
    order = torch.randperm(len(prompts), generator=_generator(cfg.seed, 3, 0))
    n_val = min(int(len(prompts) * cfg.val_fraction), len(prompts) - 1)
    val, train = order[:n_val], order[n_val:]
    sample_prompts = list(dict.fromkeys(prompts[i] for i in order.tolist()))[: cfg.sample_prompts]
    return train, _validation_draws(val, cfg, shape, den), sample_prompts


def _restore(run: _Run, state: dict | None) -> int:
    """Load a resumed run's adapter and optimiser state; returns the step to continue from (0 for a new run)."""
    from peft.utils import set_peft_model_state_dict

    if state is None:
        return 0
    set_peft_model_state_dict(run.den.net, state["lora"], adapter_name=ADAPTER)
    run.opt.load_state_dict(state["opt"])
    return state["step"]


def _train(run: _Run, start: int, end: int, train, shape, info: dict, val_draws, sample_prompts,
           progress: bool) -> None:
    """Steps start..end: train, log, validate and checkpoint (on the main process); the adapter at the end."""
    cfg, accelerator, main = run.cfg, run.accelerator, run.accelerator.is_main_process
    if main:
        _claim(run.out, info)
        run.logs = _open_logs(run.out, start, cfg.objective)
        if start == 0:
            _validate(run, 0, val_draws, sample_prompts)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="finetune", disable=not (progress and main))
    for step in bar:
        loss, accuracy = _train_step(run, step, train, shape)
        extra = [] if accuracy is None else [f"{accelerator.reduce(accuracy, 'mean').item():.3f}"]  # on every process
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if main:
            run.logs["loss.csv"][1].writerow([done, f"{loss:.5f}", *extra])
            if (cfg.validate_every and done % cfg.validate_every == 0) or done == cfg.steps:
                _validate(run, done, val_draws, sample_prompts)
            if done % cfg.checkpoint_every == 0 or done == end:
                _checkpoint(run, done, info)
        accelerator.wait_for_everyone()
    if main:
        for f, _ in run.logs.values():
            f.close()
        if end == cfg.steps:
            save_adapter(run.den.pipe, run.out)
    accelerator.wait_for_everyone()
