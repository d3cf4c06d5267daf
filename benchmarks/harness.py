"""What every benchmark script shares: its arguments, the model, caches, the results files and goals.

A script is a module run from the repository root, ``python -m benchmarks.<group>.<name> [options]``, built as

    ap = harness.parser(__file__, __doc__, seed=0)      # --model, --seed and --results STEM, then its own options
    run = harness.start(ap, argv)                        # the arguments, the command line and the clock
    pipe = harness.load_model(run.args.model)            # the Shapes pipeline --model names (default: shipped)
    ...
    run.write(data, markdown)                            # <STEM>.json and .md, when --results STEM is given
    return harness.goal(ratio, 0.9, "raw / build time")  # 0 when the goal is met, 1 when it is missed

and ends with ``if __name__ == "__main__": harness.main(main)``. Caches are keyed by the arguments
that decide their content (:func:`key`): :func:`cached` keeps one computed value in a file and
recomputes it when the key differs, :func:`claim` makes a folder hold one setting and refuses
another.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES_MODEL = "a saved Shapes pipeline folder (default: the shipped base model)"


def module_name(file) -> str:
    """The module a script file is run as: ``benchmarks.perf.toy_speed`` for ``benchmarks/perf/toy_speed.py``."""
    return ".".join(Path(file).resolve().relative_to(ROOT).with_suffix("").parts)


def parser(file, doc: str, *, model: str | None = SHAPES_MODEL, seed: int | None = None,
           results: bool = True, threads: bool = False) -> argparse.ArgumentParser:
    """An argument parser for the script `file`, described by the first paragraph of its `doc`, with the
    shared options: ``--model`` (with `model` as its help; None leaves it out), ``--seed`` (default `seed`;
    None leaves it out), ``--results STEM`` and, with `threads`, ``--threads`` (torch's CPU threads, set by
    :func:`start`; default: torch's own count)."""
    name = module_name(file)
    ap = argparse.ArgumentParser(prog=f"python -m {name}", description=" ".join(doc.strip().split("\n\n")[0].split()))
    if model is not None:
        ap.add_argument("--model", default=None, help=model)
    if seed is not None:
        ap.add_argument("--seed", type=int, default=seed)
    if results:
        ap.add_argument("--results", metavar="STEM", help="also write <STEM>.json and <STEM>.md, headed with the model, "
                        f"commit, command and wall time (e.g. book/results/{name.rsplit('.', 1)[-1]})")
    if threads:
        import torch

        ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch's CPU threads")
    return ap


def named_models(specs: list[str]) -> dict[str, str | None]:
    """``{name: folder}`` from ``NAME=FOLDER`` arguments; ``shipped`` alone names the base minitune ships (None)."""
    out = {}
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not folder and name != "shipped":
            raise ValueError(f"--models takes NAME=FOLDER (or shipped for the base minitune ships); got {spec!r}.")
        out[name] = folder or None
    return out


def named_scales(specs: list[str], models: dict, default: float, option: str, allowed=None) -> dict[str, float]:
    """Each model's guidance scale: ``NAME=SCALE`` from `specs` where given (a NAME of `models`, a SCALE in
    `allowed` when that is given), else `default`."""
    out = dict.fromkeys(models, default)
    for spec in specs:
        name, _, scale = spec.partition("=")
        try:
            value = float(scale)
        except ValueError:
            value = None
        if name not in models or value is None or (allowed is not None and value not in allowed):
            where = " and a SCALE of --guidance" if allowed is not None else ""
            raise ValueError(f"{option} takes NAME=SCALE with a NAME of --models{where}; got {spec!r}.")
        out[name] = value
    return out


def model_name(model) -> str:
    """How a results file names `model`: "shipped" for the base model shipped with minitune, else the folder."""
    return "shipped" if model is None or str(model) == "toy" else str(model)


@dataclass
class Run:
    """One run of a script: its parsed arguments, the command line that started it and when it started."""

    args: argparse.Namespace
    command: str
    started: float = field(default_factory=time.time)

    def seconds(self) -> float:
        """Wall-clock seconds since the run started."""
        return time.time() - self.started

    def write(self, data: dict, markdown: str, *, model: str | None = None, wall_s: float | None = None):
        """Write ``<STEM>.json`` (`data`) and ``<STEM>.md`` (`markdown`) for ``--results STEM`` through
        :func:`minitune.tools.results.write_result`; nothing without ``--results``. `model` defaults to what
        ``--model`` names, `wall_s` to the run's time so far. Returns the two paths, or None."""
        from minitune.tools.results import write_result

        stem = getattr(self.args, "results", None)
        if not stem:
            return None
        model = model_name(getattr(self.args, "model", None)) if model is None else model
        paths = write_result(stem, data, markdown, model=model, command=self.command,
                             wall_s=self.seconds() if wall_s is None else wall_s)
        print("wrote " + " and ".join(map(str, paths)))
        return paths


def start(ap: argparse.ArgumentParser, argv=None) -> Run:
    """Parse `argv` (default: the command line), set torch's threads where the parser has ``--threads``, and
    start the clock."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = ap.parse_args(argv)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    return Run(args, f"{ap.prog} {shlex.join(argv)}".strip())


def main(script_main) -> None:
    """Run ``script_main()`` and exit with the status it returns (None: 0). A ValueError, FileNotFoundError or
    PermissionError (bad input, said in one sentence) is printed without a traceback, with status 2."""
    try:
        status = script_main()
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)


def load_model(model=None, device="cpu"):
    """The Shapes pipeline `model` names, on `device`: a saved folder, or the shipped base model for None or "toy"."""
    from minitune.models import load_pipeline, pipeline_class

    if model is not None and str(model) != "toy" and not Path(model).is_dir():
        raise FileNotFoundError(f"No folder {model}: give a saved Shapes pipeline (save_pretrained or minitune toy-train), "
                                "or leave --model out for the shipped base model.")
    if pipeline_class(model) != "ShapesPipeline":
        raise ValueError(f"{model} is not a Shapes pipeline (its model_index.json names another class); these "
                         "benchmarks need the Shapes world's prompts and oracle.")
    return load_pipeline(model or "toy", device=device)


def key(args: argparse.Namespace, *names: str, **extra) -> dict:
    """The arguments that decide a cache's content: ``{name: args.<name>}`` for each of `names`, then `extra`."""
    return {**{name: getattr(args, name) for name in names}, **extra}


def cached(path, key: dict, compute):
    """``compute()``'s value, kept in the torch file `path` with `key`, and the seconds computing it took.

    A file made with the same key is reused; one made with another key (other arguments) is ignored
    and replaced. The value must be something ``torch.load`` reads back safely (tensors, lists, dicts,
    strings, numbers)."""
    import torch

    path = Path(path)
    kept = torch.load(path) if path.is_file() else {}
    if kept.get("key") == key:
        print(f"reusing {path}, made with the same arguments")
        return kept["value"], kept["seconds"]
    t0 = time.time()
    value = compute()
    seconds = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "value": value, "seconds": seconds}, path)
    return value, seconds


