import numpy as np
import pytest
import torch

from minitune.evaluate import EvalResult, comparison_table, diversity, evaluate_pipeline
from minitune.testing import tiny_sd_pipeline
from minitune.toy import world
from minitune.toy.scoring import oracle_scorer

from conftest import PROMPTS


def test_diversity_zero_for_copies_and_rms_for_opposites():
    x = torch.zeros(3, 3, 4, 4)
    assert diversity(x) == 0.0
    pair = torch.stack([-torch.ones(3, 4, 4), torch.ones(3, 4, 4)])
    assert diversity(pair) == pytest.approx(1.0)
    assert np.isnan(diversity(x[:1]))


@pytest.fixture(scope="module")
def result(toy):
    res, cands = evaluate_pipeline(toy, PROMPTS, 3, num_inference_steps=2, progress=False)
    return res, cands


def test_evaluate_pipeline_records_and_summary(result, toy):
    res, cands = result
    assert len(res.records) == 6 and cands.images.shape[0] == 6
    assert set(res.metrics) == {"strict", "soft", "well_formed", "area", *world.FAILURE_MODES}
    verdicts = world.evaluate(cands.images, cands.prompts).records
    for r, v in zip(res.records, verdicts):  # the failure modes as 0/1 metrics
        assert {m for m in world.FAILURE_MODES if r[m]} == set(v["failures"])
    s = res.summary()
    assert set(s) == {"color", "count", "all"} and s["all"]["n_images"] == 6
    lo, hi = s["all"]["soft_ci"]
    assert lo <= s["all"]["soft"] <= hi
    again, _ = evaluate_pipeline(toy, PROMPTS, 3, num_inference_steps=2, progress=False)
    assert again.records == res.records


def test_pluggable_scorer_and_clash(toy):
    bright = {"brightness": lambda im, p: {"bright": im.mean((1, 2, 3)).numpy()}}
    res, cands = evaluate_pipeline(toy, PROMPTS[:1], 2, num_inference_steps=2, scorers=bright, progress=False)
    assert res.metrics == ["bright"]
    assert res.records[0]["bright"] == pytest.approx(float(cands.images[0].mean()))
    clash = {"a": lambda im, p: {"x": np.zeros(len(p))}, "b": lambda im, p: {"x": np.ones(len(p))}}
    with pytest.raises(ValueError, match="already gave"):
        evaluate_pipeline(toy, PROMPTS[:1], 1, num_inference_steps=2, scorers=clash, progress=False)


def test_comparison_is_paired_and_round_trips(result, tmp_path):
    res, _ = result
    res.save(tmp_path / "eval.json")
    back = EvalResult.load(tmp_path / "eval.json")
    assert back.records == res.records
    better = EvalResult([dict(r, strict=1.0) for r in res.records], res.diversity)
    table = comparison_table({"base": res, "better": better}, "strict")
    gain = 100 * (1 - res.summary()["all"]["strict"])
    assert f"+{gain:.1f}" in table.splitlines()[-1]
    # one model has nothing to be compared with: no Δ column
    alone = comparison_table({"lora": res}, "strict")
    assert "Δ" not in alone and alone.splitlines()[0].count("|") == alone.splitlines()[-1].count("|")
    other = EvalResult([dict(r, prompt="a blue circle") for r in res.records], res.diversity)
    with pytest.raises(ValueError, match="different prompts"):
        comparison_table({"base": res, "other": other})
    with pytest.raises(FileNotFoundError, match="minitune evaluate"):
        EvalResult.load(tmp_path / "missing.json")


def test_default_scorers_are_the_pipelines_own(toy):
    """Without scorers= an evaluation judges with ``pipe.default_scorers()``: the Shapes pipeline's oracle, none for a
    pipeline that has no such hook, and whatever a pipeline supplies."""
    assert toy.default_scorers() == {"oracle": oracle_scorer}
    pipe, kw = tiny_sd_pipeline(), dict(num_inference_steps=2, progress=False)
    assert evaluate_pipeline(pipe, PROMPTS[:1], 1, **kw)[0].metrics == []
    pipe.default_scorers = lambda: {"ones": lambda images, prompts: {"one": np.ones(len(prompts))}}
    res, _ = evaluate_pipeline(pipe, PROMPTS[:1], 2, **kw)
    assert res.metrics == ["one"] and [r["one"] for r in res.records] == [1.0, 1.0]
