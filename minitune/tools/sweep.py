"""Run a notebook over a grid of parameters with papermill and collect one table and one figure.

``minitune sweep notebooks/06_cfg_tradeoff.ipynb --param 'guidance_scales=[1.0],[3.0],[6.0]' --output-dir DIR``

Each ``--param name=v1,v2,...`` lists the values of one parameter of the notebook's ``parameters``
cell; several ``--param`` options span their product (a single value fixes a parameter). Values are
split on the commas outside brackets and read as JSON or Python literals (``3``, ``1.5``, ``[1.0, 3.0]``,
``true``), anything else as a string (``toy``); quote an argument with brackets, which some shells
would otherwise expand. Every combination runs in its own folder ``DIR/<index>-<name>-<value>...``
with the notebook's ``output_dir`` set to that folder; the executed notebook is kept there.

A sweepable notebook writes ``results.json`` into its ``output_dir``: a list of flat rows (one per
setting it measured) or one flat object. The sweep joins every run's rows, prefixed by the run's
folder and parameter values, into ``DIR/sweep.csv`` and ``DIR/sweep.md``, and plots one metric
against the swept parameter in ``DIR/sweep.png`` (with error bars where the rows carry
``<metric>_lo`` and ``<metric>_hi``). A run whose folder already holds its ``results.json`` from the
same notebook and parameters is not executed again, so a stopped sweep continues where it stopped.
"""

from __future__ import annotations

import ast
import csv
import itertools
import json
import math
import re
from pathlib import Path

from ..io import format_cell, markdown_table  # markdown_table is also imported from here

RESULTS = "results.json"
RUN_FILE = "sweep_run.json"


def _value(text: str):
    text = text.strip()
    for read in (json.loads, ast.literal_eval):
        try:
            return read(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def _split(text: str) -> list[str]:
    """Split on the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_param(text: str) -> tuple[str, list]:
    """``"name=v1,v2,v3"`` -> ``("name", [v1, v2, v3])``, each value read as JSON/Python literal or string."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--param {text!r} is not of the form name=v1,v2,...; give a parameter name, '=' and its values.")
    parts = _split(values)
    if any(not p.strip() for p in parts):
        raise ValueError(f"--param {text!r} has an empty value; separate values with single commas "
                         "(lists go in brackets: name=[1.0],[3.0]).")
    return name, [_value(p) for p in parts]


def grid(params: dict[str, list]) -> list[dict]:
    """Every combination of the parameter values, the last parameter varying fastest."""
    return [dict(zip(params, combo)) for combo in itertools.product(*params.values())]


def _slug(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "_"


def run_name(index: int, params: dict) -> str:
    """The folder of one run: its index, then name-value pairs made safe for file names."""
    return "-".join([f"{index:03d}", *(f"{k}-{_slug(v)}" for k, v in params.items())])[:120]


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"The run wrote no {path.name} (looked for {path}); a sweepable notebook must save its "
                                f"results there, as a list of flat rows.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON; the notebook must write a list of flat rows.") from None
    rows = data if isinstance(data, list) else [data]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} holds no rows; the notebook must write a list of objects (one per setting) or one object.")
    return rows


def _scalar(value):
    """A one-element list stands for its element (e.g. guidance_scales=[3.0] for the scale 3.0)."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sweep(rows: list[dict], x: str, metric: str, groups: list[str], path, title: str = ""):
    """`metric` against `x`, one line per combination of the `groups` columns; saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [_scalar(r.get(x)) for r in rows]
    numeric = all(_number(v) for v in xs)
    ticks = list(dict.fromkeys(format_cell(v) for v in xs))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    lines: dict[str, list] = {}
    for r, xv in zip(rows, xs):
        label = ", ".join(f"{g}={format_cell(_scalar(r.get(g)))}" for g in groups)
        lines.setdefault(label, []).append((xv if numeric else ticks.index(format_cell(xv)), r))
    for label, points in lines.items():
        points.sort(key=lambda p: p[0])
        px = [p[0] for p in points]
        py = [float(p[1].get(metric, math.nan)) if _number(p[1].get(metric)) else math.nan for p in points]
        if all(_number(p[1].get(f"{metric}_lo")) and _number(p[1].get(f"{metric}_hi")) for p in points):
            err = [[y - p[1][f"{metric}_lo"] for y, p in zip(py, points)], [p[1][f"{metric}_hi"] - y for y, p in zip(py, points)]]
            ax.errorbar(px, py, yerr=err, marker="o", capsize=3, label=label or None)
        else:
            ax.plot(px, py, marker="o", label=label or None)
    if not numeric:
        ax.set_xticks(range(len(ticks)), ticks)
    ax.set(xlabel=x, ylabel=metric, title=title)
    if any(lines):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _default_metric(rows: list[dict], skip: set) -> str:
    numeric = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip and _number(rows[0].get(k))]
    if "strict" in numeric:
        return "strict"
    if not numeric:
        raise ValueError("The results hold no numeric column to plot; check the notebook's results.json.")
    return numeric[0]


