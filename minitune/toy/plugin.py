"""The Shapes world's plug-in: what it adds to minitune's core, which never imports this package.

It registers the world (its pipeline class, the shipped model's name ``"toy"``, its loader, grammar and
prompts), its exact judge as the scorer ``oracle`` and its commands (``toy-train``, ``toy-ship``,
``toy-eval``, ``experiment``). pyproject.toml names :func:`register` as an entry point of the
``minitune.plugins`` group.
"""

from __future__ import annotations

from ..models import resolve_dtype
from ..plugins import World
from . import cli, world
from .pipeline import load_pipeline
from .scoring import oracle_scorer

NAMES = ("toy",)


def _load(model, device, dtype="auto"):
    """The shipped model (a name of NAMES or None) or a saved Shapes pipeline folder, fp32 for "auto"."""
    return load_pipeline(None if model is None or str(model) in NAMES else model, device=device,
                         dtype=resolve_dtype(dtype, device, shapes=True))


def _oracle(device="auto", model_id: str | None = None, dtype=None):
    if model_id is not None:
        raise ValueError("The oracle is the Shapes world's exact judge and takes no model id; drop the judge's model option.")
    return oracle_scorer


def _check_prompt(prompt: str) -> None:
    world.parse(prompt)


SHAPES = World(title="Shapes", pipeline="ShapesPipeline", names=NAMES, load=_load, check_prompt=_check_prompt,
               train_prompts=world.train_prompts, eval_prompts=world.eval_prompts, controls=("oracle",),
               judges=("oracle",), metric="strict", verdicts=("strict", "soft"))


def register(registry) -> None:
    registry.worlds[SHAPES.pipeline] = SHAPES
    registry.judges["oracle"] = _oracle
    registry.commands.extend(cli.COMMANDS)
