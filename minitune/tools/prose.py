"""Sentences for the book's pages, written from the numbers that the page prints.

A chapter's prose must not disagree with its own tables, so a sentence that states a finding is
written by the cell that computed the finding. These helpers phrase the few comparisons the pages
make (a change with its interval, one value against another, a verdict) and wrap text in the boxes
that tell a reader where a number comes from: a committed full-run file in ``book/results/`` or a
small, noisy live run. They return Markdown (MyST: the boxes are Jupyter Book admonitions), for
``IPython.display.Markdown``.
"""

from __future__ import annotations

from collections.abc import Sequence

LIVE_TITLE = "Your turn: a small, noisy run"


def signed(value: float, digits: int = 1, scale: float = 100.0) -> str:
    """`value` × `scale` with its sign, e.g. ``signed(0.132) == "+13.2"`` (points when value is a fraction)."""
    return f"{scale * value:+.{digits}f}"


def with_interval(value: float, lo: float, hi: float, *, unit: str = " points", digits: int = 1,
                  scale: float = 100.0) -> str:
    """A change and its 95 % interval in words: ``"+13.2 points (95 % CI +6.6 to +19.3)"``."""
    if lo > hi:
        raise ValueError(f"The interval's lower end {lo} is above its upper end {hi}; pass (lo, hi) in order.")
    return (f"{signed(value, digits, scale)}{unit} (95 % CI {signed(lo, digits, scale)} to "
            f"{signed(hi, digits, scale)})")


def interval_reading(lo: float, hi: float) -> str:
    """What an interval of a change says: above zero, below zero, or no evidence of a change."""
    if lo > hi:
        raise ValueError(f"The interval's lower end {lo} is above its upper end {hi}; pass (lo, hi) in order.")
    if lo > 0:
        return "a rise: the whole interval is above zero"
    if hi < 0:
        return "a fall: the whole interval is below zero"
    return "no evidence of a change: the interval contains zero"


def interval_position(lo: float, hi: float) -> str:
    """Where an interval lies against zero: ``"below zero"``, ``"above zero"``, ``"across zero"``, or with zero
    at one end (a bootstrap interval of a difference of counts can end exactly there)."""
    if lo > hi:
        raise ValueError(f"The interval's lower end {lo} is above its upper end {hi}; pass (lo, hi) in order.")
    return ("below zero" if hi < 0 else "above zero" if lo > 0 else "with zero at its lower end" if lo == 0
            else "with zero at its upper end" if hi == 0 else "across zero")


def overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two intervals (lo, hi) share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def compare(name_a: str, a: float, name_b: str, b: float, *, digits: int = 1, scale: float = 100.0,
            unit: str = " %") -> str:
    """One value against another in a sentence whose verb follows the numbers.

    ``compare("MI's top-1", 0.25, "the pool mean", 0.5)`` gives
    ``"MI's top-1 (25.0 %) is below the pool mean (50.0 %)"``. Values equal at the printed precision
    are called level, so the sentence never contradicts the digits beside it.
    """
    fa, fb = f"{scale * a:.{digits}f}", f"{scale * b:.{digits}f}"
    verb = "is level with" if fa == fb else ("is above" if a > b else "is below")
    return f"{name_a} ({fa}{unit}) {verb} {name_b} ({fb}{unit})"


def admonition(title: str, body: str, kind: str = "note") -> str:
    """A Jupyter Book admonition box titled `title` around the Markdown `body`; `kind` is its CSS class."""
    if not title.strip() or "`" in title:
        raise ValueError("An admonition needs a title that says what the box holds, without backticks (they would end "
                         "the fence's title and leave the box unparsed).")
    return f"```{{admonition}} {title}\n:class: {kind}\n{body.strip()}\n```\n"


def from_results(name: str | Sequence[str], body: str) -> str:
    """A box that quotes the committed full run(s) `name` (``book/results/<name>.json``) by name."""
    names = [name] if isinstance(name, str) else list(name)
    if not names:
        raise ValueError("Name the committed results file(s) that the box quotes.")
    # no backticks: a backtick fence's title may not contain any (CommonMark), or the box is not parsed
    files = ", ".join(f"book/results/{n}.json" for n in names)
    return admonition(f"From the committed full run{'s' if len(names) > 1 else ''}: {files}", body, "note")


def live_run(body: str) -> str:
    """A box for a live fast-preset run: it says what the run shows and claims nothing."""
    return admonition(LIVE_TITLE, body, "tip")


def verdict(bullets: Sequence[str], title: str = "Verdict") -> str:
    """The end of a chapter: a bold title and one Markdown bullet per sentence (a chapter gives three)."""
    bullets = [b.strip() for b in bullets if b and b.strip()]
    if not bullets:
        raise ValueError("A verdict needs at least one sentence.")
    return f"**{title}**\n\n" + "\n".join(f"- {b}" for b in bullets) + "\n"
