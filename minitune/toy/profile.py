"""Failure profiles: how a model's images fail their prompts, counted as GenEval counts.

GenEval (Ghosh et al. 2023) scores a text-to-image model per task with an object detector, and its
human annotations of Stable Diffusion 2 images count each requested object. This module reads a
Shapes-world image the same way, with the shape as the object class (the world's noun) and the colour
as its attribute, so that a Shapes model's profile sits beside SD 2's:

=================  ==========================================  ==========================================
GenEval task       Shapes prompts                              correct when
=================  ==========================================  ==========================================
single object      ``count`` with one object ("one red ...")   at least one blob of the shape
colors             the same images                             at least one blob of the shape and colour
two object         ``shape`` ("a red circle and a red square")  both shapes present
color attribution  ``color`` ("a red circle and a blue square")  both (colour, shape) objects present
position           ``spatial``                                 both objects present, the relation holds
counting           ``count`` with two or three objects         exactly that many of the shape
complex            ``complex`` (no GenEval task)               both objects present, the count exact
=================  ==========================================  ==========================================

Per image, *fewer* means some requested shape has fewer blobs than the prompt asks for, *more* that
some requested shape has more (blobs of a shape the prompt does not name count for neither, as in
GenEval's annotations), *exact* that every requested shape's count is right. GenEval's overall
score is the mean of its six task scores; ``complex`` is reported but left out of it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..images import to_uint8
from . import world

GENEVAL_TASKS = ("single object", "two object", "counting", "colors", "position", "color attribution")
TASKS = GENEVAL_TASKS + ("complex",)
_BY_CATEGORY = {"shape": "two object", "color": "color attribution", "spatial": "position", "complex": "complex"}


def tasks_of(p: world.Prompt) -> tuple[str, ...]:
    """The tasks an image of prompt `p` counts for (one-object prompts count for two)."""
    if p.category == "count":
        return ("single object", "colors") if p.count == 1 else ("counting",)
    return (_BY_CATEGORY[p.category],)


def requested(p: world.Prompt) -> Counter:
    """How many objects of each shape the prompt asks for."""
    want = Counter({p.first.shape: p.count})
    if p.second is not None:
        want[p.second.shape] += 1
    return want


def _correct(task: str, p: world.Prompt, blobs: list[world.Blob], have: Counter) -> bool:
    objs = Counter((b.color, b.shape) for b in blobs)
    first = objs[(p.first.color, p.first.shape)] >= p.count
    second = p.second is None or objs[(p.second.color, p.second.shape)] >= 1
    if task == "single object":
        return have[p.first.shape] >= 1
    if task == "two object":
        return all(have[s] >= n for s, n in requested(p).items())
    if task == "counting":
        return have[p.first.shape] == p.count
    if task == "position":
        return world.check_relation(blobs, p)
    if task == "complex":
        return objs[(p.first.color, p.first.shape)] == p.count and second
    return first and second  # colors, color attribution


def read(image: np.ndarray, prompt: str) -> list[dict]:
    """One record per task that the uint8 image [32, 32, 3] of `prompt` counts for."""
    p = world.parse(prompt)
    blobs, _ = world.find_blobs(image)
    have = Counter(b.shape for b in blobs)
    want = requested(p)
    fewer = any(have[s] < n for s, n in want.items())
    more = any(have[s] > n for s, n in want.items())
    return [{"task": t, "correct": _correct(t, p, blobs, have), "fewer": fewer, "more": more,
             "exact": not (fewer or more), "multi_object": p.n_objects > 1} for t in tasks_of(p)]


def summarise(records: list[dict]) -> dict:
    """Per task: images, score and the fractions fewer / more / exact; and GenEval's overall score."""
    out = {}
    for task in TASKS:
        rs = [r for r in records if r["task"] == task]
        if not rs:
            continue
        out[task] = {"images": len(rs), **{k: float(np.mean([r[k] for r in rs])) for k in ("correct", "fewer", "more", "exact")},
                     "multi_object": any(r["multi_object"] for r in rs)}
        out[task]["score"] = out[task].pop("correct")
    return out


def overall(profile: dict) -> float:
    """GenEval's overall score: the mean of its six task scores (NaN where a task is missing)."""
    scores = [profile[t]["score"] for t in GENEVAL_TASKS if t in profile and "score" in profile[t]]
    return float(np.mean(scores)) if len(scores) == len(GENEVAL_TASKS) else float("nan")


