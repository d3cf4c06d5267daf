"""Failure profiles counted as GenEval counts: hand-made images with known counts, GenEval's annotation format,
and the training options that calibrate a base (a second stage from saved weights)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minitune.cli import main
from minitune.toy import profile as P
from minitune.toy import world
from minitune.toy.train import TrainConfig, train

R, B = world.Obj("red", "circle"), world.Obj("blue", "square")


def scene(*objs):
    """A uint8 image with one object of each (colour, shape) in rows of free spots, 9 px each."""
    return world._draw([(1 + 11 * (i % 3), 1 + 11 * (i // 3), 9, o) for i, o in enumerate(objs)])


def one(image, prompt) -> dict:
    (rec,) = P.read(image, prompt)
    return rec


def test_counts_by_shape_fewer_more_exact():
    prompt = "a red circle and a blue square"
    assert one(scene(R, B), prompt) == {"task": "color attribution", "correct": True, "fewer": False, "more": False,
                                              "exact": True, "multi_object": True}
    left_out = one(scene(R), prompt)
    assert (left_out["fewer"], left_out["more"], left_out["correct"]) == (True, False, False)
    added = one(scene(R, B, B), prompt)
    assert (added["fewer"], added["more"], added["correct"]) == (False, True, True)  # GenEval ignores extras here
    # a square of the wrong colour is still a square: the count is exact, the attribution wrong
    recoloured = one(scene(R, world.Obj("green", "square")), prompt)
    assert (recoloured["exact"], recoloured["correct"]) == (True, False)
    # a shape the prompt does not name counts for neither fewer nor more
    assert one(scene(R, B, world.Obj("red", "triangle")), prompt)["exact"]


def test_tasks_of_each_category_and_the_counting_rule():
    single = P.read(scene(R), "one red circle")
    assert [r["task"] for r in single] == ["single object", "colors"] and all(r["correct"] for r in single)
    assert not any(r["multi_object"] for r in single)
    assert [r["correct"] for r in P.read(scene(world.Obj("green", "circle")), "one red circle")] == [True, False]
    assert one(scene(R, R), "two red circles")["correct"]
    three = one(scene(R, R, R), "two red circles")
    assert (three["task"], three["correct"], three["more"]) == ("counting", False, True)
    assert one(scene(R, world.Obj("red", "triangle")), "a red circle and a red triangle")["task"] == "two object"
    assert one(scene(R, B), "a red circle left of a blue square") == {
        "task": "position", "correct": True, "fewer": False, "more": False, "exact": True, "multi_object": True}
    assert not one(scene(R, B), "a red circle right of a blue square")["correct"]
    assert one(scene(R, R, B), "two red circles and a blue square")["task"] == "complex"


def test_profile_rates_overall_and_ratio():
    prompts = ["a red circle and a blue square"] * 4 + ["one red circle"] * 2
    images = np.stack([scene(R), scene(R), scene(R, B, B), scene(R, B), scene(R), scene(B)])
    prof = P.failure_profile(images, prompts)
    attr = prof["color attribution"]
    assert attr == {"images": 4, "fewer": 0.5, "more": 0.25, "exact": 0.25, "multi_object": True, "score": 0.5}
    assert prof["single object"]["score"] == 0.5 and prof["colors"]["images"] == 2
    assert P.omission_ratio(prof) == 2.0
    assert np.isnan(P.overall(prof))  # four of GenEval's six tasks have no image
    with pytest.raises(ValueError, match="one prompt per image"):
        P.failure_profile(images, prompts[:-1])


def test_object_area_counts_requested_objects_only():
    circle, square = world._mask("circle", 9).sum(), world._mask("square", 9).sum()
    assert P.object_area(scene(R, B)[None], ["a red circle and a blue square"]) == (circle + square) / 2
    assert P.object_area(scene(R, B)[None], ["one red circle"]) == circle


def test_layout_diversity_reads_where_objects_are_not_their_contrast():
    a = scene(R, B)
    moved = world._draw([(12, 12, 9, R), (23, 23, 9, B)])  # the same objects, elsewhere, no overlap
    faint = (a * 0.6).astype(np.uint8)  # the same layout, less contrast: still brighter than half where drawn
    prompt = "a red circle and a blue square"
    assert P.layout_diversity(np.stack([a, a]), [prompt] * 2) == 0.0
    assert P.layout_diversity(np.stack([a, moved]), [prompt] * 2) == 1.0
    assert P.layout_diversity(np.stack([a, faint]), [prompt] * 2) == 0.0
    # the mean over prompts of the mean over pairs; a prompt with one image has no pair and no say
    images, prompts = np.stack([a, a, a, moved, a]), [prompt, prompt, "x", "x", "y"]
    assert P.layout_diversity(images, prompts) == 0.5


def _write_geneval(tmp_path, counts):
    """GenEval's two files for two prompts (one two-object, one counting), five raters per image."""
    meta = [{"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
             "prompt": "a photo of a cat and a dog"},
            {"tag": "counting", "include": [{"class": "cup", "count": 3}], "exclude": [{"class": "cup", "count": 4}],
             "prompt": "a photo of three cups"}]
    head = ("Input.index,Input.prompt_id,Input.caption,Input.object_0_name,Input.object_1_name,"
            "Answer.task-count-0,Answer.task-count-1")
    lines = [head]
    for index, (pid, c0, c1) in counts.items():
        for a, b in zip(c0, c1):
            names = "dog,cat" if pid == 0 else "cup,"
            lines.append(f"{index},{pid},{meta[pid]['prompt']},{names},{a},{b}")
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    return tmp_path / "ann.csv", tmp_path / "meta.jsonl"


