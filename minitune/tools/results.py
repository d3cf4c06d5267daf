"""The committed measurements: ``book/results/<name>.json`` and ``.md``, and the README blocks made from them.

Every number the README or the book states comes from one of these files, written by the command
named in its header (model, commit, command, wall time). The README carries copies of the ``.md``
files between markers, ``<!-- results:<name> -->`` and ``<!-- /results:<name> -->``;
:func:`sync_readme` rewrites them from the files and a test keeps the two equal.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from ..io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "book" / "results"
README = ROOT / "README.md"
_BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)


def published(name: str, results_dir: str | Path | None = None) -> tuple[dict, str]:
    """The JSON content and the Markdown text of the committed result `name` (e.g. ``"experiment"``)."""
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    js, md = folder / f"{name}.json", folder / f"{name}.md"
    if not js.is_file() or not md.is_file():
        raise FileNotFoundError(f"No committed result {name!r} in {folder}: run the command that writes it, or work "
                                f"in a clone of the repository, where book/results holds them.")
    return json.loads(js.read_text()), md.read_text()


def git_commit() -> str:
    """The commit of the working tree the package runs from ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + ("+local changes" if dirty else "")


def write_result(stem: str | Path, data: dict, markdown: str, *, model: str, command: str, wall_s: float,
                 commit: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (`data` under a head of model, commit, command and wall time) and ``<stem>.md``
    (`markdown` under a comment with the same head); returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    head = {"model": model, "commit": commit or git_commit(), "command": command, "wall_time_min": round(wall_s / 60, 1)}
    js = atomic_write(stem.with_suffix(".json"), json.dumps({**head, **data}, indent=1) + "\n")
    md = atomic_write(stem.with_suffix(".md"), f"<!-- written by `{command}`; model {model}, commit {head['commit']}, "
                      f"{head['wall_time_min']} min -->\n\n{markdown.rstrip()}\n")
    return js, md


def readme_blocks(text: str) -> dict[str, str]:
    """{name: content} of every results block in a README's text."""
    return {m.group(2): m.group(3) for m in _BLOCK.finditer(text)}


def sync_readme(readme: str | Path = README, results_dir: str | Path | None = None) -> list[str]:
    """Rewrite every results block of `readme` from its ``.md`` file; returns the names of the blocks."""
    path = Path(readme)
    text = path.read_text()
    names = list(readme_blocks(text))
    contents = {name: published(name, results_dir)[1] for name in names}  # every file read before anything is written
    atomic_write(path, _BLOCK.sub(lambda m: m.group(1) + contents[m.group(2)] + m.group(4), text))
    return names


def arm_sentences(data: dict) -> str:
    """What an experiment's arms did, in words, from its published ``"arms"``."""
    arms = data["arms"]
    base = arms["base"]
    renders = data.get("renders")
    truth = (f"; the world's own renders of these prompts draw {renders['area']:.0f}, so the base draws "
             f"{100 * (base['area'] / renders['area'] - 1):+.0f} %") if renders else ""
    lines = [f"The base model is {100 * base['strict']:.1f} % strict on the held-out prompts, "
             f"{100 * base['well_formed']:.1f} % well formed, {base['area']:.0f} coloured pixels per image{truth}."]
    for arm, r in arms.items():
        if arm == "base":
            continue
        significant = "above zero" if r["delta_ci"][0] > 0 else "below zero" if r["delta_ci"][1] < 0 else "containing zero"
        share = r.get("share_of_oracle")
        lo, hi = r["delta_ci"]
        lines.append(f"{r['name']}: {100 * r['delta_strict']:+.1f} points (95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}), "
                     f"an interval {significant}; well formed "
                     f"{100 * (r['well_formed'] - base['well_formed']):+.1f} points, coloured area "
                     f"{100 * (r['area'] / base['area'] - 1):+.0f} %"
                     + (f" ({100 * (r['area'] / renders['area'] - 1):+.0f} % against the renders)" if renders else "")
                     + (f"; {100 * share:.0f} % of the oracle arm's gain." if share is not None else "."))
    return "\n".join(lines)


if __name__ == "__main__":
    print("rewrote the README blocks " + ", ".join(sync_readme()))
