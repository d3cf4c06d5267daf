"""The Shapes world: a prompt grammar, a seeded renderer and an exact oracle.

A scene is a 32×32 RGB image of a few coloured shapes on a black background. Prompts come
from a small grammar whose categories mirror T2I-CompBench:

==========  ============================================  =========================================
category    example                                       what it tests
==========  ============================================  =========================================
color       "a red circle and a blue square"              binding two colours to two shapes
shape       "a red circle and a red triangle"             drawing two different shapes
spatial     "a red circle left of a blue square"          a relation (left of, right of, above, below)
count       "three green triangles"                       one to three objects of a kind
complex     "two red circles and a blue square"           count + binding at once
==========  ============================================  =========================================

Every prompt has a list of *facts* (each object is there, the relation holds, the count is
right, nothing else is drawn). The oracle reads an image back into blobs (connected regions of
one palette colour), classifies each blob's shape from how much of its bounding box it fills,
and checks every fact. Because the world is procedural, alignment is measured exactly.

The train/test split is over *combinations*: each prompt has a canonical key (the unordered
scene it describes: "a red circle left of a blue square" and "a blue square right of a red
circle" share one key), and within each category the keys whose SHA-1 hash is smallest — a
quarter of them — are held out for testing. Every colour, shape and relation word is seen in
training; only the combinations in the test split are new.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from ..images import to_tensor, to_uint8

SIZE = 32
PALETTE = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {"one": 1, "two": 2, "three": 3}
CATEGORIES = ("color", "shape", "spatial", "count", "complex")
TEST_FRACTION = 0.25
OBJECT_SIZES = (8, 12)  # side / diameter in pixels, inclusive range
GAP = 2  # minimum empty pixels between two objects' bounding boxes
MARGIN = 3  # relations are drawn with at least this many pixels between centres

VOCAB = sorted(
    {"a", "and"} | set(PALETTE) | set(SHAPES) | {s + "s" for s in SHAPES} | set(NUMBERS)
    | {w for r in RELATIONS for w in r.split()}
)
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_SHAPE_FILL = {"square": 1.0, "circle": 0.8, "triangle": 0.59}  # measured on rasterised shapes


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str

    def __str__(self):
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt: the scene it asks for and the facts to check."""

    text: str
    category: str
    first: Obj
    second: Obj | None = None
    relation: str | None = None
    count: int = 1

    @property
    def n_objects(self) -> int:
        return self.count + (self.second is not None)

    @property
    def facts(self) -> list[str]:
        a, b = self.first, self.second
        if self.category == "count":
            return [f"exactly {self.count} {a}", "nothing else"]
        facts = [f"exactly {self.count} {a}" if self.count > 1 else f"a {a}", f"a {b}"]
        if self.relation:
            facts.append(f"{a} {self.relation} {b}")
        return facts + ["nothing else"]

    @property
    def key(self) -> str:
        """Canonical key of the scene (equal for prompts that describe the same scenes)."""
        a, b, rel = self.first, self.second, self.relation
        if self.category == "count":
            return f"count:{self.count}:{a}"
        if self.category == "complex":
            return f"complex:{self.count}:{a}+{b}"
        if rel is None:
            return f"{self.category}:" + "+".join(sorted([str(a), str(b)]))
        if self.category == "spatial" and rel in ("right of", "below"):
            a, b, rel = b, a, _OPPOSITE[rel]
        return f"{self.category}:{a}:{rel}:{b}:{self.count}"


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def make_prompt(category, first, second=None, relation=None, count=1) -> str:
    """Surface text for a scene description (the inverse of :func:`parse`)."""
    a = f"{first.color} {_plural(first.shape, count)}"
    if category == "count":
        return f"{[k for k, v in NUMBERS.items() if v == count][0]} {a}"
    head = "a " + a if count == 1 else f"two {a}"
    if relation:
        return f"{head} {relation} a {second}"
    return f"{head} and a {second}"


_OBJ = r"(\w+) (\w+)"
_PATTERNS = [
    ("pair", re.compile(rf"^a {_OBJ} and a {_OBJ}$")),
    ("spatial", re.compile(rf"^a {_OBJ} (left of|right of|above|below) a {_OBJ}$")),
    ("complex", re.compile(rf"^two {_OBJ} and a {_OBJ}$")),
    ("count", re.compile(rf"^(one|two|three) {_OBJ}$")),
]