def test_geneval_annotations_by_median_count(tmp_path):
    counts = {"0_0": (0, [1, 1, 1, 0, 1], [0, 0, 1, 0, 2]),  # dog 1, cat median 0: fewer
              "0_1": (0, [2, 2, 1, 2, 3], [1, 1, 1, 1, 1]),  # dog median 2: more
              "1_0": (1, [3, 3, 2, 3, 4], [""] * 5)}        # three cups: exact
    prof = P.geneval_human_profile(*_write_geneval(tmp_path, counts))
    assert prof["two object"] == {"images": 2, "fewer": 0.5, "more": 0.5, "exact": 0.0, "multi_object": True}
    assert prof["counting"] == {"images": 1, "fewer": 0.0, "more": 0.0, "exact": 1.0, "multi_object": True}
    with pytest.raises(FileNotFoundError, match="GenEval's annotations"):
        P.geneval_human_profile(tmp_path / "none.csv", tmp_path / "meta.jsonl")
    (tmp_path / "meta.jsonl").write_text((tmp_path / "meta.jsonl").read_text().replace("three cups", "four cups"))
    with pytest.raises(ValueError, match="disagree on prompt 1"):
        P.geneval_human_profile(tmp_path / "ann.csv", tmp_path / "meta.jsonl")


def test_dev_prompts_come_from_the_training_split():
    dev = world.eval_prompts(3, split="train")
    assert len(dev) == 15 and set(dev) <= set(world.prompts("train"))
    with pytest.raises(ValueError, match="Unknown split"):
        world.eval_prompts(3, split="dev")


def test_training_from_saved_weights(tmp_path):
    small = dict(batch_size=2, checkpoint_every=1, width=32, channels=[16, 16, 16])
    first = train(tmp_path / "a", TrainConfig(steps=1, **small), progress=False)
    # with lr 0 the second stage leaves the weights it started from (AdamW's decay is scaled by the lr too)
    again = train(tmp_path / "b", TrainConfig(steps=1, lr=0.0, init_from=str(first), seed=5, **small), progress=False)
    for part, file in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        a, b = load_file(first / part / file), load_file(again / part / file)
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="saved Shapes pipeline folder"):
        train(tmp_path / "c", TrainConfig(steps=1, init_from=str(tmp_path / "nowhere"), **small), progress=False)
    with pytest.raises(ValueError, match="another architecture"):
        train(tmp_path / "d", TrainConfig(steps=1, init_from=str(first), **{**small, "width": 64}), progress=False)


