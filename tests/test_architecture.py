"""The import graph of minitune, read from the source (deferred imports inside functions included)."""

import ast
from pathlib import Path

import minitune

ROOT = Path(minitune.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("minitune", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The minitune modules `name` imports anywhere in its source (a name imported from a package that is a
    module of it counts as that module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _reach(name: str) -> set[str]:
    """Every module `name` imports, directly or through others."""
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _cycles() -> set[frozenset[str]]:
    """The import cycles of GRAPH, each as the set of modules that reach one another."""
    reach = {name: _reach(name) for name in GRAPH}
    return {frozenset({name} | {m for m in reach[name] if name in reach[m]}) for name in GRAPH if name in reach[name]}


def test_the_import_graph_has_no_cycle():
    assert not _cycles()


def test_families_do_not_import_the_stages_that_use_them():
    """The family seam sits below sampling, selection and fine-tuning: a family imports none of them."""
    stages = {"minitune.sampling", "minitune.selection", "minitune.finetune", "minitune.evaluate", "minitune.cli"}
    for name, imported in GRAPH.items():
        if name.startswith("minitune.families"):
            assert not imported & stages, name


def test_no_module_outside_the_toy_imports_it():
    """The Shapes world is a plug-in: the core finds its world, judge and commands through the plug-in registry
    and its family and hooks through the pipeline."""
    importers = {name for name, imported in GRAPH.items()
                 if not name.startswith("minitune.toy") and any(m.startswith("minitune.toy") for m in imported)}
    assert not importers


def test_no_module_imports_the_test_models():
    """The tiny test pipelines and judges reach the judges' registry only as a plug-in."""
    assert not {name for name, imported in GRAPH.items() if "minitune.testing" in imported}


def test_the_method_does_not_import_its_tooling():
    """Page and study tools (minitune.tools) serve the command line and the Shapes experiment; the method's
    modules (sampling, selection, fine-tuning, evaluation, ...) import none of them."""
    users = {"minitune.cli"} | {name for name in GRAPH if name.startswith(("minitune.tools", "minitune.toy"))}
    assert not {name for name, imported in GRAPH.items()
                if name not in users and any(m.startswith("minitune.tools") for m in imported)}