def _check_sweep(pm, notebook: Path, params: dict) -> None:
    """One sentence, before anything runs, for a notebook or a grid that cannot be swept."""
    if not notebook.is_file():
        raise FileNotFoundError(f"There is no notebook {notebook}; give the path of an .ipynb file.")
    if not params:
        raise ValueError("Nothing to sweep: give at least one --param name=v1,v2,...")
    if "output_dir" in params:
        raise ValueError("output_dir is set by the sweep (one folder per run); sweep other parameters.")
    known = pm.inspect_notebook(str(notebook))
    unknown = [k for k in (*params, "output_dir") if k not in known]
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter {', '.join(unknown)} in its parameters cell "
                         f"(it has: {', '.join(known) or 'none'}).")


def _record(notebook: Path, run: dict) -> dict:
    return {"notebook": notebook.name, "parameters": run}


def _done(notebook: Path, folder: Path, run: dict) -> bool:
    """Whether `folder` holds the results of `run` of this notebook (its RUN_FILE, written after a run
    succeeds, records the notebook and the parameters)."""
    done = folder / RUN_FILE
    return done.is_file() and json.loads(done.read_text()) == _record(notebook, run) and (folder / RESULTS).is_file()


def _execute(pm, notebook: Path, folder: Path, run: dict, kernel_name, progress: bool) -> None:
    """Execute one run of the notebook into `folder` (dropping an older run's files first), then record it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).unlink(missing_ok=True)
    (folder / RESULTS).unlink(missing_ok=True)
    try:
        pm.execute_notebook(str(notebook), str(folder / notebook.name), cwd=str(folder), kernel_name=kernel_name,
                            parameters={**run, "output_dir": str(folder.resolve())}, progress_bar=progress)
    except pm.PapermillExecutionError as e:
        raise ValueError(f"Run {folder.name} failed ({e.ename}: {e.evalue}); its executed notebook "
                         f"{folder / notebook.name} shows where.") from None
    (folder / RUN_FILE).write_text(json.dumps(_record(notebook, run), indent=1))


def _write_sweep(out: Path, table: list[dict], header: str, x: str, metric: str, groups: list[str], title: str) -> None:
    """sweep.csv (non-scalar cells as JSON), sweep.md (`header`, then the table) and sweep.png."""
    with (out / "sweep.csv").open("w", newline="") as f:
        cols = list(dict.fromkeys(k for r in table for k in r))
        writer = csv.DictWriter(f, cols)
        writer.writeheader()
        writer.writerows({k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in r.items()} for r in table)
    (out / "sweep.md").write_text(header + markdown_table(table) + "\n")
    plot_sweep(table, x, metric, groups, out / "sweep.png", title=title)


def run_sweep(notebook, params: dict[str, list], output_dir, *, metric: str | None = None, x: str | None = None,
              kernel_name: str | None = None, progress: bool = True) -> list[dict]:
    """Execute `notebook` once per combination of `params`, then write sweep.csv, sweep.md and sweep.png.

    Returns the table rows. metric: the column to plot (default ``strict`` if present, else the first
    numeric results column). x: the column on the horizontal axis (default: the first swept parameter).
    kernel_name: the Jupyter kernel (default: the notebook's own).
    """
    import papermill as pm

    notebook, out = Path(notebook), Path(output_dir)
    _check_sweep(pm, notebook, params)
    runs = grid(params)
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for i, run in enumerate(runs):
        folder = out / run_name(i, run)
        if not _done(notebook, folder, run):
            if progress:
                print(f"[{i + 1}/{len(runs)}] {folder.name}", flush=True)
            _execute(pm, notebook, folder, run, kernel_name, progress)
        table += [{"run": folder.name, **run, **row} for row in _rows(folder / RESULTS)]
    x = x or next(iter(params))
    if not any(x in r for r in table):
        raise ValueError(f"There is no column {x!r} to put on the x axis; use a swept parameter or a results column.")
    metric = metric or _default_metric(table, {"run", *params})
    if not any(metric in r for r in table):
        raise ValueError(f"There is no column {metric!r} in the results; choose one of "
                         f"{', '.join(dict.fromkeys(k for r in table for k in r))}.")
    groups = [k for k in params if k != x and len({json.dumps(r.get(k)) for r in table}) > 1]
    header = f"Sweep of {notebook.name} over {', '.join(params)}: {len(runs)} run(s), {len(table)} row(s).\n\n"
    _write_sweep(out, table, header, x, metric, groups, f"{notebook.stem}: {metric}")
    return table
