"""One vocabulary for the `minitune` command: new spellings, old ones as deprecated aliases, choices from registries."""

import pytest

from minitune.cli import _parse, build_parser
from minitune.finetune import OBJECTIVES
from minitune.judges import available_judges
from minitune.selection import SELECTORS, SIGNALS, sample_options

OLD_AND_NEW = [  # (command line with the old spelling, the same with the new one, the parsed name, its value)
    ("build --cfg 3", "build --guidance-scale 3", "cfg", 3.0),
    ("build --steps 5", "build --sample-steps 5", "steps", 5),
    ("build --prompts p.txt", "build --prompt-file p.txt", "prompts", "p.txt"),
    ("build --selector random", "build --selectors random", "selectors", ["random"]),
    ("evaluate --steps 5", "evaluate --sample-steps 5", "steps", 5),
    ("evaluate --preset paper", "evaluate --recipe paper", "recipe", "paper"),
    ("finetune --data-dir d --output-dir o --steps 7", "finetune --data-dir d --output-dir o --train-steps 7", "steps", 7),
    ("mi --steps 2", "mi --sample-steps 2", "steps", 2),
    ("toy-train --steps 9", "toy-train --train-steps 9", "steps", 9),
    ("toy-eval --steps 2", "toy-eval --sample-steps 2", "steps", 2),
    ("experiment --preset tiny", "experiment --recipe tiny", "recipe", "tiny"),
    ("experiment --steps 4", "experiment --sample-steps 4", "steps", 4),
    ("compare out --prompts 3", "compare out --n-prompts 3", "prompts", 3),
]


@pytest.mark.parametrize("old,new,name,value", OLD_AND_NEW, ids=[case[0] for case in OLD_AND_NEW])
def test_an_old_spelling_still_works_and_prints_one_note(capsys, old, new, name, value):
    args = _parse(old.split())
    note = capsys.readouterr().err.strip()
    assert getattr(args, name) == value
    assert len(note.splitlines()) == 1 and "deprecated" in note and new.split()[-2] in note
    assert getattr(_parse(new.split()), name) == value
    assert capsys.readouterr().err == ""


def test_a_recipe_sets_defaults_below_the_options_given(capsys):
    args = _parse("build --recipe paper --candidates 4".split())
    assert (args.candidates, args.top_k, args.steps, args.cfg) == (4, 1, 100, 7.5)
    _parse("build --preset paper".split())
    assert capsys.readouterr().err.count("deprecated") == 1  # parsed once


def _command(name: str):
    return next(a for a in build_parser()._actions if a.dest == "command").choices[name]


def _choices(command: str, dest: str):
    """The choices of the option stored in `dest` (the first with that name: the new spelling, before its alias)."""
    return list(next(a for a in _command(command)._actions if a.dest == dest).choices)


def test_the_registries_give_the_choices():
    assert _choices("build", "selectors") == list(SELECTORS)
    assert _choices("experiment", "selectors") == list(SIGNALS)
    assert _choices("finetune", "objective") == _choices("experiment", "objective") == list(OBJECTIVES)
    assert _choices("build", "scorer") == _choices("evaluate", "scorer") == list(available_judges())
    for command in ("build", "experiment"):
        assert set(sample_options(SELECTORS).values()) <= {a.dest for a in _command(command)._actions}
