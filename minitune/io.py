"""Files: written whole or not at all, run folders claimed for one set of settings, image sets, tables.

* :func:`atomic_write` and :func:`replaced` write through a temporary name and rename, so that a
  reader, or a run killed half-way, never sees a partial file.
* :func:`claim` ties a run's output folder to its settings, so that a rerun resumes a run only with
  the settings it was made with: a new folder gets them as JSON, and a folder made with other
  settings is refused in one sentence that names what differs. Pools and sets, fine-tuning runs,
  experiments and base-model training all claim their folders this way.
* :func:`model_record` and :func:`judge_record` say what a run was made with: a fingerprint of the model
  (its config files and sampled weights, not its path) with its dtype, and of a judge's weights, so that
  a claim refuses a resume on another model or judge and accepts the same model under another path.
* :func:`write_imagefolder` writes a Hugging Face ``imagefolder`` (PNG files and ``metadata.jsonl``),
  the format of every pool and fine-tuning set, which ``datasets.load_dataset("imagefolder", data_dir=...)``
  and diffusers' training scripts read.
* :func:`markdown_table` turns rows into the Markdown tables of the reports and the book.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

PARTIAL = ".partial"  # the suffix of a file or folder still being written


def slug(name: str) -> str:
    """`name` as a file name: lower case, each character that is not a letter or digit a "-", none at the ends."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary name in the same folder, then rename it into place, so a
    reader (or a run killed half-way) never sees a partial file."""
    with replaced(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def replaced(path: str | os.PathLike):
    """Yield a temporary path next to `path` to write a file or a folder into; when the block ends without
    an error, the result replaces `path` (a folder already there is removed first), else it is deleted."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{PARTIAL}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --------------------------------------------------------------------------- run folders


def changed_settings(saved: dict, settings: dict) -> str:
    """The settings in which two claims differ, for an error message: ``"k 2 (now 1), prompts"``, or ``""``.

    Values compare as JSON (a tuple equals the list it was saved as). A value longer than 40 characters
    (a prompt list, a fingerprint) is named without it.
    """
    saved, settings = json.loads(json.dumps(saved)), json.loads(json.dumps(settings))
    changes = []
    for key in dict.fromkeys([*saved, *settings]):
        old, new = saved.get(key), settings.get(key)
        if old != new:
            short = max(len(repr(old)), len(repr(new))) <= 40
            changes.append(f"{key} {old!r} (now {new!r})" if short else str(key))
    return ", ".join(changes)


def _read_settings(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a JSON object of settings, so its folder is corrupt; use a new output folder.")
    return saved


def claim(path: str | os.PathLike, settings: dict, refuse: Callable[[str], str], *,
          view: Callable[[dict], dict] | None = None, check_only: bool = False, write: Callable = atomic_write) -> dict | None:
    """Claim a run's folder for `settings`: a new run records them, a resumed run must have the same ones.

    `path` is the JSON file in the run's folder that records the settings. Where it does not exist yet,
    the folder is created and `settings` are written. Where it does, the saved settings must agree
    with `settings`, else ``ValueError(refuse(changes))`` is raised, `changes` naming what differs
    (:func:`changed_settings`); then `settings` are written again (what may change, such as a step
    count, is updated). `view` picks what must agree, applied to both sides: it may leave out what
    may change and fill in defaults for settings added since a file was written. ``check_only`` writes
    nothing (e.g. on every process, before the main one claims). `write` is the writer, ``(path, text)``.
    Returns the saved settings, or None for a new run.
    """
    path = Path(path)
    saved = _read_settings(path)
    if saved is not None:
        view = view or (lambda s: s)
        changes = changed_settings(view(saved), view(settings))
        if changes:
            raise ValueError(refuse(changes))
    if not check_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, json.dumps(settings, indent=1) + "\n")
    return saved


# --------------------------------------------------------------------------- fingerprints

_CONFIG_FILES = (".json", ".txt", ".model")  # configs and tokenizer files, hashed whole
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # hashed by header and sampled blocks
_BLOCKS, _BLOCK = 16, 4096


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """A short hash of a saved model that does not depend on where it lies: its config and tokenizer files whole,
    and of each weights file its safetensors header with 16 blocks of 4 KiB spread over its data (another training
    run changes them; reading them costs milliseconds where hashing gigabytes would cost minutes)."""
    folder, digest = Path(folder), hashlib.sha256()
    names = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.suffix in _CONFIG_FILES + _WEIGHT_FILES)
    for name in names:
        path = folder / name
        if path.is_file() and not any(part.startswith(".") for part in name.parts):  # not a download's .cache/
            digest.update(name.as_posix().encode() + b"\0")
            digest.update(path.read_bytes() if path.suffix in _CONFIG_FILES else _weights_sample(path))
    return digest.hexdigest()[:16]


