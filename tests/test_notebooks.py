"""Every notebook is committed clean and runs top to bottom with its fast preset.

The run here is the one execution of each notebook per CI run (only the notebooks with cells
tagged for nbval run once more, in `make nbval`). papermill executes the notebook
with its default parameters (no injected cell, so the executed copy shows the same code as the
committed one) in a scratch folder and, when it succeeds, the executed copy is kept in
``_build/executed/notebooks/`` (``MINITUNE_EXECUTED_DIR`` moves ``_build/executed``). ``make book``
builds the book from those copies without executing anything again, and ``make nbval`` re-checks
the cells tagged ``nbval-check-output``. Wall-clock and CPU time of each run are kept in
``timings.json`` and ``timings.txt`` next to the copies and printed at the end of the module.

The repository address lives in one place, ``_config.yml``'s ``repository`` (``url`` and ``branch``), which
Jupyter Book's launch buttons read too. Each notebook's Colab badge and its install cell's ``REPOSITORY``
constant must match it; ``python tests/test_notebooks.py --sync-links`` rewrites them from it.
"""

import ast
import json
import os
import re
import resource
import shutil
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXECUTED = Path(os.environ.get("MINITUNE_EXECUTED_DIR", ROOT / "_build" / "executed"))
CELL_TIMEOUT_S = 600  # per cell; a fast preset needs a small fraction of it
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+")
REPOSITORY = re.compile(r'^REPOSITORY = "[^"]*"', re.M)


def repository() -> tuple[str, str]:
    """The repository's address and branch, from ``_config.yml`` (the one place they are written)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return config["url"].rstrip("/"), config.get("branch", "main")


def expected_links(path) -> tuple[str, str]:
    """A notebook's Colab badge URL and its install cell's ``REPOSITORY`` line, as ``_config.yml`` makes them."""
    url, branch = repository()
    slug = re.sub(r"^https://github\.com/", "", url)
    return (f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{Path(path).name}",
            f'REPOSITORY = "{url}"')


def sync_links() -> list[str]:
    """Rewrite every notebook's badge and ``REPOSITORY`` line from ``_config.yml``; returns the notebooks changed."""
    changed = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        badge, constant = expected_links(path)
        before = [c.source for c in nb.cells]
        nb.cells[0].source = BADGE.sub(badge, nb.cells[0].source)
        for cell in nb.cells:
            if cell.cell_type == "code" and "%pip install" in cell.source:
                cell.source = REPOSITORY.sub(constant, cell.source)
        if [c.source for c in nb.cells] != before:
            nbformat.write(nb, path)
            changed.append(path.name)
    return changed


def _cells(path, kind):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


def _source(cell) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_parameters_cell(path):
    code = _cells(path, "code")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path.name} has stored outputs"
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), f"{path.name} has no parameters cell"
    first = json.loads(path.read_text())["cells"][0]
    assert first["cell_type"] == "markdown" and _source(first).startswith("# "), "the first cell must be the title"
    badge = re.search(r"colab\.research\.google\.com/github/[^)\s]*/(notebooks/[^)\s]+\.ipynb)", _source(first))
    assert badge and badge.group(1) == f"notebooks/{path.name}", "the Colab badge must open this notebook"
    assert any('"google.colab" in sys.modules' in _source(c) and "%pip install" in _source(c) for c in code), \
        "the install cell must be guarded by `if \"google.colab\" in sys.modules`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_links_read_the_repository_from_config(path):
    """Badge and install cell name the repository of ``_config.yml``; fix with ``--sync-links``."""
    badge, constant = expected_links(path)
    cells = json.loads(path.read_text())["cells"]
    assert BADGE.findall(_source(cells[0])) == [badge], \
        f"{path.name}: the Colab badge must be {badge} (python tests/test_notebooks.py --sync-links)"
    install = [_source(c) for c in cells if c["cell_type"] == "code" and "%pip install" in _source(c)]
    assert len(install) == 1 and REPOSITORY.findall(install[0]) == [constant], \
        f"{path.name}: the install cell must define {constant} (python tests/test_notebooks.py --sync-links)"
    assert re.search(r'%pip install [^\n]*"minitune @ git\+\{REPOSITORY\}"', install[0]), \
        f"{path.name}: the install cell must install from {{REPOSITORY}}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_defines_no_functions_or_classes(path):
    """Notebooks are thin: logic lives in the package (IPython magics are blanked before parsing)."""
    for cell in _cells(path, "code"):
        src = re.sub(r"^(\s*)[%!].*$", r"\1pass", _source(cell), flags=re.M)
        defs = [n for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name} defines {', '.join(n.name for n in defs)}; move it into minitune"


CODE_COLUMNS = 77  # what the book's code column shows at 1280 px without scrolling (tests/browser_check.py measures it)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_page_column(path):
    long = [line for cell in _cells(path, "code") for line in _source(cell).splitlines() if len(line) > CODE_COLUMNS]
    assert not long, f"{path.name}: wrap these lines at {CODE_COLUMNS} columns: {long}"


@pytest.fixture(scope="module")
def timings(request):
    """Collects {notebook: {"wall_s", "cpu_s"}}, saves it and prints one line per notebook."""
    record = {}
    yield record
    if not record:
        return
    file = EXECUTED / "timings.json"
    saved = json.loads(file.read_text()) if file.is_file() else {}
    saved = {k: v for k, v in {**saved, **record}.items() if (ROOT / "notebooks" / f"{k}.ipynb").is_file()}
    file.write_text(json.dumps(saved, indent=1, sort_keys=True))
    lines = [f"{name:28s} {t['wall_s']:7.1f} s wall {t['cpu_s']:7.1f} s CPU" for name, t in sorted(saved.items())]
    lines.append(f"{'total':28s} {sum(t['wall_s'] for t in saved.values()):7.1f} s wall "
                 f"{sum(t['cpu_s'] for t in saved.values()):7.1f} s CPU")
    (EXECUTED / "timings.txt").write_text("\n".join(lines) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # print now, past pytest's output capture
            reporter.write_line("\nnotebooks executed with their fast preset (papermill):")
            for line in lines:
                reporter.write_line("  " + line)


def _children_cpu_s() -> float:
    """CPU seconds of finished child processes (the kernel, once papermill has shut it down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_with_fast_preset(path, tmp_path, timings):
    kept = EXECUTED / "notebooks" / path.name
    kept.unlink(missing_ok=True)  # a failed run must not leave an older copy for the book
    cpu, wall = _children_cpu_s(), time.perf_counter()
    pm.execute_notebook(str(path), str(tmp_path / path.name), cwd=str(tmp_path), kernel_name="python3",
                        progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
    timings[path.stem] = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_children_cpu_s() - cpu, 1)}
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / path.name, kept)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--sync-links"]:
        sys.exit("usage: python tests/test_notebooks.py --sync-links")
    print("rewrote the links of " + (", ".join(sync_links()) or "no notebook"))
