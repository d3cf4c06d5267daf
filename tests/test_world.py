import numpy as np
import pytest
import torch

from minitune.toy import world


@pytest.fixture(scope="module")
def scenes():
    prompts = world.sample_prompts("train", 1200, seed=1) + world.sample_prompts("test", 1200, seed=2)
    images = np.stack([world.render(p, i) for i, p in enumerate(prompts)])
    return prompts, images


def test_oracle_is_exact_on_renders(scenes):
    prompts, images = scenes
    assert {world.parse(p).category for p in prompts} == set(world.CATEGORIES)
    ev = world.evaluate(images, prompts)
    assert len(ev.records) == 2400
    assert ev.strict == 1.0 and ev.soft == 1.0 and ev.well_formed == 1.0
    assert all(v["strict"] == 1.0 for v in ev.per_category().values())


def test_oracle_is_robust_to_pixel_noise(scenes):
    prompts, images = scenes
    x = world.to_tensor(images)
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    ev = world.evaluate(noisy, prompts)
    assert ev.strict >= 0.99 and ev.well_formed >= 0.99


def test_render_is_seeded():
    a = world.render("two red circles and a blue square", 7)
    assert np.array_equal(a, world.render("two red circles and a blue square", 7))
    assert not np.array_equal(a, world.render("two red circles and a blue square", 8))


def test_split_holds_out_combinations_not_words():
    train, test = world.prompts("train"), world.prompts("test")
    train_keys = {world.parse(p).key for p in train}
    test_keys = {world.parse(p).key for p in test}
    assert not train_keys & test_keys
    assert {w for p in test for w in p.split()} <= {w for p in train for w in p.split()}
    for c in world.CATEGORIES:
        assert world.prompts("test", c) and world.prompts("train", c)
    ev = world.eval_prompts()
    assert len(ev) >= 200 and set(ev) <= set(test)
    # an equivalent phrasing lands in the same split
    assert world.parse("a red circle left of a blue square").key == world.parse("a blue square right of a red circle").key


@pytest.mark.parametrize(
    "prompt, drawn, mode",
    [
        ("a red circle and a blue square", "one red circle", "missing object"),
        ("a red circle and a blue square", "a blue circle and a red square", "wrong colour"),
        ("a red circle and a red square", "a red circle and a red triangle", "wrong shape"),
        ("a red circle and a blue square", "two red circles and a blue square", "extra object"),
        ("a red circle left of a blue square", "a red circle right of a blue square", "wrong relation"),
        ("three green triangles", "two green triangles", "wrong count"),
    ],
)
def test_failure_modes(prompt, drawn, mode):
    rec = world.evaluate(world.render(drawn, 3)[None], [prompt]).records[0]
    assert rec["strict"] == 0.0 and 0.0 <= rec["soft"] < 1.0
    assert mode in rec["failures"]


def test_facts_and_soft_score():
    image = world.render("a red circle right of a blue square", 0)[None]
    rec = world.evaluate(image, ["a red circle left of a blue square"]).records[0]
    assert [ok for _, ok in rec["facts"]] == [True, True, False, True]
    assert rec["soft"] == 0.75
    complex_ = world.parse("two red circles and a blue square")
    assert complex_.category == "complex" and complex_.facts == ["exactly 2 red circle", "a blue square", "nothing else"]
    rec = world.evaluate(world.render("two red circles", 0)[None], ["two red circles and a blue square"]).records[0]
    assert [ok for _, ok in rec["facts"]] == [True, False, False] and rec["failures"] == ["missing object"]


def test_bad_input_is_one_clear_sentence():
    with pytest.raises(ValueError, match="Empty prompt"):
        world.parse("  ")
    with pytest.raises(ValueError, match="purple"):
        world.parse("a purple circle and a red square")
    with pytest.raises(ValueError, match="grammar"):
        world.parse("circle red a")
    with pytest.raises(ValueError, match="32×32"):
        world.evaluate(np.zeros((2, 64, 64, 3), np.uint8), ["one red circle"] * 2)
    with pytest.raises(ValueError, match="shape"):
        world.evaluate(torch.zeros(2, 32, 32), ["one red circle"] * 2)
    with pytest.raises(ValueError, match="one prompt per image"):
        world.evaluate(np.zeros((2, 32, 32, 3), np.uint8), ["one red circle"] * 3)


