"""Build MI-TUNE's fine-tuning set: N candidates per prompt, keep the top-k by MI.

Two steps, two kinds of folder:

* :func:`build_pool` samples N candidates per prompt with CFG (:func:`~minitune.sampling.sample_with_mi`)
  and stores every one: PNG image, trajectory MI, seed and, for the Shapes world, the oracle's
  verdict; optionally an orthogonal re-noising MI, a contrast of point-wise MI against near-miss
  prompts, and the latents with the prompt embeddings.
* :func:`select` picks k candidates per prompt from a pool: by an MI signal (the method), at random or by the
  oracle (the controls), so that all sets of an experiment are selections of the same candidates.

Both are Hugging Face ``imagefolder`` datasets, readable by ``datasets.load_dataset("imagefolder",
data_dir=...)`` and by diffusers' training scripts: PNG files next to ``metadata.jsonl`` (one record
per image: ``file_name``, ``text``, ``mi``, ``seed``, ...; a set adds ``rank``, the place within its
prompt by the selection key), plus ``manifest.json`` with every parameter and count.

Resumable and atomic. A folder's manifest is written first, and a rerun with other parameters is
refused rather than mixed in. The pool is sampled in chunks of prompts; a prompt is done once its
record file is written, after its images. Every file goes to a temporary name in its folder and is
then renamed (``os.replace``), so an interrupted build leaves whole files only, and ``metadata.jsonl``,
written last, marks a complete folder. A rerun continues where the last one stopped and ends with the
same files, byte for byte, as an uninterrupted run (PNG encoding stores pixels only, no timestamps).

Pool layout::

    manifest.json                parameters, counts and the prompt list
    00003_001.png                candidate 1 of prompt 3
    records/00003.json           the records of prompt 3 (its done-marker)
    latents/00003.safetensors    optional: "latents" [N, ...] and the prompt's UNet conditioning
    metadata.jsonl               all records, in prompt and candidate order

A set holds its selected PNGs (same names), ``metadata.jsonl`` ordered by prompt then rank, and,
when the pool kept latents, ``latents.safetensors`` with one row per metadata line.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from tqdm.auto import tqdm

from .families import denoiser_for, family_of
from .io import PARTIAL, atomic_write, claim, judge_record, model_record, write_images, write_metadata
from .images import to_uint8
from .sampling import check_sampling, sample_with_mi

# how a preference set finds each chosen candidate's rejected one: "extremes" the r-th worst of the prompt,
# "nearest" the best candidate left out of the top k that scores strictly lower (a hard negative)
PAIRINGS = ("extremes", "nearest")
_POOL_PARAMS = ("model", "model_fingerprint", "dtype", "pipeline", "sampler", "n_candidates", "guidance_scale",
                "num_inference_steps", "seed", "renoise_samples", "contrast_samples", "keep_latents", "oracle")


@dataclass(frozen=True)
class Selector:
    """One way to rank a prompt's candidates (higher first).

    key: a candidate record's score (None: a seeded random order); fields: the pool fields it reads;
    needs: the pool setting that must be on for the pool to hold them (a build option with ``_samples``:
    the MI samples per candidate, at least 2); missing: the sentence for a pool without them;
    signal: an MI signal the model measures itself (an arm of the experiment)."""

    key: Callable[[dict], object] | None
    fields: tuple[str, ...] = ()
    needs: str | None = None
    missing: str = ""
    signal: bool = False


SELECTORS: dict[str, Selector] = {
    "mi": Selector(lambda r: r["mi"], ("mi",), signal=True),
    "mi_renoise": Selector(lambda r: r["mi_renoise"], ("mi_renoise",), "renoise_samples", signal=True,
                           missing="The pool has no re-noising MI; build it with renoise_samples of at least 2 "
                                   "to select by mi_renoise."),
    "mi_contrast": Selector(lambda r: r["mi_contrast"], ("mi_contrast",), "contrast_samples", signal=True,
                            missing="The pool has no contrast MI; build it with contrast_samples of at least 2 "
                                    "to select by mi_contrast."),
    "random": Selector(None),
    "oracle": Selector(lambda r: (r["soft"], r["strict"]), ("soft", "strict"), "oracle",
                       missing="The oracle selector needs a Shapes-world pool, and this one comes from {pipeline}."),
    "judge": Selector(lambda r: r["judge"], ("judge",), "judge",
                      missing="The pool has no judge's scores; build it with a judge (`minitune build --scorer ...`) "
                              "to select by judge."),
}
SIGNALS = tuple(name for name, sel in SELECTORS.items() if sel.signal)


def sample_options(selectors) -> dict[str, str]:
    """{selector: its MI-samples option} for those of `selectors` that need MI samples per candidate."""
    return {name: SELECTORS[name].needs for name in selectors
            if SELECTORS[name].needs and SELECTORS[name].needs.endswith("_samples")}


# --------------------------------------------------------------------------- prompts


def read_prompts(path) -> list[str]:
    """Prompts from a UTF-8 text file, one per line, in file order.

    A byte-order mark, blank lines and ``# comment`` lines are skipped (none of them is a prompt, and a
    kept mark would change the prompt's seed). A prompt listed more than once is kept once, as
    T2I-CompBench's official code keeps it (its ``color_train.txt`` repeats 21 lines), with a one-line
    note on the ``minitune`` logger.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {path} does not exist; give a text file with one prompt per line.")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise ValueError(f"Prompt file {path} is not UTF-8 text; save it as UTF-8 with one prompt per line.") from None
    listed = [line for line in lines if line and not line.startswith("#")]
    prompts = list(dict.fromkeys(listed))
    if not prompts:
        raise ValueError(f"Prompt file {path} is empty; put one prompt per line.")
    if len(prompts) < len(listed):
        logging.getLogger("minitune").warning(
            f"note: {path.name} lists {len(listed) - len(prompts)} prompt(s) again; each is kept once, "
            f"{len(prompts)} prompts in all.")
    return prompts