def test_toy_train_cli_takes_init_from_and_warmup(capsys, tmp_path):
    args = ["toy-train", "--train-steps", "1", "--batch-size", "2", "--checkpoint-every", "1", "--width", "32",
            "--channels", "16", "16", "16", "--warmup", "1"]
    assert main([*args, "--output-dir", str(tmp_path / "a")]) in (0, None)
    capsys.readouterr()
    assert main([*args, "--output-dir", str(tmp_path / "b"), "--init-from", str(tmp_path / "a" / "pipeline-1")]) in (0, None)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["init_from"] == str(tmp_path / "a" / "pipeline-1")
    capsys.readouterr()
    assert main([*args, "--output-dir", str(tmp_path / "c"), "--init-from", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not one" in err and len(err.splitlines()) == 1 and not (tmp_path / "c").exists()


def test_single_object_share_and_loose_captions_of_several_objects_only(tmp_path):
    from minitune.toy.train import batch

    plain = batch(TrainConfig(batch_size=32), 3)
    assert batch(TrainConfig(batch_size=32, single_object_share=0.0), 3)[0] == plain[0]
    singles, images, _ = batch(TrainConfig(batch_size=32, single_object_share=1.0, caption_noise=1.0), 3)
    assert all(p == "" or world.parse(p).n_objects == 1 for p in singles)
    # every one-object caption keeps its object: a caption never names only what is absent
    named = [i for i, p in enumerate(singles) if p]
    assert world.evaluate(images[named], [singles[i] for i in named]).strict == 1.0
    half = batch(TrainConfig(batch_size=64, single_object_share=0.5), 3)[0]
    share = np.mean([world.parse(p).n_objects == 1 for p in half if p])
    assert 0.35 < share < 0.75
    with pytest.raises(ValueError, match="single_object_share .* from 0 to 1"):
        train(tmp_path / "run", TrainConfig(single_object_share=-0.1), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("prompt", ["a red circle left of a blue square", "two green triangles",
                                    "a yellow square and a yellow circle", "two red circles and a cyan triangle"])
def test_sample_edits_keep_the_pixels_and_fail_the_oracle(prompt):
    image = world.render(prompt, 3)
    edits = world.sample_edits(image, prompt, seed=0)
    assert edits["aligned"] is image and {"missing object", "shape changed"} <= set(edits)
    for kind, edited in edits.items():
        assert world.check(edited, prompt)["strict"] == (kind == "aligned"), kind
    assert set(world.check(edits["missing object"], prompt)["failures"]) & {"missing object", "wrong shape", "wrong count"}
    if "extra object" in edits:
        assert world.check(edits["extra object"], prompt)["n_blobs"] == world.parse(prompt).n_objects + 1
        assert (edits["extra object"] >= image).all()  # only pixels added, none moved
    with pytest.raises(ValueError, match="judges aligned"):
        world.sample_edits(np.zeros_like(image), prompt, seed=0)


def test_studies_write_profiles_and_failure_types(tmp_path, capsys):
    import importlib

    ann, meta = _write_geneval(tmp_path, {"0_0": (0, [1] * 5, [0] * 5)})
    study = importlib.import_module("benchmarks.studies.failure_profile")
    assert study.main(["--geneval-annotations", str(ann), "--geneval-metadata", str(meta), "--models", "shipped",
                       "--per-category", "1", "--images", "1", "--guidance", "2", "1", "--profile-guidance", "shipped=1",
                       "--results", str(tmp_path / "fp")]) == 0
    data = json.loads((tmp_path / "fp.json").read_text())
    assert set(data["profiles"]) == {"sd2", "shipped"} and data["profiles"]["sd2"]["two object"]["fewer"] == 1.0
    assert set(data["runs"]["shipped"]) == {"2", "1"} and data["profiles"]["shipped"]["position"]["images"] == 1
    assert data["profile_guidance"] == {"shipped": 1.0}
    with pytest.raises(ValueError, match="NAME=FOLDER"):
        study.main(["--models", "base"])
    for bad in ("shipped=3", "other=1", "shipped"):
        with pytest.raises(ValueError, match="NAME=SCALE"):
            study.main(["--models", "shipped", "--guidance", "1", "--profile-guidance", bad])
    types = importlib.import_module("benchmarks.studies.mi_failure_types")
    assert types.main(["--prompts", "2", "--images", "2", "--samples", "2", "--contrast-samples", "0",
                       "--guidance", "shipped=2", "--results", str(tmp_path / "ft")]) == 0
    assert json.loads((tmp_path / "ft.json").read_text())["settings"]["guidance"] == {"shipped": 2.0}
    with pytest.raises(ValueError, match="NAME=SCALE"):
        types.main(["--prompts", "2", "--guidance", "other=1"])
    found = json.loads((tmp_path / "ft.json").read_text())["results"]["shipped"]
    assert found["renders"]["missing object"]["pairs"] == 2
    assert set(found["renders"]["missing object"]["aligned_wins"]) == {"orthogonal", "point-wise"}