def test_category_weights_set_the_share_of_each_category():
    drawn = [world.parse(p).category for p in world.sample_prompts("train", 4000, seed=6, weights=[0, 1, 1, 0, 2])]
    share = {c: drawn.count(c) / len(drawn) for c in world.CATEGORIES}
    assert share["color"] == share["count"] == 0
    assert abs(share["complex"] - 0.5) < 0.03 and abs(share["shape"] - 0.25) < 0.03
    # without weights, the draws the shipped base model was trained on
    assert world.sample_prompts("train", 4, seed=7) == [
        "two cyan triangles and a blue square", "two green triangles", "one blue circle",
        "two green circles and a yellow square"]
    for bad in ([1, 1], [1, -1, 1, 1, 1], [0, 0, 0, 0, 0]):
        with pytest.raises(ValueError, match="one non-negative number for each of color"):
            world.sample_prompts("train", 5, weights=bad)


def test_render_edits_change_one_thing_of_the_aligned_scene():
    prompts = world.sample_prompts("train", 200, seed=3)
    seen = set()
    for i, prompt in enumerate(prompts):
        edits = world.render_edits(prompt, i)
        assert np.array_equal(edits["aligned"], world.render(prompt, i))
        n = world.parse(prompt).n_objects
        for kind, image in edits.items():
            verdict = world.check(image, prompt)
            assert verdict["well_formed"] or verdict["n_blobs"] == 0, (prompt, kind)  # "one red circle" minus one: empty
            assert verdict["strict"] == (kind == "aligned"), (prompt, kind, verdict["failures"])
            assert verdict["n_blobs"] == n + {"extra object": 1, "missing object": -1}.get(kind, 0), (prompt, kind)
            if kind in ("colours swapped", "relation flipped"):  # the same shapes, recoloured or moved
                assert (image.any(-1)).sum() == (edits["aligned"].any(-1)).sum(), (prompt, kind)
            seen.add(kind)
    assert seen == {"aligned", "extra object", "missing object", "colours swapped", "shape changed", "relation flipped"}
    assert "relation flipped" not in world.render_edits("a red circle and a blue square", 0)
    assert "colours swapped" not in world.render_edits("three green triangles", 0)


def test_near_misses_add_one_object_more_or_fewer_to_the_edits():
    spatial = "a red circle left of a blue square"
    assert world.near_misses(spatial) == [*world.edits(spatial).values(), "one red circle", "one blue square",
                                          "two red circles and a blue square", "two blue squares and a red circle"]
    assert world.near_misses("two red circles and a blue square")[-2:] == ["a red circle and a blue square", "two red circles"]
    assert world.near_misses("two green triangles") == ["three green triangles", "one green triangle"]
    assert len(world.near_misses("a red circle and a blue square")) == 2 + 2 + 2
    for prompt in world.prompts("train"):
        keys = [world.parse(r).key for r in world.near_misses(prompt)]
        assert world.parse(prompt).key not in keys and len(set(keys)) == len(keys), prompt
    for i, prompt in enumerate(world.sample_prompts("train", 100, seed=4)):  # an erased object: a near miss says it
        image = world.render_edits(prompt, i)["missing object"]
        if image.any():
            assert any(world.check(image, r)["strict"] for r in world.near_misses(prompt)), prompt


def test_render_missing_leaves_out_one_named_object_of_the_same_scene():
    kept = set()
    for i, prompt in enumerate(world.sample_prompts("train", 100, seed=5)):
        full, loose = world.render(prompt, i), world.render_missing(prompt, i)
        assert np.array_equal(loose, world.render_missing(prompt, i))  # seeded
        assert (loose == full)[loose.any(-1)].all(), prompt  # nothing drawn that the full scene lacks
        verdict = world.check(loose, prompt)
        p = world.parse(prompt)
        assert not verdict["strict"] and verdict["n_blobs"] == p.n_objects - 1, prompt
        if p.second and p.count == 1 and p.first.color != p.second.color:  # which of the two was left out
            kept.add(next(c for c in (p.first.color, p.second.color) if (loose == world.PALETTE[c]).all(-1).any()))
    assert len(kept) > 1  # either named object can be the one missing
