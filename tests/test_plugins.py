"""The plug-in registry: the Shapes world and the tiny test models reach the core only through it."""

import tomllib
from importlib import import_module
from pathlib import Path

from minitune.cli import build_parser
from minitune.judges import available_judges
from minitune.models import world_of
from minitune.plugins import GROUP, registry

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _subparsers(parser):
    return next(a for a in parser._actions if a.dest == "command").choices


def test_pyproject_names_each_plugin_by_a_register_function():
    plugins = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][GROUP]
    assert plugins == {"shapes": "minitune.toy.plugin:register", "testing": "minitune.testing:register"}
    for target in plugins.values():
        module, name = target.split(":")
        assert callable(getattr(import_module(module), name))


def test_the_registry_holds_the_shapes_world_its_judge_and_the_tiny_judges():
    reg = registry()
    assert world_of("toy") is reg.worlds["ShapesPipeline"] and world_of("owner/name") is None
    assert "oracle" in reg.judges and {("blip-vqa", "tiny"), ("clipscore", "tiny")} <= set(reg.judge_models)


def test_the_plugins_commands_and_judges_drive_the_parser():
    commands = _subparsers(build_parser())
    assert {"toy-train", "toy-ship", "toy-eval", "experiment"} <= set(commands)
    for name in ("evaluate", "build"):
        scorer = next(a for a in commands[name]._actions if a.dest == "scorer")
        assert list(scorer.choices) == list(available_judges())