def failure_profile(images, prompts: list[str]) -> dict:
    """The profile of `images` (any form :func:`minitune.images.to_uint8` reads) under their prompts."""
    arr = to_uint8(images)
    if len(arr) != len(prompts):
        raise ValueError(f"Got {len(arr)} images but {len(prompts)} prompts; give one prompt per image.")
    return summarise([r for im, p in zip(arr, prompts) for r in read(im, p)])


def omission_ratio(profile: dict) -> float:
    """The smallest fewer / more ratio over the multi-object GenEval tasks (inf where a task never over-draws)."""
    ratios = [v["fewer"] / v["more"] if v["more"] else float("inf")
              for t, v in profile.items() if t in GENEVAL_TASKS and v["multi_object"]]
    return min(ratios) if ratios else float("nan")


def layout_diversity(images, prompts: list[str]) -> float:
    """Mean over prompts of the mean pairwise 1 − IoU of the images' object masks (pixels brighter than half).

    The pixel distance of :func:`minitune.evaluate.diversity` grows with colour contrast as well as with variety
    (a more saturated object differs more from the background wherever it sits); this reads only where the objects
    are, as a perceptual or feature distance reads a real model's images. 0: every image of a prompt has the same
    layout; 1: no two overlap."""
    masks = to_uint8(images).max(-1) > 127
    groups: dict[str, list[np.ndarray]] = {}
    for m, p in zip(masks, prompts):
        groups.setdefault(p, []).append(m)
    per_prompt = []
    for ms in groups.values():
        pairs = [(a, b) for i, a in enumerate(ms) for b in ms[i + 1:]]
        if pairs:
            per_prompt.append(np.mean([1 - (a & b).sum() / max((a | b).sum(), 1) for a, b in pairs]))
    return float(np.mean(per_prompt)) if per_prompt else float("nan")


def object_area(images, prompts: list[str]) -> float:
    """Mean area in pixels of a blob of a requested (colour, shape), the size the calibration compares with renders."""
    areas = []
    for im, text in zip(to_uint8(images), prompts):
        p = world.parse(text)
        wanted = {(p.first.color, p.first.shape)} | ({(p.second.color, p.second.shape)} if p.second else set())
        areas += [b.area for b in world.find_blobs(im)[0] if (b.color, b.shape) in wanted]
    return float(np.mean(areas)) if areas else float("nan")


_GENEVAL_TAGS = {"single_object": "single object", "two_object": "two object", "counting": "counting",
                 "colors": "colors", "position": "position", "color_attr": "color attribution"}


def geneval_human_profile(annotations, metadata) -> dict:
    """The profile of GenEval's human annotations (``annotations/annotations_sdv2.csv`` of GenEval's repository,
    with ``prompts/evaluation_metadata.jsonl`` for what each prompt asks): per image, the median of its raters'
    counts of each requested object against the count asked. No score: the raters counted, they did not judge."""
    import csv
    import json
    import statistics
    from pathlib import Path

    for path in (annotations, metadata):
        if not Path(path).is_file():
            raise FileNotFoundError(f"No file {path}: give GenEval's annotations CSV and its evaluation_metadata.jsonl.")
    meta = [json.loads(line) for line in Path(metadata).read_text(encoding="utf-8").splitlines() if line.strip()]
    images: dict[str, list[dict]] = {}
    with open(annotations, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            images.setdefault(row["Input.index"], []).append(row)
    records = []
    for rows in images.values():
        m = meta[int(rows[0]["Input.prompt_id"])]
        if m["prompt"] != rows[0]["Input.caption"]:
            raise ValueError(f"The annotations and the metadata disagree on prompt {rows[0]['Input.prompt_id']}; give "
                             "the two files of one GenEval release.")
        names = [rows[0][f"Input.object_{i}_name"] for i in (0, 1)]
        medians = [(statistics.median(float(r[f"Answer.task-count-{names.index(req['class'])}"]) for r in rows
                                      if r[f"Answer.task-count-{names.index(req['class'])}"] != ""), req["count"])
                   for req in m["include"]]
        fewer, more = any(got < n for got, n in medians), any(got > n for got, n in medians)
        records.append({"task": _GENEVAL_TAGS[m["tag"]], "fewer": fewer, "more": more, "exact": not (fewer or more),
                        "multi_object": sum(req["count"] for req in m["include"]) > 1, "correct": float("nan")})
    out = summarise(records)
    for row in out.values():
        del row["score"]
    return out