def _obj(color: str, shape: str, plural: bool, text: str) -> Obj:
    base = shape[:-1] if plural and shape.endswith("s") else shape
    if color not in PALETTE or base not in SHAPES or (plural and not shape.endswith("s")):
        raise ValueError(
            f"Prompt {text!r} names an unknown object {color} {shape!r}: colours are "
            f"{', '.join(PALETTE)}; shapes are {', '.join(SHAPES)} (plural after two/three)."
        )
    return Obj(color, base)


def parse(text: str) -> Prompt:
    """Parse a prompt of the Shapes-world grammar; raise ValueError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Empty prompt: the Shapes world needs a prompt such as 'a red circle and a blue square'.")
    norm = " ".join(text.lower().replace(",", " ").split())
    unknown = [w for w in norm.split() if w not in VOCAB]
    if unknown:
        raise ValueError(
            f"Prompt {text!r} has words the Shapes world does not know: {', '.join(unknown)} "
            f"(known words: {' '.join(VOCAB)})."
        )
    for kind, pattern in _PATTERNS:
        m = pattern.match(norm)
        if not m:
            continue
        g = m.groups()
        if kind == "pair":
            a, b = _obj(g[0], g[1], False, text), _obj(g[2], g[3], False, text)
            if a == b:
                break
            return Prompt(norm, "shape" if a.color == b.color else "color", a, b)
        if kind == "spatial":
            a, b = _obj(g[0], g[1], False, text), _obj(g[3], g[4], False, text)
            if a == b:
                break
            return Prompt(norm, kind, a, b, relation=g[2])
        if kind == "complex":
            a, b = _obj(g[0], g[1], True, text), _obj(g[2], g[3], False, text)
            if a == b:
                break
            return Prompt(norm, kind, a, b, count=2)
        n = NUMBERS[g[0]]
        return Prompt(norm, "count", _obj(g[1], g[2], n > 1, text), count=n)
    raise ValueError(
        f"Prompt {text!r} does not follow the Shapes-world grammar: use e.g. 'a red circle and a blue "
        f"square', 'a red circle left of a blue square', 'three green triangles' or 'two red circles "
        f"and a blue square' (two different objects)."
    )



def edits(prompt: str) -> dict[str, str]:
    """Near-miss versions of a prompt: colours swapped between the objects, shapes swapped,
    relation flipped, the second object's shape changed, count changed — whichever the prompt admits. Used by the
    prompt-swap test: does the model's density prefer the true prompt for an aligned image?"""
    p = parse(prompt)
    out = {}
    if p.category == "count":
        out["count changed"] = make_prompt("count", p.first, count=p.count % 3 + 1)
        return out
    a, b = p.first, p.second
    if a.color != b.color:
        out["colours swapped"] = make_prompt(p.category, Obj(b.color, a.shape), Obj(a.color, b.shape), p.relation, p.count)
    if a.shape != b.shape:
        out["shapes swapped"] = make_prompt(p.category, Obj(a.color, b.shape), Obj(b.color, a.shape), p.relation, p.count)
    if p.relation:
        out["relation flipped"] = make_prompt(p.category, a, b, _OPPOSITE[p.relation], p.count)
    spare = [s for s in SHAPES if s not in (a.shape, b.shape)]
    if spare:
        out["shape changed"] = make_prompt(p.category, a, Obj(b.color, spare[0]), p.relation, p.count)
    return dict(_new_scenes(p, out.items()))


def _new_scenes(p: Prompt, items):
    """The (label, text) items whose scene differs from the prompt's and from every earlier item's."""
    keys = {p.key}
    for label, text in items:
        key = parse(text).key
        if key not in keys:
            keys.add(key)
            yield label, text