def claim(folder, settings: dict, name: str = "settings.json") -> Path:
    """Make `folder` hold the run of `settings`, recorded in ``folder/<name>``; returns the folder.

    Refuses (ValueError, naming what differs) a folder whose record gives one of these settings another
    value, through :func:`minitune.io.claim`. Settings the record lacks are added to it, so that a later
    run can add, say, a new arm's options to a folder."""
    from minitune import io

    folder, written = Path(folder), Path(folder) / name
    saved = json.loads(written.read_text()) if written.is_file() else {}
    shared = [k for k in settings if k in saved]  # settings added since the folder was made are not compared
    io.claim(written, {**saved, **settings}, lambda changes: f"{folder} holds a run with other settings ({changes}); "
             "choose another --out.", view=lambda s: {k: s[k] for k in shared})
    return folder


def goal(value: float, target: float, what: str, *, at_most: bool = False, fmt: str = ".3f") -> int:
    """Print `what`'s measured `value` beside its goal (at least `target`, or at most with `at_most`) and return
    the exit status it earns: 0 when the goal is met, 1 when it is missed (a NaN misses)."""
    met = value <= target if at_most else value >= target
    print(f"{what}: {value:{fmt}} (goal {'<=' if at_most else '>='} {target:g}): {'met' if met else 'MISSED'}", flush=True)
    return 0 if met else 1


class Report:
    """Lines printed as they come and kept, so that what a script prints is also its results' Markdown."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def markdown(self, fenced: bool = False) -> str:
        """The lines printed so far, as one text; `fenced` puts them in a code block (lines of fixed-width text)."""
        text = "\n".join(self.lines).strip("\n") + "\n"
        return f"```\n{text}```\n" if fenced else text
