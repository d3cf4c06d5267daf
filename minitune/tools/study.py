"""The blind study's votes, read back: win / tie / loss per arm pair with bootstrap intervals, and rater agreement.

Vote files are what the study page of :mod:`minitune.tools.compare` downloads: one rater, one study (its id
is a hash of the study's trials), one vote per image pair (``left``, ``right`` or ``tie``). A rater's
several files are merged (the latest vote on a pair counts). Win / tie / loss are the first arm's of
each pair (in the study's order of arms) against the second; a second table sets each arm against
all the others (how often people chose it, as in the paper's human study). The 95 % intervals are
percentile bootstraps that resample prompts and raters together. Agreement is measured on the pairs that two or
more raters voted on: pairwise percent agreement (pooled over rater pairs), Cohen's κ (mean over rater
pairs) and Fleiss' κ (with each pair's own number of raters), over the three answers left / tie / right.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

from ..io import markdown_table
from .compare import VOTES_FORMAT

CHOICES = ("left", "tie", "right")


def read_votes(path) -> dict:
    """One vote file, checked; a bad one raises a ValueError or FileNotFoundError with one sentence."""
    path = Path(path)
    again = "ask its rater to download the votes again"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give the JSON files the study page downloaded.")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise ValueError(f"{path} is empty; {again}.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}), perhaps cut short; {again}.")
    if not isinstance(data, dict) or data.get("format") != VOTES_FORMAT:
        raise ValueError(f'{path} is not a vote file of a minitune study (it lacks "format": "{VOTES_FORMAT}").')
    study, votes = data.get("study"), data.get("votes")
    if not isinstance(study, dict) or not isinstance(study.get("id"), str) or not isinstance(data.get("rater"), str) \
            or not data["rater"].strip() or not isinstance(votes, list):
        raise ValueError(f"{path} lacks its study id, its rater or its list of votes; {again}.")
    for k, v in enumerate(votes):
        if not (isinstance(v, dict) and isinstance(v.get("trial"), int) and v.get("choice") in CHOICES
                and isinstance(v.get("left"), str) and isinstance(v.get("right"), str) and v["left"] != v["right"]):
            raise ValueError(f"{path} has a malformed vote (number {k + 1}: it needs a trial number, two different arms "
                             f"and a choice among {', '.join(CHOICES)}); {again}.")
    if not votes:
        raise ValueError(f"{path} holds no votes: its rater downloaded the file before voting.")
    return data


def load_votes(paths) -> tuple[dict, list[str]]:
    """Read every file; keep those of the study most files belong to (the first file's on a tie).

    Returns ``({"study": ..., "raters": {rater: {trial: vote}}}, problems)``: one sentence per file left out."""
    if not paths:
        raise ValueError("Give at least one vote file (the JSON that the study page downloads).")
    good, problems = [], []
    for path in paths:
        try:
            good.append((Path(path), read_votes(path)))
        except (ValueError, FileNotFoundError) as e:
            problems.append(str(e))
    if not good:
        return {}, problems
    counts = Counter(d["study"]["id"] for _, d in good)
    main = max(counts, key=lambda s: (counts[s], -[d["study"]["id"] for _, d in good].index(s)))
    raters: dict[str, dict[int, dict]] = {}
    study, seen = None, {}
    for path, data in good:
        if data["study"]["id"] != main:
            problems.append(f"{path} was made for another study ({data['study']['id']}, not {main}); report it on its own.")
            continue
        sides = {v["trial"]: (v["left"], v["right"]) for v in data["votes"]}
        if clash := [t for t, lr in sides.items() if seen.get(t, lr) != lr]:
            problems.append(f"{path} names other arms for pair {clash[0]} than another file of the same study; it was "
                            "edited or is corrupt, so it is left out.")
            continue
        seen.update(sides)
        study = study or data["study"]
        mine = raters.setdefault(data["rater"].strip(), {})
        for v in data["votes"]:  # a rater's later vote on a pair replaces an earlier one
            if v["trial"] not in mine or str(v.get("time", "")) >= str(mine[v["trial"]].get("time", "")):
                mine[v["trial"]] = v
    return ({"study": study, "raters": raters} if raters else {}), problems


def _outcomes(raters: dict, first: str, second: str | None = None) -> tuple[np.ndarray, list[int]]:
    """Raters × trials of the pair (first, second), or of `first` against any arm where `second` is None:
    +1 first arm chosen, 0 tie, −1 the other, NaN not voted."""
    trials = sorted({t for votes in raters.values() for t, v in votes.items()
                     if first in (v["left"], v["right"]) and (second is None or second in (v["left"], v["right"]))})
    m = np.full((len(raters), len(trials)), np.nan)
    for r, votes in enumerate(raters.values()):
        for j, t in enumerate(trials):
            if t in votes:
                v = votes[t]
                m[r, j] = 0.0 if v["choice"] == "tie" else (1.0 if v[v["choice"]] == first else -1.0)
    return m, trials


def _shares(m: np.ndarray) -> np.ndarray:
    """Fractions of the voted cells of `m` that are +1, 0, −1."""
    n = np.sum(~np.isnan(m))
    return np.array([np.sum(m == x) for x in (1.0, 0.0, -1.0)]) / n if n else np.full(3, np.nan)


def bootstrap_shares(m: np.ndarray, rng: np.random.Generator, n_boot: int = 2000, level: float = 0.95) -> np.ndarray:
    """Percentile intervals, shape [3, 2], of the win / tie / loss fractions, resampling raters (rows) and prompts
    (columns) of `m` with replacement in each of `n_boot` draws from `rng`."""
    draws = np.array([_shares(m[np.ix_(rng.integers(m.shape[0], size=m.shape[0]), rng.integers(m.shape[1], size=m.shape[1]))])
                      for _ in range(n_boot)])
    a = (1 - level) / 2
    return np.nanquantile(draws, [a, 1 - a], axis=0).T


def agreement(raters: dict) -> dict:
    """Pairwise percent agreement, mean Cohen's κ and Fleiss' κ on the pairs two or more raters voted on."""
    names = list(raters)
    shared = sorted(t for t, n in Counter(t for v in raters.values() for t in v).items() if n >= 2)
    same = compared = 0
    kappas = []
    for a, b in combinations(names, 2):
        common = sorted(set(raters[a]) & set(raters[b]))
        if not common:
            continue
        x = [raters[a][t]["choice"] for t in common]
        y = [raters[b][t]["choice"] for t in common]
        agree = sum(i == j for i, j in zip(x, y))
        same, compared = same + agree, compared + len(common)
        p_e = sum(x.count(c) * y.count(c) for c in CHOICES) / len(common) ** 2
        if p_e < 1:
            kappas.append((agree / len(common) - p_e) / (1 - p_e))
    counts = np.array([[sum(1 for v in raters.values() if t in v and v[t]["choice"] == c) for c in CHOICES] for t in shared])
    fleiss = float("nan")
    if len(shared):
        n = counts.sum(1)
        p_bar = np.mean((counts * (counts - 1)).sum(1) / (n * (n - 1)))
        p_e = np.sum((counts.sum(0) / n.sum()) ** 2)
        fleiss = float((p_bar - p_e) / (1 - p_e)) if p_e < 1 else float("nan")
    return {"pairs_shared": len(shared), "rater_pairs": len(kappas), "percent_agreement": same / compared if compared else
            float("nan"), "cohen_kappa": float(np.mean(kappas)) if kappas else float("nan"), "fleiss_kappa": fleiss}


def report(paths, seed: int = 0, n_boot: int = 2000) -> tuple[str, dict, list[str]]:
    """The study's table from vote files: ``(markdown, data, problems)``, problems one sentence per file left out."""
    votes, problems = load_votes(paths)
    if not votes:
        if len(problems) == 1:
            raise ValueError(problems[0])
        raise ValueError(f"None of the {len(problems)} vote files could be read, so there is nothing to report: "
                         + "; ".join(p.rstrip(".") for p in problems) + ".")
    study, raters = votes["study"], votes["raters"]
    arms = list(study.get("arms") or [])
    rng = np.random.default_rng(seed)
    rows, overall = [], []
    for (first, second), out in [(pair, rows) for pair in combinations(arms, 2)] + [((a, None), overall) for a in arms]:
        m, trials = _outcomes(raters, first, second)
        if trials:
            out.append({"first": first, "second": second, "prompts": len(trials), "votes": int(np.sum(~np.isnan(m))),
                        "shares": _shares(m).tolist(), "ci": bootstrap_shares(m, rng, n_boot).tolist()})
    agree = agreement(raters) if len(raters) > 1 else None
    data = {"study": study, "raters": sorted(raters), "seed": seed, "n_boot": n_boot, "pairs": rows, "arms": overall,
            "agreement": agree}
    return _markdown(data), data, problems


def _cells(row: dict) -> list:
    """A table row of the report: the two arms, the counts, and each share with its interval in %."""
    shares = [f"{100 * s:.1f} ({100 * lo:.1f}–{100 * hi:.1f})" for s, (lo, hi) in zip(row["shares"], row["ci"])]
    return [row["first"], row["second"] or "any other arm", row["prompts"], row["votes"], *shares]


def _markdown(data: dict) -> str:
    """The report as Markdown: a header sentence, the table and the agreement sentence."""
    votes = sum(r["votes"] for r in data["pairs"])
    voted = sum(r["prompts"] for r in data["pairs"])
    raters = len(data["raters"])
    lines = [f"Study {data['study']['id']} (page seed {data['study'].get('seed')}): {raters} rater{'s' * (raters != 1)}, "
             f"{voted} of {data['study'].get('trials', voted)} image pairs voted, {votes} votes. Wins, ties and losses "
             f"are the first arm's against the second; 95 % bootstrap intervals resample prompts and raters "
             f"({data['n_boot']} resamples, seed {data['seed']}).", "",
             markdown_table([_cells(r) for r in data["pairs"]], ["first arm", "second arm", "prompts", "votes",
                            "wins % (95 % CI)", "ties % (95 % CI)", "losses % (95 % CI)"], align="llrrrrr"), "",
             # each arm against all the others: how often people chose it, the paper's human score
             markdown_table([_cells(r) for r in data["arms"]], ["arm", "against", "prompts", "votes", "chosen % (95 % CI)",
                            "ties % (95 % CI)", "other chosen % (95 % CI)"], align="llrrrrr")]
    a = data["agreement"]
    if a is None:
        lines += ["", "Agreement between raters needs two or more raters; these votes are one rater's."]
    elif not a["pairs_shared"]:
        lines += ["", "Agreement between raters needs pairs that two raters both voted on; these raters share none."]
    else:
        lines += ["", f"Agreement between raters, on the {a['pairs_shared']} image pairs that two or more voted on "
                  f"(answers left / tie / right): {100 * a['percent_agreement']:.1f} % pairwise percent agreement, "
                  f"Cohen's κ {a['cohen_kappa']:.2f} (mean over {a['rater_pairs']} rater pair{'s' * (a['rater_pairs'] != 1)}), "
                  f"Fleiss' κ {a['fleiss_kappa']:.2f}."]
    return "\n".join(lines)