def near_misses(prompt: str) -> list[str]:
    """The prompt's neighbourhood for a diffusion classifier: every :func:`edits` prompt, plus the scenes
    with one object more or one fewer that the grammar can say.

    For "a red circle left of a blue square" that adds "one red circle" and "one blue square" (an object
    dropped) and "two red circles and a blue square", "two blue squares and a red circle" (an object
    added); a ``complex`` prompt gets its scene with one of the pair fewer and with the single object
    dropped; a count prompt gets the other two counts. An image with an extra or a missing object is
    then better explained by one of these rivals than by its own prompt, which :func:`edits` alone
    cannot say.
    Prompts describing the same scene as the prompt or as an earlier rival are left out.
    """
    p = parse(prompt)
    a, b = p.first, p.second
    out = list(edits(prompt).values())
    if p.category == "count":
        out += [make_prompt("count", a, count=n) for n in NUMBERS.values()]
    elif p.category == "complex":
        out += [make_prompt("pair", a, b), make_prompt("count", a, count=2)]
    else:
        out += [make_prompt("count", a), make_prompt("count", b)]
        out += [make_prompt("complex", a, b, count=2), make_prompt("complex", b, a, count=2)]
    return [text for _, text in _new_scenes(p, enumerate(out))]


def _all_scenes():
    objs = [Obj(c, s) for c in PALETTE for s in SHAPES]
    for a, b in itertools.permutations(objs, 2):
        if a.color != b.color and a.shape != b.shape:
            yield make_prompt("color", a, b)
        if a.color == b.color:
            yield make_prompt("shape", a, b)
        yield make_prompt("complex", a, b, count=2)
        for rel in RELATIONS:
            yield make_prompt("spatial", a, b, rel)
    for a in objs:
        for n in NUMBERS.values():
            yield make_prompt("count", a, count=n)


def _build_split():
    by_key: dict[str, list[str]] = {}
    for text in _all_scenes():
        by_key.setdefault(parse(text).key, []).append(text)
    split = {"train": {c: [] for c in CATEGORIES}, "test": {c: [] for c in CATEGORIES}}
    for cat in CATEGORIES:
        keys = sorted((k for k in by_key if k.startswith(cat + ":")), key=lambda k: hashlib.sha1(k.encode()).hexdigest())
        n_test = int(np.ceil(TEST_FRACTION * len(keys)))
        for i, k in enumerate(keys):
            split["test" if i < n_test else "train"][cat].extend(sorted(by_key[k]))
    return split


_SPLIT = _build_split()


def prompts(split: str = "train", category: str | None = None) -> list[str]:
    """All prompts of a split ('train' or 'test'), optionally of one category, in a fixed order."""
    if split not in _SPLIT:
        raise ValueError(f"Unknown split {split!r}: use 'train' or 'test'.")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"Unknown category {category!r}: use one of {', '.join(CATEGORIES)}.")
    cats = CATEGORIES if category is None else (category,)
    return [p for c in cats for p in _SPLIT[split][c]]


def sample_prompts(split: str, n: int, seed: int = 0, per_category: bool = True,
                   weights=None) -> list[str]:
    """Draw n prompts of a split; with per_category, a category is drawn first, uniformly or with
    `weights` (one non-negative number per category, in the order of CATEGORIES)."""
    rng = np.random.default_rng(seed)
    if not per_category:
        pool = prompts(split)
        return [pool[i] for i in rng.integers(len(pool), size=n)]
    if weights is None:
        cats = rng.integers(len(CATEGORIES), size=n)
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(CATEGORIES),) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"Category weights need one non-negative number for each of {', '.join(CATEGORIES)} "
                             f"(not all zero); got {list(weights)}.")
        cats = rng.choice(len(CATEGORIES), size=n, p=w / w.sum())
    out = []
    for c in cats:
        pool = _SPLIT[split][CATEGORIES[c]]
        out.append(pool[rng.integers(len(pool))])
    return out


def eval_prompts(per_category: int = 70, seed: int = 0, split: str = "test") -> list[str]:
    """The held-out evaluation set: up to `per_category` test prompts of each category (seeded); with
    ``split="train"``, a dev set of training prompts drawn the same way, to choose settings on."""
    prompts(split)  # an unknown split fails here
    rng = np.random.default_rng(seed)
    out = []
    for c in CATEGORIES:
        pool = _SPLIT[split][c]
        idx = rng.permutation(len(pool))[:per_category]
        out.extend(pool[i] for i in sorted(idx))
    return out


def train_prompts(n: int, seed: int = 0) -> list[str]:
    """n distinct Shapes-world training prompts, the categories taking turns (seeded)."""
    total = len(prompts("train"))
    if not 1 <= n <= total:
        raise ValueError(f"n_prompts must lie in 1..{total} (the Shapes world's training prompts), got {n}.")
    gen = torch.Generator().manual_seed(seed)
    queues = []
    for category in CATEGORIES:
        pool = prompts("train", category)
        queues.append([pool[i] for i in torch.randperm(len(pool), generator=gen).tolist()])
    out = []
    while len(out) < n:
        out += [q.pop() for q in queues if q][: n - len(out)]
    return out