# --------------------------------------------------------------------------- files and folders


def _write(path: Path, data: bytes | str) -> None:
    """Write a file atomically (:func:`minitune.io.atomic_write`); one name, so a test can interrupt it."""
    atomic_write(path, data)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not valid JSON, so its folder is corrupt; rebuild it into a new folder.") from None


def _read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no manifest.json, so it is not a pool or set made by minitune; "
                                "check the path.")
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("kind") not in ("pool", "set") or "n_images" not in manifest:
        raise ValueError(f"{path} is not a minitune pool or set manifest; check the path or rebuild into a new folder.")
    return manifest


def _check_folder(folder: Path, manifest: dict) -> None:
    """Refuse a folder that holds another build, or files minitune did not write (nothing is overwritten)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"Output folder {folder} is a file; choose a folder path.")
    if (folder / "manifest.json").is_file():
        _read_manifest(folder)  # a manifest minitune wrote
        claim(folder / "manifest.json", manifest, _other_build(folder), view=_compared, check_only=True)
    elif folder.is_dir() and any(not p.name.endswith(PARTIAL) for p in folder.iterdir()):
        raise ValueError(f"Output folder {folder} is not empty and was not made by minitune; "
                         "choose a new or empty folder so that nothing in it is overwritten.")


def _compared(manifest: dict) -> dict:
    """What a resumed build must share with the folder's: everything but the model's name (its fingerprint counts)."""
    return {k: v for k, v in manifest.items() if k != "model"}


def _other_build(folder: Path):
    """How :func:`minitune.io.claim` refuses `folder` when it holds a build with other parameters."""
    def refuse(changes: str) -> str:
        return (f"{folder} holds a {_read_manifest(folder)['kind']} built with other parameters ({changes}); rerun "
                "with the same parameters to resume it, or choose another output folder.")
    return refuse


def _processes():
    """The accelerate state: one process normally, several under ``accelerate launch``."""
    from accelerate import PartialState

    return PartialState()


def _claim_all(folders) -> None:
    """Check every (folder, manifest) on every process, then claim them on the main process only."""
    state = _processes()
    for folder, manifest in folders:
        _check_folder(folder, manifest)
    state.wait_for_everyone()  # every process has looked before the main one writes
    if state.is_main_process:
        for folder, manifest in folders:
            _claim(folder, manifest)
    state.wait_for_everyone()


def _claim(folder: Path, manifest: dict) -> None:
    """Create `folder` (or reopen it to resume), drop leftovers of an interrupted write, write its manifest."""
    _check_folder(folder, manifest)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.rglob(f".*{PARTIAL}"):
            leftover.unlink()
        claim(folder / "manifest.json", manifest, _other_build(folder), view=_compared, write=_write)
    except OSError as e:
        raise ValueError(f"Cannot write to output folder {folder} ({e.strerror or e}); choose a writable folder.") from None


def load_records(folder) -> tuple[dict, list[dict]]:
    """The manifest and the metadata records of a complete pool or set, with every file it lists checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"There is no folder {folder}; build it first (minitune build, or build_pool/select).")
    manifest = _read_manifest(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise ValueError(f"{folder} is incomplete (no metadata.jsonl) because its build was interrupted; "
                         "rerun it with the same parameters to finish it.")
    required = {"file_name", "text", "mi", "seed", "prompt_index", "candidate"}
    required |= {"rank"} if manifest["kind"] == "set" else set()
    required |= {f for sel in SELECTORS.values() if sel.needs and manifest.get(sel.needs) for f in sel.fields}
    records = []
    for number, line in enumerate(meta.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not required <= record.keys():
            raise ValueError(f"Line {number} of {meta} is not a complete record (needs {', '.join(sorted(required))}); "
                             "the folder is corrupt, rebuild it into a new folder.")
        records.append(record)
    if len(records) != manifest["n_images"]:
        raise ValueError(f"{meta} has {len(records)} records but the manifest announces {manifest['n_images']}; "
                         "the folder is corrupt, rebuild it into a new folder.")
    files = [r["file_name"] for r in records] + [r["rejected_file_name"] for r in records if "rejected_file_name" in r]
    if manifest.get("keep_latents"):
        files += ["latents.safetensors"] if manifest["kind"] == "set" else \
            [f"latents/{i:05d}.safetensors" for i in sorted({r["prompt_index"] for r in records})]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lists {missing[0]} ({len(missing)} missing file(s) in all); "
                                "rerun its build with the same parameters to restore them.")
    return manifest, records


def pool_complete(folder) -> bool:
    """Whether `folder` holds a finished pool (a manifest of kind "pool" and its metadata.jsonl)."""
    folder = Path(folder)
    try:
        return _read_manifest(folder)["kind"] == "pool" and (folder / "metadata.jsonl").is_file()
    except (FileNotFoundError, ValueError):
        return False


# --------------------------------------------------------------------------- the candidate pool


def _pool_manifest(pipe, prompts, *, n_candidates, guidance_scale, num_inference_steps, seed, batch_size,
                   renoise_samples, keep_latents, model, contrast_samples=0, near_misses=None, judge=None) -> dict:
    """Check every argument (all prompts included) and return the pool's manifest (guidance and steps not given:
    the family's)."""
    prompts = list(prompts)
    guidance_scale, num_inference_steps = family_of(pipe).sampling(guidance_scale, num_inference_steps)
    if not prompts:
        raise ValueError("No prompts to build from: give at least one prompt.")
    check_sampling(n_candidates, guidance_scale, num_inference_steps, batch_size)
    for name, value, low in (("seed", seed, 0), ("renoise_samples", renoise_samples, 0),
                             ("contrast_samples", contrast_samples, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}.")
    for name, value in (("renoise_samples", renoise_samples), ("contrast_samples", contrast_samples)):
        if value == 1:
            raise ValueError(f"{name} must be 0 (off) or at least 2 (the estimator needs two draws per stratum).")
    seen = set()
    for p in prompts:
        if p in seen:
            raise ValueError(f"The prompt {p!r} is listed twice; give each prompt once "
                             "(a repeat would only repeat its candidates, which share one seed sequence).")
        seen.add(p)
    check = getattr(pipe, "check_prompt", None)  # a pipeline with an exact judge refuses a prompt it cannot judge
    for p in prompts if callable(check) else ():
        check(p)
    if contrast_samples:
        near_misses = _near_misses(prompts, near_misses, getattr(pipe, "near_misses", None), type(pipe).__name__)
    return {
        "kind": "pool", **model_record(pipe, model),
        "pipeline": type(pipe).__name__, "sampler": sampler_name(pipe.scheduler),
        "n_candidates": n_candidates, "guidance_scale": float(guidance_scale),
        "num_inference_steps": num_inference_steps, "seed": seed, "renoise_samples": renoise_samples,
        "contrast_samples": contrast_samples, "keep_latents": bool(keep_latents),
        "oracle": callable(getattr(pipe, "oracle", None)),
        "n_prompts": len(prompts), "n_images": len(prompts) * n_candidates, "prompts": prompts,
        "near_misses": near_misses if contrast_samples else None, **(judge_record(judge) if judge else {}),
    }


def sampler_name(scheduler) -> str:
    """The scheduler's class, with its algorithm where it has several (DPMSolverMultistepScheduler)."""
    algorithm = scheduler.config.get("algorithm_type")
    return type(scheduler).__name__ + (f"({algorithm})" if algorithm else "")


def _near_misses(prompts, given, default, pipeline: str) -> dict[str, list[str]]:
    """Each prompt's near misses for the contrast signal: given, or the pipeline's ``near_misses(prompt)`` (the
    Shapes world's :func:`~minitune.toy.world.near_misses`)."""
    if given is None:
        if default is None:
            raise ValueError(f"The contrast signal needs near-miss prompts, and a {pipeline} has no grammar to make "
                             "them; pass near_misses={prompt: [prompts that get one fact wrong]}.")
        given = {p: default(p) for p in prompts}
    missing = [p for p in prompts if not isinstance(given.get(p), (list, tuple)) or not given[p]]
    if missing:
        raise ValueError(f"The prompt {missing[0]!r} has no near-miss prompts ({len(missing)} prompt(s) in all); "
                         "give every prompt at least one.")
    return {p: [str(q) for q in given[p]] for p in prompts}


def _prompt_done(folder: Path, i: int, manifest: dict) -> bool:
    files = [f"records/{i:05d}.json"] + [f"{i:05d}_{k:03d}.png" for k in range(manifest["n_candidates"])]
    files += [f"latents/{i:05d}.safetensors"] if manifest["keep_latents"] else []
    return all((folder / f).is_file() for f in files)


def _renoise(den, conds, cands, n_samples: int, batch_size: int) -> list[float]:
    """Orthogonal re-noising MI of every candidate, each drawn from its own generator (seed + 1)."""
    from .mi import alphas_cumprod_of, renoise_mi

    den = den.as_vp()
    ab = alphas_cumprod_of(den.scheduler)
    prompt_of_row = torch.arange(len(conds)).repeat_interleave(cands.n_per_prompt)
    out = []
    for start in range(0, len(prompt_of_row), batch_size):
        rows = slice(start, start + batch_size)
        gens = [torch.Generator(den.device).manual_seed(s + 1) for s in cands.seeds[rows]]
        pair = den.eps_pair(conds.take(prompt_of_row[rows]))
        est, _ = renoise_mi(pair, cands.latents[rows].to(den.device), ab, n_samples=n_samples, generator=gens,
                            form="orthogonal", batch_size=batch_size)
        out += est.cpu().tolist()
    return out


def _contrast(den, texts, near_misses, cands, n_samples: int, batch_size: int) -> list[float]:
    """Point-wise MI under each candidate's prompt minus the largest under its near misses (seed + 2)."""
    from .mi import contrast_mi

    den = den.as_vp()
    prompts = [t for t in texts for _ in range(cands.n_per_prompt)]
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        value, _ = contrast_mi(den, cands.latents[rows].to(den.device), prompts[rows],
                               [near_misses[p] for p in prompts[rows]], seeds=[s + 2 for s in cands.seeds[rows]],
                               n_samples=n_samples, batch_size=batch_size)
        out += value.cpu().tolist()
    return out


def _conditioning(conds, j: int) -> dict:
    """The UNet inputs of prompt j: prompt_embeds, negative_prompt_embeds and any added conditioning."""
    one = conds.take(torch.tensor([j]))
    tensors = {"prompt_embeds": one.cond, "negative_prompt_embeds": one.uncond, **one.added_cond,
               **{f"negative_{k}": v for k, v in one.added_uncond.items()}}
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _score(records: list[dict], den, texts: list[str], cands, conds, manifest: dict, batch_size: int, judge) -> None:
    """Add each signal the manifest asks for to the chunk's records: re-noising MI, contrast MI, the verdict of
    the pipeline's exact judge (its ``oracle(images, prompts)``: the Shapes world's) and an external judge's score."""
    if manifest["renoise_samples"]:
        for record, value in zip(records, _renoise(den, conds, cands, manifest["renoise_samples"], batch_size)):
            record["mi_renoise"] = value
    if manifest["contrast_samples"]:
        values = _contrast(den, texts, manifest["near_misses"], cands, manifest["contrast_samples"], batch_size)
        for record, value in zip(records, values):
            record["mi_contrast"] = value
    if manifest["oracle"]:
        for record, verdict in zip(records, den.pipe.oracle(cands.images, cands.prompts)):
            record.update(strict=verdict["strict"], soft=verdict["soft"], well_formed=verdict["well_formed"])
    if manifest.get("judge"):
        scores = judge(cands.images, cands.prompts)
        for record, value in zip(records, scores[getattr(judge, "metric", None) or next(iter(scores))]):
            record["judge"] = float(value)


def _write_chunk(folder: Path, chunk: list[int], records: list[dict], cands, conds, manifest: dict, bar) -> None:
    """Each prompt of the chunk: its PNGs, its latents if kept, and then its record file (the done-marker)."""
    n = manifest["n_candidates"]
    pixels = to_uint8(cands.images)
    for j, i in enumerate(chunk):
        rows = slice(j * n, (j + 1) * n)
        write_images(folder, ((r["file_name"], image) for r, image in zip(records[rows], pixels[rows])), write=_write)
        if manifest["keep_latents"]:
            latents = {"latents": cands.latents[rows].contiguous(), **_conditioning(conds, j)}
            _write(folder / "latents" / f"{i:05d}.safetensors", save_tensors(latents))
        _write(folder / "records" / f"{i:05d}.json", json.dumps(records[rows], indent=1) + "\n")
        bar.update()


def _fill_pool(pipe, folder: Path, manifest: dict, batch_size: int, progress: bool, judge=None) -> None:
    """Sample the prompts that are not done yet, chunk by chunk, then write metadata.jsonl.

    Under ``accelerate launch`` the chunks are dealt out to the processes in turn; a chunk's batch is
    the same as in one process, so the files are too."""
    prompts, n = manifest["prompts"], manifest["n_candidates"]
    for sub in ("records", "latents") if manifest["keep_latents"] else ("records",):
        (folder / sub).mkdir(exist_ok=True)
    state = _processes()
    todo = [i for i in range(len(prompts)) if not _prompt_done(folder, i, manifest)]
    state.wait_for_everyone()  # every process has its to-do list before any writes
    per_chunk = max(1, batch_size // n)
    chunks = [todo[s : s + per_chunk] for s in range(0, len(todo), per_chunk)][state.process_index :: state.num_processes]
    den = denoiser_for(pipe)
    bar = tqdm(total=sum(map(len, chunks)), desc="pool", unit="prompt", disable=not progress or not state.is_main_process)
    for chunk in chunks:
        texts = [prompts[i] for i in chunk]
        cands = sample_with_mi(pipe, texts, n, guidance_scale=manifest["guidance_scale"],
                               num_inference_steps=manifest["num_inference_steps"], seed=manifest["seed"],
                               batch_size=batch_size, progress=False)
        records = [{"file_name": f"{i:05d}_{k:03d}.png", "text": prompts[i], "prompt_index": i, "candidate": k,
                    "seed": cands.seeds[r], "mi": float(cands.mi[r])}
                   for r, (i, k) in enumerate((i, k) for i in chunk for k in range(n))]
        conds = den.encode(texts) if manifest["renoise_samples"] or manifest["keep_latents"] else None
        _score(records, den, texts, cands, conds, manifest, batch_size, judge)
        _write_chunk(folder, chunk, records, cands, conds, manifest, bar)
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        records = [r for i in range(len(prompts)) for r in _read_json(folder / "records" / f"{i:05d}.json")]
        write_metadata(folder, records, write=_write)
    state.wait_for_everyone()


def build_pool(pipe, prompts: list[str], out_dir, n_candidates: int = 16, *, guidance_scale: float | None = None,
               num_inference_steps: int | None = None, seed: int = 0, batch_size: int = 64, renoise_samples: int = 0,
               contrast_samples: int = 0, near_misses: dict[str, list[str]] | None = None,
               keep_latents: bool = False, model: str | None = None, judge=None, progress: bool = True) -> Path:
    """Sample `n_candidates` per prompt with CFG and store every one in the pool folder `out_dir`.

    Any pipeline of a family :func:`~minitune.families.family_of` knows, sampled at the family's guidance
    scale and steps unless given; images are what the pipeline outputs (for latent models, decoded by the VAE).
    Candidate k of a prompt has the seed
    :func:`~minitune.sampling.candidate_seed` ``(seed, prompt, k)``. For a Shapes pipeline every prompt is
    checked against the world's grammar before anything is sampled, and each record gets the oracle's
    ``strict``, ``soft`` and ``well_formed``. ``renoise_samples > 0`` adds ``mi_renoise``, the orthogonal
    re-noising MI (:func:`~minitune.mi.renoise_mi`) with a generator seeded by the candidate's seed + 1.
    ``contrast_samples > 0`` adds ``mi_contrast`` (:func:`~minitune.mi.contrast_mi`, seed + 2): point-wise MI
    under the prompt minus the largest under its ``near_misses[prompt]`` (default for a Shapes pipeline:
    :func:`~minitune.toy.world.near_misses`; required for any other pipeline), stored in the manifest.
    ``keep_latents`` stores the latents and prompt embeddings per prompt in safetensors. ``batch_size``
    bounds the images per network call (a chunk is ``batch_size // n_candidates`` prompts, at least one);
    keep it when resuming. ``model`` names the model in the manifest (default: the pipeline's path or
    class). ``judge``, a scorer ``(images, prompts) -> {metric: values}`` such as
    :class:`~minitune.judges.BlipVqaJudge`, adds its main metric as ``judge`` to every record, for the
    ``"judge"`` selector (an external-judge control arm, as GORS in T2I-CompBench). Rerun with the same
    arguments to resume an interrupted build; under ``accelerate launch`` the processes share the prompts.
    """
    manifest = _pool_manifest(pipe, prompts, n_candidates=n_candidates, guidance_scale=guidance_scale,
                              num_inference_steps=num_inference_steps, seed=seed, batch_size=batch_size,
                              renoise_samples=renoise_samples, keep_latents=keep_latents, model=model,
                              contrast_samples=contrast_samples, near_misses=near_misses, judge=judge)
    folder = Path(out_dir)
    _claim_all([(folder, manifest)])
    _fill_pool(pipe, folder, manifest, batch_size, progress, judge)
    return folder


# --------------------------------------------------------------------------- sets selected from a pool


def check_top_k(k, n_candidates: int) -> None:
    """Raise the one-sentence error unless k is an integer from 1 to the number of candidates per prompt."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_candidates:
        raise ValueError(f"top-k must be an integer from 1 to the {n_candidates} candidates per prompt, got {k!r}.")


def check_pairing(pairing) -> None:
    """Raise the one-sentence error unless `pairing` is one of :data:`PAIRINGS`."""
    if pairing not in PAIRINGS:
        raise ValueError(f"Unknown pairing {pairing!r}: use one of {', '.join(PAIRINGS)}.")


def _set_manifest(pool: dict, pool_dir: Path, out_dir: Path, k: int, by: str, seed: int, pairs: bool = False,
                  pairing: str = "extremes") -> dict:
    """Check the selection against the pool and return the set's manifest."""
    if by not in SELECTORS:
        raise ValueError(f"Unknown selector {by!r}: use one of {', '.join(SELECTORS)}.")
    check_pairing(pairing)
    check_top_k(k, pool["n_candidates"])
    if pairs and 2 * k > pool["n_candidates"]:
        raise ValueError(f"{k} preference pairs per prompt need {2 * k} distinct candidates, but the pool has "
                         f"{pool['n_candidates']} per prompt; lower k or build a larger pool.")
    needs = SELECTORS[by].needs
    if needs and not pool.get(needs):
        raise ValueError(SELECTORS[by].missing.format(pipeline=pool["pipeline"]))
    return {
        "kind": "set", "selector": by, "k": k, **({"selection_seed": seed} if by == "random" else {}),
        **({"pairs": True} if pairs else {}), **({"pairing": pairing} if pairs and pairing != "extremes" else {}),
        "pool": os.path.relpath(pool_dir.resolve(), out_dir.resolve()), **{p: pool.get(p, 0) for p in _POOL_PARAMS},
        "n_prompts": pool["n_prompts"], "n_images": pool["n_prompts"] * k,
        **({k: pool.get(k) for k in ("judge", "judge_fingerprint")} if pool.get("judge") else {}),
    }


def _ranked(records: list[dict], by: str, seed: int) -> list[list[dict]]:
    """Each prompt's candidates, best first by the selector (ties keep candidate order)."""
    groups: dict[int, list[dict]] = {}
    for record in sorted(records, key=lambda r: (r["prompt_index"], r["candidate"])):
        groups.setdefault(record["prompt_index"], []).append(record)
    if by == "random":
        gen = torch.Generator().manual_seed(seed)
        return [[g[j] for j in torch.randperm(len(g), generator=gen).tolist()] for g in groups.values()]
    return [sorted(g, key=SELECTORS[by].key, reverse=True) for g in groups.values()]


def _rejected(group: list[dict], k: int, by: str, pairing: str) -> list[dict]:
    """The rejected candidate of each of a prompt's k chosen ones (`group` is ranked best first, see :data:`PAIRINGS`).

    "nearest" takes, for the chosen candidate of rank r, the best candidate outside the top k not yet taken that
    scores strictly lower by the selector's key; where none is left, the worst one not yet taken (a tie, or a pair
    of random picks for the random selector)."""
    if pairing == "extremes":
        return [group[-1 - r] for r in range(k)]
    key, free, out = SELECTORS[by].key, list(group[k:]), []  # the random selector has no key
    for chosen in group[:k]:
        lower = [c for c in free if key and key(c) < key(chosen)]
        out.append(lower[0] if lower else free[-1])
        free.remove(out[-1])
    return out


def select(pool_dir, out_dir, k: int, by: str = "mi", *, seed: int = 0, pairs: bool = False,
           pairing: str = "extremes", progress: bool = True) -> Path:
    """Copy k candidates per prompt of a pool into the set folder `out_dir` and return it.

    by: ``"mi"`` (top-k trajectory MI, the method), ``"mi_renoise"`` (top-k re-noising MI), ``"mi_contrast"``
    (top-k contrast against near-miss prompts), ``"random"``
    (a seeded random k, the no-filtering control) or ``"oracle"`` (Shapes world: top-k by the oracle's
    soft then strict score, the perfect-reward upper bound) or ``"judge"`` (top-k by the external judge the
    pool was built with, see :func:`build_pool`). ``rank`` is the place within the prompt by
    that key. The pool is checked completely before anything is written.

    pairs: a preference set for ``objective="dpo"`` fine-tuning. The candidate of rank r is paired with
    the one of rank N−1−r, the r-th worst by the same key: its file is copied too and its record gets
    ``rejected_file_name`` and ``rejected_<field>`` for the rejected candidate's fields. Pairs whose
    two candidates tie on the key are kept, with ``"tie": true``. ``pairing="nearest"`` pairs it instead with
    a hard negative, the best left-out candidate that scores lower (see :func:`_rejected`).
    """
    pool_dir, out_dir = Path(pool_dir), Path(out_dir)
    pool, records = load_records(pool_dir)
    if pool["kind"] != "pool":
        raise ValueError(f"{pool_dir} is a set, not a pool; select from the pool folder it came from.")
    if out_dir.resolve() == pool_dir.resolve():
        raise ValueError("The set's output folder is the pool folder; choose another one.")
    manifest = _set_manifest(pool, pool_dir, out_dir, k, by, seed, pairs, pairing)
    _claim(out_dir, manifest)
    rows = []
    for group in _ranked(records, by, seed):
        rejected = _rejected(group, k, by, pairing) if pairs else [None] * k
        rows += [_set_row(rank, r, rejected[rank], by) for rank, r in enumerate(group[:k])]
    names = [name for row in rows for name in (row["file_name"], row.get("rejected_file_name")) if name]
    files = ((name, (pool_dir / name).read_bytes()) for name in tqdm(names, desc=f"{by} set", unit="image",
                                                                      disable=not progress))
    write_images(out_dir, files, write=_write)
    if pool["keep_latents"]:
        _write(out_dir / "latents.safetensors", save_tensors(_set_latents(pool_dir, rows)))
    write_metadata(out_dir, rows, write=_write)
    return out_dir


def _set_row(rank: int, record: dict, rejected: dict | None, by: str) -> dict:
    """The metadata line of a chosen candidate: the imagefolder's fields, then the rest of its pool record and, in
    a preference set, the rejected candidate's fields (``rejected_<field>``) and whether the two tie on the key."""
    head = {"file_name": record["file_name"], "text": record["text"], "mi": record["mi"], "seed": record["seed"],
            "rank": rank}
    row = {**head, **{key: v for key, v in record.items() if key not in head}}
    if rejected is not None:
        row.update({f"rejected_{key}": v for key, v in rejected.items() if key not in ("text", "prompt_index")})
        if by != "random":
            row["tie"] = SELECTORS[by].key(record) == SELECTORS[by].key(rejected)
    return row


def _set_latents(pool_dir: Path, rows: list[dict]) -> dict:
    """The pool's latents and UNet conditioning of each metadata line, stacked: one row per line."""
    cache, tensors = {}, {}
    for row in rows:
        i = row["prompt_index"]
        if i not in cache:
            cache = {i: load_tensors((pool_dir / "latents" / f"{i:05d}.safetensors").read_bytes())}
        for name, value in cache[i].items():
            tensors.setdefault(name, []).append(value[row["candidate"]] if name == "latents" else value[0])
    return {name: torch.stack(v) for name, v in tensors.items()}


@dataclass(frozen=True)
class BuildConfig:
    """The settings of :func:`build`: N candidates per prompt, k kept per prompt and selector, the sampling,
    the extra MI signals' samples per candidate, and the sets' form (latents kept, preference pairs)."""

    n_candidates: int = 16
    top_k: int = 1
    selectors: tuple[str, ...] = ("mi",)
    guidance_scale: float | None = None
    num_inference_steps: int | None = None
    seed: int = 0
    batch_size: int = 64
    renoise_samples: int = 0
    contrast_samples: int = 0
    near_misses: dict[str, list[str]] | None = None
    keep_latents: bool = False
    model: str | None = None
    pairs: bool = False
    pairing: str = "extremes"


def build_config(config: BuildConfig | None = None, **options) -> BuildConfig:
    """`config` (default: :class:`BuildConfig`'s defaults) with the given options replaced; an option that is
    not a setting is one sentence."""
    unknown = sorted(set(options) - set(BuildConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"build has no option {unknown[0]!r}; the options are BuildConfig's fields "
                         f"({', '.join(BuildConfig.__dataclass_fields__)}).")
    return replace(config or BuildConfig(), **options)


def build(pipe, prompts: list[str], output_dir, n_candidates: int | None = None, top_k: int | None = None, *,
          config: BuildConfig | None = None, judge=None, progress: bool = True, **options) -> dict[str, Path]:
    """The MI-TUNE data step: the pool in ``output_dir/pool`` and one top-k set per selector in
    ``output_dir/<selector>``; returns their paths by name ("pool", "mi", ...).

    Settings are those of :class:`BuildConfig`, as a config and/or keywords that override it, e.g.
    ``build(pipe, prompts, "runs/sd", n_candidates=8, top_k=1, num_inference_steps=50)``.

    Every argument is checked and every folder claimed before the first candidate is sampled, so a
    mistake costs no sampling and overwrites nothing. See :func:`build_pool` and :func:`select`;
    ``seed`` also seeds the random selector; ``pairs`` makes preference sets, paired by ``pairing`` (see
    :func:`select`); ``judge`` scores every candidate for the "judge" selector. Rerun with the same
    arguments to resume.
    """
    given = {k: v for k, v in (("n_candidates", n_candidates), ("top_k", top_k)) if v is not None}
    cfg = build_config(config, **given, **options)
    out = Path(output_dir)
    pool = _pool_manifest(pipe, prompts, n_candidates=cfg.n_candidates, guidance_scale=cfg.guidance_scale,
                          num_inference_steps=cfg.num_inference_steps, seed=cfg.seed, batch_size=cfg.batch_size,
                          renoise_samples=cfg.renoise_samples, keep_latents=cfg.keep_latents, model=cfg.model,
                          contrast_samples=cfg.contrast_samples, near_misses=cfg.near_misses, judge=judge)
    folders = {"pool": (out / "pool", pool)}
    for by in dict.fromkeys(cfg.selectors):
        folders[by] = (out / by, _set_manifest(pool, out / "pool", out / by, cfg.top_k, by, cfg.seed, cfg.pairs,
                                               cfg.pairing))
    _claim_all(folders.values())
    _fill_pool(pipe, out / "pool", pool, cfg.batch_size, progress, judge)
    if not _processes().is_main_process:  # the other processes of `accelerate launch` only sample
        return {name: folder for name, (folder, _) in folders.items()}
    for by in folders:
        if by != "pool":
            select(out / "pool", out / by, cfg.top_k, by, seed=cfg.seed, pairs=cfg.pairs, pairing=cfg.pairing,
                   progress=progress)
    return {name: folder for name, (folder, _) in folders.items()}
