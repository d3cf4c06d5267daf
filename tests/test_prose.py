"""The sentence helpers of the book's pages: the words follow the numbers they print."""

import pytest

from minitune.tools import prose


def test_with_interval_and_reading():
    assert prose.with_interval(0.132, 0.066, 0.193) == "+13.2 points (95 % CI +6.6 to +19.3)"
    assert prose.interval_reading(0.01, 0.2).startswith("a rise")
    assert prose.interval_reading(-0.2, -0.01).startswith("a fall")
    assert prose.interval_reading(-0.1, 0.2).startswith("no evidence")
    with pytest.raises(ValueError, match="lower end"):
        prose.interval_reading(0.3, 0.1)


def test_interval_position_and_overlap():
    assert prose.interval_position(-0.2, -0.1) == "below zero" and prose.interval_position(0.1, 0.2) == "above zero"
    assert prose.interval_position(0.0, 0.09) == "with zero at its lower end"
    assert prose.interval_position(-0.09, 0.0) == "with zero at its upper end"
    assert prose.interval_position(-0.1, 0.2) == "across zero"
    with pytest.raises(ValueError, match="lower end"):
        prose.interval_position(0.3, 0.1)
    assert prose.overlap((0, 1), (1, 2)) and not prose.overlap((0, 1), (1.5, 2))


def test_compare_verb_follows_the_printed_digits():
    assert prose.compare("a", 0.25, "b", 0.5) == "a (25.0 %) is below b (50.0 %)"
    assert prose.compare("a", 0.5, "b", 0.25).endswith("is above b (25.0 %)")
    # equal at the printed precision: level, never "above" beside two equal numbers
    assert "is level with" in prose.compare("a", 0.50001, "b", 0.5)
    assert prose.compare("MI", 3.0, "random", 2.0, scale=1, unit=" nats") == "MI (3.0 nats) is above random (2.0 nats)"


def test_boxes_and_verdict():
    box = prose.from_results("experiment", "The oracle arm gains.")
    assert box.startswith("```{admonition} From the committed full run: book/results/experiment.json\n")
    assert box.rstrip().endswith("```")
    assert "runs: book/results/a.json, book/results/b.json\n" in prose.from_results(["a", "b"], "x")
    with pytest.raises(ValueError, match="backticks"):
        prose.admonition("`x`", "body")
    assert prose.live_run("x").startswith("```{admonition} Your turn: a small, noisy run\n:class: tip")
    assert prose.verdict(["one", "two", " ", "three"]) == "**Verdict**\n\n- one\n- two\n- three\n"
    with pytest.raises(ValueError):
        prose.verdict([])
    with pytest.raises(ValueError):
        prose.from_results([], "x")