# --------------------------------------------------------------------------- rendering


def _mask(shape: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        r = size / 2
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    # isosceles triangle, apex at the top centre, base at the bottom
    half_width = (yy / size) * (size / 2)
    return np.abs(xx - size / 2) <= half_width + 0.25


def _relation_holds(rel: str, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
    (ax, ay), (bx, by) = a, b
    return {
        "left of": bx - ax >= margin,
        "right of": ax - bx >= margin,
        "above": by - ay >= margin,
        "below": ay - by >= margin,
    }[rel]


def _fits(x: int, y: int, s: int, boxes) -> bool:
    """Whether an s×s box at (x, y) keeps GAP empty pixels from every box already placed."""
    return all(x + s + GAP <= bx or bx + bs + GAP <= x or y + s + GAP <= by or by + bs + GAP <= y for bx, by, bs, _ in boxes)


def _layout(p: Prompt, rng: np.random.Generator):
    objs = [p.first] * p.count + ([p.second] if p.second else [])
    for _ in range(1000):
        boxes, ok = [], True
        for o in objs:
            s = int(rng.integers(OBJECT_SIZES[0], OBJECT_SIZES[1] + 1))
            spot = _free_spot(boxes, s, rng, tries=50)
            if spot is None:
                ok = False
                break
            boxes.append((*spot, s, o))
        if ok and p.relation:
            b = boxes[-1]
            cb = (b[0] + b[2] / 2, b[1] + b[2] / 2)
            ok = all(_relation_holds(p.relation, (a[0] + a[2] / 2, a[1] + a[2] / 2), cb, MARGIN) for a in boxes[:-1])
        if ok:
            return boxes
    raise RuntimeError(f"Could not lay out {p.text!r}; the canvas is too small for it.")


def render(prompt: str, seed: int) -> np.ndarray:
    """Draw a scene that satisfies `prompt` with a random layout; uint8 array [32, 32, 3]."""
    return _draw(_layout(parse(prompt), np.random.default_rng(seed)))


def render_missing(prompt: str, seed: int) -> np.ndarray:
    """The scene :func:`render` draws for `prompt` and `seed`, with one of its objects (chosen by the
    seed) left out: the picture of a loose caption that names something the image lacks, as web
    captions often do. uint8 array [32, 32, 3], which the oracle fails."""
    boxes = _layout(parse(prompt), np.random.default_rng(seed))
    drop = int(np.random.default_rng([seed, 2]).integers(len(boxes)))
    return _draw(boxes[:drop] + boxes[drop + 1 :])


def _draw(boxes) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    for x, y, s, o in boxes:
        img[y : y + s, x : x + s][_mask(o.shape, s)] = PALETTE[o.color]
    return img


def _free_spot(boxes, s: int, rng: np.random.Generator, tries: int = 200):
    """A random (x, y) where an s×s box fits next to `boxes`, or None after `tries` draws."""
    for _ in range(tries):
        x, y = (int(v) for v in rng.integers(0, SIZE - s + 1, size=2))
        if _fits(x, y, s, boxes):
            return x, y
    return None


def render_edits(prompt: str, seed: int) -> dict[str, np.ndarray]:
    """The aligned render of `prompt` (as :func:`render` draws it) and edits of that same scene with one failure each.

    Returns {"aligned": image, edit: image, ...} with uint8 [32, 32, 3] images, whichever edits the
    prompt admits: "extra object" (another copy of the first named object in free space), "missing
    object" (the last object erased), "colours swapped" (between the two kinds of object), "shape
    changed" (the last object redrawn as a shape the prompt does not name) and "relation flipped"
    (the two objects of a spatial prompt trade places). Everything else — positions, sizes, the other
    objects — stays as in the aligned render, so the pair differs only in the one edit: the
    image-side counterpart of :func:`edits`, for asking which of the two images a score prefers. The
    oracle fails every edit, though it may name the failure differently (a blue circle left of a red
    circle is the colours swapped and also the relation flipped).
    """
    p = parse(prompt)
    rng = np.random.default_rng(seed)
    boxes = _layout(p, rng)
    out = {"aligned": _draw(boxes)}
    extra = rng.integers(OBJECT_SIZES[0], OBJECT_SIZES[1] + 1)
    spot = _free_spot(boxes, int(extra), np.random.default_rng([seed, 1]))
    if spot is not None:
        out["extra object"] = _draw([*boxes, (*spot, int(extra), p.first)])
    out["missing object"] = _draw(boxes[:-1])
    last = boxes[-1]
    if p.second and p.first.color != p.second.color:
        swap = {p.first.color: p.second.color, p.second.color: p.first.color}
        out["colours swapped"] = _draw([(x, y, s, Obj(swap[o.color], o.shape)) for x, y, s, o in boxes])
    spare = [s for s in SHAPES if s not in (p.first.shape, p.second.shape if p.second else p.first.shape)]
    out["shape changed"] = _draw([*boxes[:-1], (*last[:3], Obj(last[3].color, spare[0]))])
    if p.category == "spatial":
        (ax, ay, sa, a), (bx, by, sb, b) = boxes
        ca, cb = (ax + sa / 2, ay + sa / 2), (bx + sb / 2, by + sb / 2)
        moved = [(round(cb[0] - sa / 2), round(cb[1] - sa / 2), sa, a), (round(ca[0] - sb / 2), round(ca[1] - sb / 2), sb, b)]
        if all(0 <= x and 0 <= y and x + s <= SIZE and y + s <= SIZE for x, y, s, _ in moved):
            out["relation flipped"] = _draw(moved)
    return out


def render_batch(prompts_: list[str], seeds, missing=None) -> torch.Tensor:
    """Render many scenes as a model-ready float tensor [B, 3, 32, 32] in [-1, 1].

    missing: optional booleans, one per scene; where true the scene is drawn by :func:`render_missing`.
    """
    missing = [False] * len(prompts_) if missing is None else missing
    return to_tensor(np.stack([(render_missing if m else render)(p, int(s)) for p, s, m in zip(prompts_, seeds, missing)]))


# --------------------------------------------------------------------------- the oracle

_COLORS = np.array(list(PALETTE.values()), np.float32) / 255.0
_NAMES = list(PALETTE)
MIN_AREA = 12  # blobs smaller than this are specks, not objects


@dataclass
class Blob:
    color: str
    shape: str
    x: float  # centre of mass, pixels
    y: float
    area: int
    clean: bool  # a plausible, cleanly filled palette shape


def _blob_masks(image: np.ndarray) -> tuple[list[tuple[Blob, np.ndarray]], int]:
    """Every blob of one uint8 image with its pixel mask, and the count of speck pixels."""
    x = image.astype(np.float32) / 255.0
    bright = x.max(-1)
    fg = bright > 0.5
    chroma = x / np.maximum(bright[..., None], 1e-6)
    label = np.argmin(((chroma[..., None, :] - _COLORS) ** 2).sum(-1), -1)
    blobs, specks = [], 0
    for ci, name in enumerate(_NAMES):
        comp, n = ndimage.label(fg & (label == ci))
        for k in range(1, n + 1):
            mask = comp == k
            ys, xs = np.nonzero(mask)
            area = len(ys)
            if area < MIN_AREA:
                specks += area
                continue
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            fill = area / (h * w)
            shape = min(_SHAPE_FILL, key=lambda s: abs(_SHAPE_FILL[s] - fill))
            clean = (
                0.7 <= h / w <= 1.45
                and OBJECT_SIZES[0] - 2 <= max(h, w) <= OBJECT_SIZES[1] + 2
                and abs(_SHAPE_FILL[shape] - fill) < 0.09
            )
            blobs.append((Blob(name, shape, float(xs.mean() + 0.5), float(ys.mean() + 0.5), area, clean), mask))
    return blobs, specks


def find_blobs(image: np.ndarray) -> tuple[list[Blob], int]:
    """Segment one uint8 image into palette-coloured blobs; also return the count of speck pixels."""
    blobs, specks = _blob_masks(image)
    return [b for b, _ in blobs], specks


def _patch(image: np.ndarray, mask: np.ndarray):
    """The bounding box (y, x, h, w) of `mask` and the image's pixels inside it (zero outside the mask)."""
    ys, xs = np.nonzero(mask)
    y, x, h, w = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return (y, x, h, w), image[y : y + h, x : x + w] * mask[y : y + h, x : x + w, None]


def _paste(image: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    region = image[y : y + patch.shape[0], x : x + patch.shape[1]]
    lit = patch.max(-1) > 0
    region[lit] = patch[lit]


def sample_edits(image: np.ndarray, prompt: str, seed: int) -> dict[str, np.ndarray]:
    """Edits of a model's own image of `prompt`, one failure each, the counterpart of :func:`render_edits` for images
    that are not renders: the model's pixels stay, only the edited object changes.

    `image` (uint8 [32, 32, 3]) must be aligned (the oracle passes it). "missing object" erases the last named
    object; "extra object" pastes a copy of a first-named object's pixels into free space (seeded); "colours
    swapped" recolours the two kinds of object with each other's colour, keeping each pixel's brightness; "shape
    changed" erases the last named object and draws a shape the prompt does not name in its box; "relation
    flipped" moves a spatial pair's two objects to each other's places. Edits that do not fit are left out.
    """
    p = parse(prompt)
    if not check(image, p)["strict"]:
        raise ValueError(f"sample_edits needs an image the oracle judges aligned with {prompt!r}; this one is not.")
    blobs, _ = _blob_masks(image)
    first = [(b, m) for b, m in blobs if Obj(b.color, b.shape) == p.first]
    last = next((b, m) for b, m in reversed(blobs) if Obj(b.color, b.shape) == (p.second or p.first))
    out = {"aligned": image}
    (y, x, h, w), patch = _patch(image, first[0][1])
    boxes = [(bx, by, max(bh, bw), None) for (by, bx, bh, bw), _ in (_patch(image, m) for _, m in blobs)]
    spot = _free_spot(boxes, int(max(h, w)), np.random.default_rng([seed, 1]))
    if spot is not None:
        extra = image.copy()
        _paste(extra, patch, spot[1], spot[0])
        out["extra object"] = extra
    missing = image.copy()
    missing[last[1]] = 0
    out["missing object"] = missing
    if p.second and p.first.color != p.second.color:
        swap = {p.first.color: p.second.color, p.second.color: p.first.color}
        swapped = image.copy()
        for b, m in blobs:
            bright = image[m].max(-1, keepdims=True).astype(np.float32) / 255.0
            swapped[m] = np.round(bright * np.array(PALETTE[swap[b.color]], np.float32)).astype(np.uint8)
        out["colours swapped"] = swapped
    spare = [s for s in SHAPES if s not in (p.first.shape, p.second.shape if p.second else p.first.shape)]
    (ly, lx, lh, lw), _ = _patch(image, last[1])
    size = int(min(max(lh, lw), SIZE - ly, SIZE - lx))
    changed = missing.copy()
    changed[ly : ly + size, lx : lx + size][_mask(spare[0], size)] = PALETTE[last[0].color]
    out["shape changed"] = changed
    if p.category == "spatial":
        flipped = _swap_places(image, first[0][1], last[1])
        if flipped is not None:
            out["relation flipped"] = flipped
    return out


def _swap_places(image: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray):
    """The image with the objects of the two masks moved to each other's centres, or None where one would not fit."""
    (ya, xa, ha, wa), pa = _patch(image, mask_a)
    (yb, xb, hb, wb), pb = _patch(image, mask_b)
    ca, cb = (ya + ha / 2, xa + wa / 2), (yb + hb / 2, xb + wb / 2)
    moved = [(pa, round(cb[0] - ha / 2), round(cb[1] - wa / 2)), (pb, round(ca[0] - hb / 2), round(ca[1] - wb / 2))]
    if not all(0 <= y and 0 <= x and y + q.shape[0] <= SIZE and x + q.shape[1] <= SIZE for q, y, x in moved):
        return None
    out = image.copy()
    out[mask_a | mask_b] = 0
    for q, y, x in moved:
        _paste(out, q, y, x)
    return out


def check_relation(blobs: list[Blob], p: Prompt) -> bool:
    """Whether every blob of the first named object stands in the prompt's relation to one blob of the second."""
    named = [b for b in blobs if Obj(b.color, b.shape) == p.first]
    others = [b for b in blobs if p.second and Obj(b.color, b.shape) == p.second]
    return bool(named and others) and any(
        all(_relation_holds(p.relation, (a.x, a.y), (b.x, b.y), 0.5) for a in named) for b in others)


FAILURE_MODES = ("missing object", "extra object", "wrong colour", "wrong shape", "wrong relation", "wrong count")


def check(image: np.ndarray, prompt: str | Prompt) -> dict:
    """Check every fact of `prompt` in one uint8 image; returns facts, scores and failure modes."""
    p = parse(prompt) if isinstance(prompt, str) else prompt
    blobs, specks = find_blobs(image)
    named = [b for b in blobs if Obj(b.color, b.shape) == p.first]
    others = [b for b in blobs if p.second and Obj(b.color, b.shape) == p.second]
    results = []
    if p.category == "count" or p.count > 1:
        results.append(len(named) == p.count)
    else:
        results.append(len(named) >= 1)
    if p.second:
        results.append(len(others) >= 1)
    if p.relation:
        results.append(check_relation(blobs, p))
    results.append(len(blobs) == p.n_objects)
    facts = list(zip(p.facts, results))

    modes = set()
    wanted = [p.first] + ([p.second] if p.second else [])
    n_have = {o: sum(Obj(b.color, b.shape) == o for b in blobs) for o in wanted}
    need = {p.first: p.count, **({p.second: 1} if p.second else {})}
    short = [o for o in wanted if n_have[o] < need[o]]
    for o in short:
        if any(b.shape == o.shape and b.color != o.color for b in blobs):
            modes.add("wrong colour")
        elif any(b.color == o.color and b.shape != o.shape for b in blobs):
            modes.add("wrong shape")
        else:
            modes.add("missing object")
    if len(blobs) > p.n_objects:
        modes.add("extra object")
    if p.count > 1 or p.category == "count":
        if n_have[p.first] != p.count:
            modes.add("wrong count")
    if p.relation and not short and not results[2]:
        modes.add("wrong relation")
    ok = [r for _, r in facts]
    return {
        "prompt": p.text,
        "category": p.category,
        "facts": facts,
        "strict": float(all(ok)),
        "soft": float(np.mean(ok)),
        "well_formed": bool(blobs) and all(b.clean for b in blobs) and specks <= 8,
        "n_blobs": len(blobs),
        "area": int(sum(b.area for b in blobs) + specks),
        "failures": sorted(modes),
    }


@dataclass
class Evaluation:
    """The oracle's verdict on a batch of images: per-image records and aggregates."""

    records: list[dict] = field(default_factory=list)

    def _mean(self, key, records=None):
        rs = self.records if records is None else records
        return float(np.mean([r[key] for r in rs])) if rs else float("nan")

    @property
    def strict(self) -> float:
        return self._mean("strict")

    @property
    def soft(self) -> float:
        return self._mean("soft")

    @property
    def well_formed(self) -> float:
        return self._mean("well_formed")

    def per_category(self) -> dict[str, dict[str, float]]:
        out = {}
        for c in CATEGORIES:
            rs = [r for r in self.records if r["category"] == c]
            if rs:
                out[c] = {
                    "n": len(rs),
                    "strict": self._mean("strict", rs),
                    "soft": self._mean("soft", rs),
                    "well_formed": self._mean("well_formed", rs),
                }
        return out

    def failure_rates(self) -> dict[str, dict[str, float]]:
        """Fraction of images of each category showing each failure mode (modes can co-occur)."""
        out = {}
        for c in CATEGORIES:
            rs = [r for r in self.records if r["category"] == c]
            if rs:
                out[c] = {m: float(np.mean([m in r["failures"] for r in rs])) for m in FAILURE_MODES}
        return out


def evaluate(images, prompts_: list[str]) -> Evaluation:
    """Judge images against prompts exactly.

    `images`: float tensor [B, 3, 32, 32] in [-1, 1] (model output), uint8 array [B, 32, 32, 3],
    or a list of PIL images. `prompts_`: one prompt per image.
    """
    arr = to_uint8(images)
    if arr.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"The oracle reads 32×32 RGB images; got images of shape {arr.shape[1:]}.")
    if isinstance(prompts_, str):
        prompts_ = [prompts_] * len(arr)
    if len(prompts_) != len(arr):
        raise ValueError(f"Got {len(arr)} images but {len(prompts_)} prompts; give one prompt per image.")
    parsed = {t: parse(t) for t in set(prompts_)}
    return Evaluation([check(im, parsed[t]) for im, t in zip(arr, prompts_)])
