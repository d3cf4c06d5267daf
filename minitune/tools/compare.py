"""Look at what each arm drew, side by side, and ask people which image matches its prompt: static pages.

``minitune compare OUTPUT_DIR`` reads the evaluations of an experiment (``eval/<arm>.json`` with
``eval/<arm>.images.npy``, one image per record) or of ``minitune evaluate --output-dir`` runs
(``eval.json`` with ``images.npy``) and writes one HTML file with its images inline as data URIs:
no server, no network, it opens from ``file://`` and embeds in the book.

- The viewer (:func:`build_viewer`) shows, per prompt, the same seeds under every arm with each
  image's judge verdicts, MI and failure modes, filtered by category, arm and "arms disagree".
- The study (:func:`build_study`) shows per prompt two images of two arms on the same seed, left
  and right drawn from a recorded seed, arm names hidden; the rater answers which matches the prompt
  better (or tie). Votes stay in the browser's storage, one entry per study and rater, and leave as
  a JSON file that :mod:`minitune.tools.study` turns into the win / tie / loss table.

The study page holds its key (which arm is on which side), so that a vote file is complete on its
own: the arms are hidden from the eye, not from a rater who reads the page's source.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from ..io import atomic_write, slug
from .compare_page import CSS, JS, PAGE

VOTES_FORMAT = "minitune-study-votes"
VERDICTS = ("strict", "soft", "well_formed")  # shown first, in this order, where a record has them


@dataclass
class Arm:
    """One evaluated model: its per-image records and the images that go with them (`image_of[i]` is the row
    of `images` showing record i, or None where only a preview of the first seed per prompt was kept)."""

    name: str
    records: list[dict]
    images: np.ndarray
    image_of: list[int | None]
    failure_modes: tuple[str, ...] = ()  # the metrics that are a judge's failure modes (e.g. the Shapes oracle's)


def _read_eval(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); write it again with `minitune evaluate` or `minitune experiment`.")
    if not isinstance(data, dict) or not isinstance(data.get("records"), list) or not data["records"]:
        raise ValueError(f"{path} is not an evaluation (no per-image records); give files written by `minitune evaluate` "
                         "or `minitune experiment`.")
    return data


def _arm(name: str, json_path: Path, images_path: Path, preview_path: Path | None = None) -> Arm:
    """Load one evaluation with its images (all of them, else the experiment's preview of each prompt's first seed)."""
    data = _read_eval(json_path)
    records, modes = data["records"], tuple(data.get("settings", {}).get("failure_modes", ()))
    if images_path.is_file():
        images = np.load(images_path)
        if len(images) != len(records):
            raise ValueError(f"{images_path} holds {len(images)} images for {len(records)} records; evaluate again.")
        return Arm(name, records, images, list(range(len(records))), modes)
    if preview_path is not None and preview_path.is_file():
        images, first = np.load(preview_path), {}  # prompt -> (its row in the preview, its first seed)
        for r in records:
            first.setdefault(r["prompt"], (len(first), r["seed"]))
        image_of = [first[r["prompt"]][0] if first[r["prompt"]][1] == r["seed"] else None for r in records]
        if len(images) != len(first):
            raise ValueError(f"{preview_path} holds {len(images)} previews for {len(first)} prompts; evaluate again.")
        return Arm(name, records, images, image_of, modes)
    raise FileNotFoundError(f"{json_path} has no images beside it ({images_path.name}); run the evaluation again "
                            "with this version of minitune, which keeps them.")


def _experiment_arms(folder: Path) -> list[Arm]:
    """The arms of an experiment's output folder, in the order of its results (base first)."""
    files = sorted((folder / "eval").glob("*.json"))
    names = {}
    if (folder / "results.json").is_file():
        names = {slug(n): n for n in json.loads((folder / "results.json").read_text()).get("summaries", {})}
    order = list(names)
    files.sort(key=lambda f: (order.index(f.stem) if f.stem in order else len(order), f.stem))
    return [_arm(names.get(f.stem, f.stem), f, f.with_suffix(".images.npy"), f.with_suffix(".preview.npy")) for f in files]


