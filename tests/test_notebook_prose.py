"""Numbers on a page come from code: a notebook's Markdown cells state no measured number.

A measured number typed into prose goes stale the moment a run prints another one, and the page then
contradicts itself. So the Markdown cells of the notebooks may name settings, constants and labels,
but a measurement (a percentage, a change Δ, a signed difference, a ratio such as 2.3×, a decimal
value) has to be printed, or written into a sentence, by a code cell. The rule, on Markdown with its
code (fenced blocks and `inline code`), math ($…$) and link targets removed:

- a number followed by % is measured, unless it is the confidence level (followed by CI, interval,
  confidence or bootstrap: "95 % CI");
- a number followed by × is a ratio, unless a number follows (32×32 is a size);
- a number with an explicit sign (+6.4, −0.30, ±0.2) or after Δ is a difference;
- a decimal number (18.5) is a value, unless a label precedes it that makes it a name: a figure,
  table, section or equation number (Figure 2.3), a model or version (SD 2.1, SD-2.1, arXiv 2405.20759),
  or a setting (CFG 7.5, guidance 2.0, lr 1e-4 is not a decimal).

Integers on their own (years, counts of prompts or steps, N = 50, rank 32, t > 50) pass: they are
settings or definitions, not findings.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

_NUM = r"\d+(?:[.,]\d+)*"
_LABEL = (r"(?:Figure|Fig\.|Table|Section|section|§|Eq\.|equation|chapter|Chapter|SD-?|SDXL|SD3|"
          r"Stable Diffusion|arXiv:?|version|v|Python|CFG|guidance(?: scale)?|scale|g\s*=|ICLR)\s*$")
MEASURED = {
    "percentage": re.compile(rf"{_NUM}\s*%(?!\s*(?:CI|interval|confidence|bootstrap))"),
    "ratio": re.compile(rf"{_NUM}\s*×(?!\s*\d)|\b\d+\.\d+x\b"),
    "signed difference": re.compile(rf"(?<![\w.+])[+−]{_NUM}|±\s?{_NUM}|Δ\s*[=:]?\s*[-+−]?{_NUM}|(?<=\s)-\d+\.\d+"),
    "decimal value": re.compile(r"(?<![\w.\-/])\d+\.\d+(?![\w.]*\d)"),
}


def _prose(markdown: str) -> str:
    """The Markdown's prose: code, math, link targets and HTML comments removed (directive fences kept)."""
    text = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    # fenced code blocks, but not MyST directives ({admonition}, {dropdown}, ...), whose body is prose
    text = re.sub(r"^(```+|~~~+)(?!\{)[^\n]*\n.*?^\1\s*$", " ", text, flags=re.S | re.M)
    text = re.sub(r"^(```+|~~~+)\{[^}]*\}[^\n]*$|^(```+|~~~+)\s*$|^:\w+:.*$", " ", text, flags=re.M)
    text = re.sub(r"(`+).+?\1", " ", text, flags=re.S)
    text = re.sub(r"\$\$.+?\$\$|\$[^$\n]+\$", " ", text, flags=re.S)
    return re.sub(r"\]\([^)]*\)|https?://\S+", "] ", text)


def measured_numbers(markdown: str) -> list[tuple[str, str]]:
    """Every (kind, text) in `markdown` that reads as a measured number under the module's rule."""
    text, found = _prose(markdown), []
    for kind, pattern in MEASURED.items():
        for m in pattern.finditer(text):
            if kind == "decimal value" and re.search(_LABEL, text[max(0, m.start() - 40):m.start()]):
                continue
            found.append((kind, m.group(0).strip()))
    return found


@pytest.mark.parametrize("text", [
    "Figure 2.3 shows it.", "SD-2.1 and SD 2.1 base", "a 95 % CI", "a 95 % confidence interval",
    "on a 32×32 canvas", "N = 50, top-1, rank 32, t > 50 of 1000, in 2025", "`lr = 1e-4`, `-p n 100`",
    "$\\kappa_t = 0.5$", "at CFG 7.5", "ICLR 2025, arXiv 2405.20759", "chapter 01 and 02",
    "```bash\npapermill a.ipynb -p x 0.5\n```", "see [the file](book/results/x_0.5.json)", "80 prompts × 16 candidates",
    "DPM-Solver++ 2M",
])
def test_the_rule_lets_labels_settings_and_code_pass(text):
    assert measured_numbers(text) == []


@pytest.mark.parametrize("text, kind", [
    ("the aligned image wins 75 %", "percentage"), ("wins 75% of the time", "percentage"),
    ("a speed-up of 2.3×", "ratio"), ("2.3x faster", "ratio"), ("an MI gap of +6.4", "signed difference"),
    ("ρ(area) = −0.30", "signed difference"), ("Δ 13.2 points", "signed difference"),
    ("mean MI 18.5 against 57.7", "decimal value"),
    ("```{admonition} Box\nIt gains 13 %.\n```", "percentage"),
])
def test_the_rule_catches_measured_numbers(text, kind):
    assert kind in [k for k, _ in measured_numbers(text)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cells_state_no_measured_number(path):
    cells = json.loads(path.read_text())["cells"]
    found = [(i, kind, text) for i, c in enumerate(cells) if c["cell_type"] == "markdown"
             for kind, text in measured_numbers("".join(c["source"]))]
    assert not found, (f"{path.name}: Markdown states measured numbers; print them or write the sentence from a "
                       "code cell, or quote a committed results file: "
                       + "; ".join(f"cell {i}: {kind} {text!r}" for i, kind, text in found))
