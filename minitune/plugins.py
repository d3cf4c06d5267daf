"""Plug-ins: parts that add worlds, judges and commands to minitune without the core importing them.

A plug-in is a function ``register(registry)`` named by an entry point of the ``minitune.plugins``
group (``[project.entry-points."minitune.plugins"]`` in pyproject.toml). minitune ships two: the
Shapes world (:mod:`minitune.toy.plugin`) and the tiny test models (:mod:`minitune.testing`). The
core asks :func:`registry` for what they added, so that it never names them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

GROUP = "minitune.plugins"


@dataclass(frozen=True)
class World:
    """A world of prompts with its own pipeline class (the Shapes world), as the core sees it.

    title: its name in sentences; pipeline: the class name its folders' model_index.json names; names: model
    names that mean its shipped model (e.g. "toy"); load(model, device, dtype): the pipeline;
    check_prompt(prompt): raises a one-sentence ValueError for a prompt the world cannot read;
    train_prompts(n, seed) and eval_prompts(per_category, seed): its default prompts; controls: the selectors
    it adds to the random-k control set (its oracle); judges: the judges that read only its images, the first
    its default; metric: the metric of their tables; verdicts: the pool fields a `build` report averages."""

    title: str
    pipeline: str
    names: tuple[str, ...]
    load: Callable
    check_prompt: Callable[[str], None]
    train_prompts: Callable[..., list]
    eval_prompts: Callable[..., list]
    controls: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()
    metric: str = ""
    verdicts: tuple[str, ...] = ()


@dataclass
class Registry:
    """What the plug-ins added: worlds by pipeline class name, judges by name, a learned judge's named weights
    by (judge, model id), and functions that each add a subcommand to the ``minitune`` parser."""

    worlds: dict[str, World] = field(default_factory=dict)
    judges: dict[str, Callable] = field(default_factory=dict)
    judge_models: dict[tuple[str, str], Callable] = field(default_factory=dict)
    commands: list[Callable] = field(default_factory=list)


@functools.cache
def registry() -> Registry:
    """Every installed plug-in, registered once (in the order of their names)."""
    reg = Registry()
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        ep.load()(reg)
    return reg