def load_arms(paths) -> list[Arm]:
    """The arms found in `paths`: experiment output folders (``eval/*.json``), ``minitune evaluate --output-dir``
    folders (``eval.json``, named by their folder), or folders whose sub-folders are evaluate outputs."""
    arms: list[Arm] = []
    for folder in map(Path, paths):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder; give the output folder of `minitune experiment` or "
                                    "`minitune evaluate --output-dir`.")
        if (folder / "eval.json").is_file():
            arms.append(_arm(folder.name, folder / "eval.json", folder / "images.npy"))
        elif list((folder / "eval").glob("*.json")):
            arms += _experiment_arms(folder)
        elif subs := sorted(d for d in folder.iterdir() if (d / "eval.json").is_file()):
            arms += [_arm(d.name, d / "eval.json", d / "images.npy") for d in subs]
        else:
            raise ValueError(f"{folder} is neither an experiment's output (eval/*.json) nor an evaluation's "
                             "(eval.json); give a folder written by `minitune experiment` or `minitune evaluate --output-dir`.")
    names = [a.name for a in arms]
    if len(set(names)) < len(names):
        raise ValueError(f"Two evaluations have the same name ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); "
                         "put them in folders with different names.")
    return arms


def image_uri(image: np.ndarray, max_side: int = 256) -> str:
    """A uint8 [H, W, 3] image as a data URI: lossless WebP (a little smaller than PNG), PNG where Pillow
    cannot write WebP; an image larger than `max_side` (a real model's) is first shrunk to fit, to keep pages small."""
    from PIL import Image, features

    buf, webp = io.BytesIO(), features.check("webp")
    im = Image.fromarray(np.ascontiguousarray(image))
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if webp:
        im.save(buf, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    else:
        im.save(buf, format="PNG")
    return f"data:image/{'webp' if webp else 'png'};base64," + base64.b64encode(buf.getvalue()).decode()


def _cell(arm: Arm, i: int, uris: dict) -> dict:
    """One image's entry: its data URI (None if not kept), verdicts, MI and failure modes."""
    r, row = arm.records[i], arm.image_of[i]
    if row is not None and (arm.name, row) not in uris:
        uris[arm.name, row] = image_uri(arm.images[row])
    fixed = {"prompt", "seed", "category", "mi", *arm.failure_modes}
    metrics = [k for k in VERDICTS if k in r] + [k for k in r if k not in fixed and k not in VERDICTS]
    return {"img": None if row is None else uris[arm.name, row], "mi": r.get("mi"),
            "verdicts": {k: r[k] for k in metrics if isinstance(r[k], (int, float))},
            "failures": [m for m in arm.failure_modes if r.get(m)]}


def page_data(arms: list[Arm], max_seeds: int | None = None) -> dict:
    """Per prompt (in the first arm's order): its category, its seeds (those with an image, at most the first
    `max_seeds`) and, per arm and seed, the image's cell."""
    if not arms:
        raise ValueError("No evaluations to compare.")
    index = [{(r["prompt"], r["seed"]): i for i, r in enumerate(a.records)} for a in arms]
    prompts: dict[str, dict] = {}
    for a in arms:
        for r in a.records:
            entry = prompts.setdefault(r["prompt"], {"prompt": r["prompt"], "category": r.get("category", "other"), "seeds": []})
            if r["seed"] not in entry["seeds"]:
                entry["seeds"].append(r["seed"])
    uris: dict = {}
    for entry in prompts.values():
        entry["seeds"] = [s for s in entry["seeds"]
                          if any(a.image_of[ix[entry["prompt"], s]] is not None for a, ix in zip(arms, index)
                                 if (entry["prompt"], s) in ix)][:max_seeds]
        entry["cells"] = {a.name: [_cell(a, ix[entry["prompt"], s], uris) if (entry["prompt"], s) in ix else None
                                   for s in entry["seeds"]] for a, ix in zip(arms, index)}
    rows = [e for e in prompts.values() if e["seeds"]]
    cats = list(dict.fromkeys(e["category"] for e in rows))
    return {"arms": [a.name for a in arms], "categories": cats, "prompts": rows, "max_seeds": max_seeds,
            "previews_only": any(None in a.image_of for a in arms) and max_seeds != 1}


def _write_page(path: Path, mode: str, title: str, data: dict) -> Path:
    """The HTML file: the template with the data as inline JSON (``</`` escaped so it cannot end the script)."""
    blob = json.dumps({"mode": mode, "title": title, **data}, separators=(",", ":")).replace("</", "<\\/")
    text = (PAGE.replace("__TITLE__", html.escape(title)).replace("__CSS__", CSS).replace("__JS__", JS)
            .replace("__DATA__", blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text)


def build_viewer(paths, output, title: str | None = None, max_seeds: int | None = None) -> Path:
    """Write ``viewer.html`` into `output` from the evaluations in `paths` (see :func:`load_arms`), with at most
    `max_seeds` seeds per prompt (default: all); returns its path."""
    if max_seeds is not None and max_seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {max_seeds}.")
    arms = load_arms(paths)
    title = title or "Side by side: " + ", ".join(Path(p).name for p in paths)
    return _write_page(Path(output) / "viewer.html", "viewer", title, page_data(arms, max_seeds))


def _shared_seeds(entry: dict, arms) -> list[int]:
    """The positions of the seeds of a prompt on which every one of `arms` has an image."""
    return [i for i in range(len(entry["seeds"]))
            if all(entry["cells"][a][i] and entry["cells"][a][i]["img"] for a in arms)]


def study_trials(data: dict, arms: list[str], seed: int = 0, n_prompts: int | None = None) -> list[dict]:
    """One trial per prompt: a pair of `arms` (all pairs equally often, shuffled), one seed both drew, and which
    arm is on the left, every draw from ``numpy.random.default_rng(seed)``. Prompts where some arm lacks an image
    are left out; `n_prompts` draws that many of the others."""
    pairs = list(combinations(arms, 2))
    if not pairs:
        raise ValueError("A study compares at least two arms; give two or more evaluations (or --arms).")
    rng = np.random.default_rng(seed)
    usable = [e for e in data["prompts"] if _shared_seeds(e, arms)]
    if not usable:
        raise ValueError("No prompt has an image under every arm of the study; compare evaluations of the same prompts.")
    if n_prompts is not None and not 1 <= n_prompts <= len(usable):
        raise ValueError(f"--n-prompts must be between 1 and {len(usable)} (the prompts every arm drew), got {n_prompts}.")
    order = rng.permutation(len(usable))[: n_prompts or len(usable)]
    which = rng.permutation(np.arange(len(order)) % len(pairs))
    trials = []
    for t, (p, k) in enumerate(zip(order, which)):
        e, (a, b) = usable[p], pairs[k]
        seeds = _shared_seeds(e, (a, b))
        i = seeds[rng.integers(len(seeds))]
        left, right = (a, b) if rng.random() < 0.5 else (b, a)
        trials.append({"trial": t, "prompt": e["prompt"], "category": e["category"], "seed": e["seeds"][i],
                       "left": left, "right": right, "left_img": e["cells"][left][i]["img"],
                       "right_img": e["cells"][right][i]["img"]})
    return trials


def study_key(trials: list[dict], seed: int, arms: list[str]) -> dict:
    """What a vote file must match: the study's id (a hash of its trials), seed, arms and trials without images."""
    rows = [{k: t[k] for k in ("trial", "prompt", "category", "seed", "left", "right")} for t in trials]
    digest = hashlib.sha256(json.dumps([seed, arms, rows]).encode()).hexdigest()[:12]
    return {"format": "minitune-study", "id": digest, "seed": seed, "arms": arms, "trials": rows}


def build_study(paths, output, seed: int = 0, arms: list[str] | None = None, n_prompts: int | None = None,
                title: str | None = None) -> Path:
    """Write ``study.html`` (the blind pairwise page) and ``study.json`` (its key) into `output`; returns the page."""
    found = load_arms(paths)
    names = [a.name for a in found]
    arms = list(arms or names)
    if unknown := [a for a in arms if a not in names]:
        raise ValueError(f"No arm named {unknown[0]!r} here; choose among {', '.join(map(repr, names))}.")
    data = page_data([a for a in found if a.name in arms])
    trials = study_trials(data, arms, seed, n_prompts)
    key = study_key(trials, seed, arms)
    Path(output).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(output) / "study.json", json.dumps(key, indent=1))
    page = {"study": {"id": key["id"], "seed": seed, "arms": arms, "format": VOTES_FORMAT,
                      "source": title or ", ".join(Path(p).name for p in paths)}, "trials": trials}
    return _write_page(Path(output) / "study.html", "study", title or "Which image matches the prompt better?", page)


def screenshot(page, png, width: int = 1000, height: int = 1100) -> Path:
    """Save a PNG of `page` (a local HTML file) as headless Chromium shows it, through selenium."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise FileNotFoundError("A screenshot needs selenium: pip install selenium (the book's extra).") from None
    if not chromium or not driver_path:
        raise FileNotFoundError("A screenshot needs Chromium and chromedriver (on Debian: apt-get install chromium "
                                "chromium-driver).")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(Path(page).resolve().as_uri())
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])  # the page gets width × height
        driver.execute_async_script("const done = arguments[0]; Promise.all([...document.images].map((i) => i.decode()"
                                    ".catch(() => null))).then(() => done(true));")
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(png))
    finally:
        driver.quit()
    return Path(png)