def _weights_sample(path: Path) -> bytes:
    """A weights file's size, its safetensors header (if it is one) and blocks spread evenly over the rest."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = 0
        if path.suffix == ".safetensors":
            (n,) = struct.unpack("<Q", f.read(8))
            start = 8 + n
        out = [str(size).encode(), f.read(start - 8) if start else b""]
        for i in range(_BLOCKS):
            f.seek(start + (size - start - _BLOCK) * i // (_BLOCKS - 1) if size - start > _BLOCK else start)
            out.append(f.read(_BLOCK))
    return b"".join(out)


def modules_fingerprint(components: dict) -> str:
    """A short hash of models held in memory only (built in code): each one's config and, of each weight, its name,
    shape, dtype and 16 values spread over it. Schedulers are left out: the sampler is recorded on its own."""
    import torch

    digest = hashlib.sha256()
    for name, part in sorted(components.items()):
        if part is None or type(part).__name__.endswith("Scheduler"):
            continue
        config = getattr(part, "config", None)
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        digest.update(json.dumps([name, type(part).__name__, {k: v for k, v in config.items()
                                  if not k.startswith("_") and not k.endswith("_version")}], sort_keys=True,
                                 default=str).encode())
        for key, t in part.state_dict().items() if isinstance(part, torch.nn.Module) else ():
            flat = t.detach().flatten()
            values = flat[:: max(1, flat.numel() // _BLOCKS)][:_BLOCKS].float().cpu().numpy()
            digest.update(f"{key}{tuple(t.shape)}{t.dtype}".encode() + values.tobytes())
    return digest.hexdigest()[:16]


def _fingerprint(model, origin) -> str:
    """The fingerprint of a model loaded from `origin` (its folder, if that is one here) or else of its modules."""
    if origin and Path(str(origin)).is_dir():  # a model built in code has no origin ("" or None)
        return folder_fingerprint(origin)
    return modules_fingerprint(model.components if hasattr(model, "components") else {"model": model})


def model_record(pipe, name: str | None = None) -> dict:
    """What a run records of its pipeline: ``model`` (a name for people: `name`, its path or its class, never
    compared), ``model_fingerprint`` (compared: the same model under another path is the same) and ``dtype``."""
    origin = getattr(pipe, "name_or_path", None)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    return {"model": str(name or origin or type(pipe).__name__), "model_fingerprint": _fingerprint(pipe, origin),
            "dtype": str(getattr(denoiser, "dtype", "")).removeprefix("torch.")}


def judge_record(judge) -> dict:
    """What a run records of a judge: ``judge``, its metric (or name), ``judge_phrases`` (BLIP-VQA's phrase splitter),
    and ``judge_fingerprint``, of its weights where it has them (a learned judge's ``model``), else None (an exact
    judge, such as the Shapes oracle)."""
    name = str(getattr(judge, "metric", None) or getattr(judge, "__name__", type(judge).__name__))
    model = getattr(judge, "model", None)
    splitter = {"judge_phrases": judge.phrase_splitter} if hasattr(judge, "phrase_splitter") else {}
    return {"judge": name, **splitter,
            "judge_fingerprint": None if model is None else _fingerprint(model, getattr(model, "name_or_path", None))}


# --------------------------------------------------------------------------- image sets


def png_bytes(image) -> bytes:
    """PNG bytes of one uint8 [H, W, 3] image; the same pixels always give the same bytes (no timestamps)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder: str | os.PathLike, images: Iterable[tuple[str, object]], *,
                 write: Callable = atomic_write) -> None:
    """Write each ``(file name, image)`` into `folder`: a uint8 [H, W, 3] array as PNG, bytes (an image
    file's content, e.g. copied from another set) as they are. `write` is the writer, ``(path, data)``."""
    for name, image in images:
        write(Path(folder) / name, image if isinstance(image, bytes) else png_bytes(image))


def write_metadata(folder: str | os.PathLike, records: list[dict], *, write: Callable = atomic_write) -> None:
    """Write an imagefolder's ``metadata.jsonl``, one JSON record per line; write it last, as its presence
    marks a complete folder."""
    write(Path(folder) / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def write_imagefolder(folder: str | os.PathLike, records: list[dict], images: Iterable, *,
                      write: Callable = atomic_write) -> Path:
    """Write a Hugging Face ``imagefolder``: the image of each record (see :func:`write_images`) under its
    ``file_name``, then ``metadata.jsonl`` (every record: ``file_name``, ``text`` and any other fields).

    ``datasets.load_dataset("imagefolder", data_dir=folder)`` and :func:`minitune.finetune.load_finetune_set`
    read the result. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_images(folder, ((r["file_name"], image) for r, image in zip(records, images, strict=True)), write=write)
    write_metadata(folder, records, write=write)
    return folder


# --------------------------------------------------------------------------- tables


def format_cell(value) -> str:
    """A table cell: a string as it is, a float to 4 significant digits, anything else as JSON."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def markdown_table(rows: list, columns: list[str] | None = None, *, align: str = "") -> str:
    """A Markdown table of `rows`: flat dicts, or sequences of cells in the order of `columns`.

    columns: the header (default: the union of the dicts' keys, a missing key an empty cell). Cells go
    through :func:`format_cell`, so preformatted strings stay as they are. align: one letter per column,
    ``l`` for the plain rule ``---`` and ``r`` for right-aligned numbers ``---:``; columns past its end
    get ``l``, so ``"l" + "r" * 4`` right-aligns all but the first of five.
    """
    if columns is None:
        if not rows:
            raise ValueError("No rows to tabulate.")
        columns = list(dict.fromkeys(k for r in rows for k in r))
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(columns), "l")[: len(columns)])
    lines = ["| " + " | ".join(columns) + " |", rule]
    for r in rows:
        cells = [r.get(c, "") for c in columns] if isinstance(r, dict) else list(r)
        lines.append("| " + " | ".join(format_cell(v) for v in cells) + " |")
    return "\n".join(lines)
