import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from minitune import GUIDANCE_SCALE, selection
from minitune.cli import main
from minitune.families import denoiser_for
from minitune.mi import contrast_mi
from minitune.sampling import candidate_seed, sample_with_mi
from minitune.selection import build, build_pool, load_records, pool_complete, read_prompts, select
from minitune.testing import tiny_sd_pipeline
from minitune.toy import world
from minitune.toy.world import train_prompts

PROMPTS = ["a red circle and a blue square", "three green triangles", "a yellow square left of a cyan circle"]
KW = dict(num_inference_steps=2, guidance_scale=4.0, seed=0, progress=False)


def files(folder):
    """Every file under a folder (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def built(toy, tmp_path_factory):
    """Pool of 3 prompts × 4 candidates (2 prompts per chunk) and its five top-2 sets."""
    out = tmp_path_factory.mktemp("build")
    paths = build(toy, PROMPTS, out, 4, 2, selectors=("mi", "mi_renoise", "mi_contrast", "random", "oracle"),
                  renoise_samples=2, contrast_samples=2, keep_latents=True, batch_size=8, **KW)
    return paths


def test_pool_stores_every_candidate(toy, built):
    manifest, records = load_records(built["pool"])
    assert manifest["n_candidates"] == 4 and manifest["prompts"] == PROMPTS and len(records) == 12
    assert [(r["prompt_index"], r["candidate"]) for r in records] == [(i, k) for i in range(3) for k in range(4)]
    direct = sample_with_mi(toy, PROMPTS[:2], 4, batch_size=8, **KW)  # the first chunk, sampled directly
    for r, image, mi in zip(records, world.to_uint8(direct.images), direct.mi):
        assert np.array_equal(pixels(built["pool"] / r["file_name"]), image) and r["mi"] == float(mi)
    for r in records:
        assert r["seed"] == candidate_seed(0, r["text"], r["candidate"])
        assert r["mi_renoise"] > 0 and 0 <= r["strict"] <= r["soft"] <= 1 and np.isfinite(r["mi_contrast"])
    assert manifest["near_misses"] == {p: world.near_misses(p) for p in PROMPTS}
    one = direct.latents[5:6]  # prompt 1, candidate 1: its contrast, recomputed alone
    contrast, _ = contrast_mi(denoiser_for(toy), one, [PROMPTS[1]], [world.near_misses(PROMPTS[1])],
                              seeds=[records[5]["seed"] + 2], n_samples=2)
    assert records[5]["mi_contrast"] == pytest.approx(float(contrast[0]), rel=1e-5)
    lat = load_file(built["pool"] / "latents" / "00001.safetensors")
    assert lat["latents"].shape == (4, 3, 32, 32) and lat["prompt_embeds"].shape == lat["negative_prompt_embeds"].shape
    assert torch.equal(lat["latents"], direct.latents[4:8]) and pool_complete(built["pool"])


def test_sets_load_with_datasets(built, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    for name in ("pool", "mi", "random"):
        ds = datasets.load_dataset("imagefolder", data_dir=str(built[name]), cache_dir=str(tmp_path / "cache"), split="train")
        assert len(ds) == (12 if name == "pool" else 6) and ds[0]["image"].size == (32, 32)
        assert {"image", "text", "mi", "seed"} <= set(ds.column_names)
    assert ds[0]["text"] == PROMPTS[0] and {"rank", "strict", "soft"} <= set(ds.column_names)


@pytest.mark.parametrize("by", ["mi", "mi_renoise", "mi_contrast", "oracle"])
def test_set_is_the_top_k_of_each_prompt(built, by):
    _, pool = load_records(built["pool"])
    manifest, rows = load_records(built[by])
    assert manifest["selector"] == by and manifest["k"] == 2 and manifest["pool"] == "../pool"
    key = {"mi": lambda r: r["mi"], "mi_renoise": lambda r: r["mi_renoise"], "mi_contrast": lambda r: r["mi_contrast"],
           "oracle": lambda r: (r["soft"], r["strict"])}[by]
    for i in range(3):
        mine = [r for r in rows if r["prompt_index"] == i]
        others = [r for r in pool if r["prompt_index"] == i and r["candidate"] not in {m["candidate"] for m in mine}]
        assert [m["rank"] for m in mine] == [0, 1] and key(mine[0]) >= key(mine[1])
        assert min(key(m) for m in mine) >= max(key(r) for r in others)


def test_controls_have_the_same_size_and_format(built, tmp_path):
    sets = {by: load_records(built[by]) for by in ("mi", "random", "oracle")}
    assert {len(rows) for _, rows in sets.values()} == {6}
    assert len({tuple(rows[0]) for _, rows in sets.values()}) == 1  # same metadata keys in the same order
    for by, (_, rows) in sets.items():
        assert (built[by] / rows[0]["file_name"]).read_bytes() == (built["pool"] / rows[0]["file_name"]).read_bytes()
        lat = load_file(built[by] / "latents.safetensors")
        assert lat["latents"].shape == (6, 3, 32, 32) and lat["prompt_embeds"].shape[0] == 6
        pool_lat = load_file(built["pool"] / "latents" / f"{rows[5]['prompt_index']:05d}.safetensors")
        assert torch.equal(lat["latents"][5], pool_lat["latents"][rows[5]["candidate"]])
    again = select(built["pool"], tmp_path / "random", 2, by="random", seed=0, progress=False)
    assert files(again) == {**files(built["random"]), "manifest.json": files(again)["manifest.json"]}
    other = load_records(select(built["pool"], tmp_path / "random7", 2, by="random", seed=7, progress=False))[1]
    assert len(other) == 6


def test_interrupted_build_resumes_to_the_same_files(toy, tmp_path, monkeypatch):
    kw = dict(selectors=("mi", "random"), keep_latents=True, batch_size=4, **KW)  # one prompt per chunk
    build(toy, PROMPTS, tmp_path / "whole", 4, 1, **kw)

    write, calls = selection._write, []

    def crash_in_second_chunk(path, data):
        calls.append(path)
        if len(calls) == 13:  # 3 manifests, 6 files of prompt 0, then mid-way through prompt 1
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(selection, "_write", crash_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        build(toy, PROMPTS, tmp_path / "cut", 4, 1, **kw)
    assert (tmp_path / "cut/pool/records/00000.json").is_file() and not (tmp_path / "cut/pool/records/00001.json").exists()
    assert (tmp_path / "cut/pool/00001_000.png").is_file() and not pool_complete(tmp_path / "cut/pool")
    (tmp_path / "cut/pool/.00001_003.png.partial").write_bytes(b"killed mid-write")

    monkeypatch.setattr(selection, "_write", write)
    sampled = []
    monkeypatch.setattr(selection, "sample_with_mi", lambda pipe, prompts, *a, **k: sampled.append(prompts) or
                        sample_with_mi(pipe, prompts, *a, **k))
    build(toy, PROMPTS, tmp_path / "cut", 4, 1, **kw)
    assert sampled == [PROMPTS[1:2], PROMPTS[2:3]]  # the finished chunk was not sampled again
    assert files(tmp_path / "cut") == files(tmp_path / "whole")


def test_resume_with_other_parameters_is_refused(toy, built):
    before = files(built["pool"].parent)
    for change in (dict(n_candidates=3), dict(guidance_scale=2.0), dict(prompts=PROMPTS[:2])):
        args = {"prompts": PROMPTS, "n_candidates": 4, **change}
        with pytest.raises(ValueError, match="other parameters"):
            build(toy, args.pop("prompts"), built["pool"].parent, top_k=2, selectors=("mi",), renoise_samples=2,
                  keep_latents=True, batch_size=8, **{**KW, **args})
    with pytest.raises(ValueError, match="other parameters.*k 2 \\(now 1\\)"):
        select(built["pool"], built["mi"], 1, progress=False)
    assert files(built["pool"].parent) == before


def test_tiny_stable_diffusion_builds_a_pool(tmp_path):
    pipe = tiny_sd_pipeline()
    pool = build_pool(pipe, PROMPTS[:2], tmp_path / "pool", 2, keep_latents=True, batch_size=4, **KW)
    manifest, records = load_records(pool)
    assert manifest["pipeline"] == "StableDiffusionPipeline" and not manifest["oracle"] and "strict" not in records[0]
    lat = load_file(pool / "latents" / "00000.safetensors")
    assert lat["latents"].shape == (2, 4, 16, 16)
    decoded = world.to_uint8(denoiser_for(pipe).to_images(lat["latents"]))  # PNG = the VAE's decoding, as diffusers outputs
    assert np.array_equal(pixels(pool / "00000_001.png"), decoded[1])
    assert len(load_records(select(pool, tmp_path / "mi", 1, progress=False))[1]) == 2
    with pytest.raises(ValueError, match="oracle selector needs a Shapes-world pool"):
        select(pool, tmp_path / "oracle", 1, by="oracle")
    with pytest.raises(ValueError, match="no grammar to make them; pass near_misses"):
        build_pool(pipe, PROMPTS[:2], tmp_path / "contrast", 2, contrast_samples=2, **KW)
    with pytest.raises(ValueError, match="'three green triangles' has no near-miss prompts"):
        build_pool(pipe, PROMPTS[:2], tmp_path / "contrast", 2, contrast_samples=2,
                   near_misses={PROMPTS[0]: ["a blue circle and a red square"]}, **KW)
    near = {PROMPTS[0]: ["a blue circle and a red square"], PROMPTS[1]: ["two green triangles", "three red triangles"]}
    pool = build_pool(pipe, PROMPTS[:2], tmp_path / "contrast", 2, contrast_samples=2, near_misses=near, batch_size=4, **KW)
    manifest, records = load_records(pool)
    assert manifest["near_misses"] == near and all(np.isfinite(r["mi_contrast"]) for r in records)
    assert len(load_records(select(pool, tmp_path / "by_contrast", 1, by="mi_contrast", progress=False))[1]) == 2


def test_a_pipeline_plugs_in_its_grammar_near_misses_and_judge(tmp_path):
    """The pool asks a pipeline for ``check_prompt``, ``near_misses`` and ``oracle`` by name, not by class: with the
    Shapes world's three, a tiny Stable Diffusion pipeline gets a judged pool with contrast MI and an oracle set."""
    pipe = tiny_sd_pipeline()
    pipe.check_prompt, pipe.near_misses = world.parse, world.near_misses
    pipe.oracle = lambda images, prompts: world.evaluate(images, prompts).records
    with pytest.raises(ValueError, match="purple"):
        build_pool(pipe, ["a purple circle"], tmp_path / "bad", 2, **KW)
    assert not (tmp_path / "bad").exists()
    pool = build_pool(pipe, PROMPTS[:2], tmp_path / "pool", 2, contrast_samples=2, batch_size=4, **KW)
    manifest, records = load_records(pool)
    assert manifest["oracle"] and manifest["near_misses"] == {p: world.near_misses(p) for p in PROMPTS[:2]}
    verdicts = world.evaluate(np.stack([pixels(pool / r["file_name"]) for r in records]), [r["text"] for r in records])
    assert [(r["strict"], r["soft"], r["well_formed"]) for r in records] == \
        [(v["strict"], v["soft"], v["well_formed"]) for v in verdicts.records]
    assert len(load_records(select(pool, tmp_path / "oracle", 1, by="oracle", progress=False))[1]) == 2


def test_bad_arguments_fail_before_anything_is_written(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "sample_with_mi", lambda *a, **k: pytest.fail("nothing may be sampled"))
    out = tmp_path / "out"
    for kwargs, message in ((dict(top_k=5), "top-k must be an integer from 1 to the 4"),
                            (dict(top_k=0), "top-k must be"),
                            (dict(selectors=("best",)), "Unknown selector 'best'"),
                            (dict(selectors=("mi_renoise",)), "no re-noising MI"),
                            (dict(selectors=("mi_contrast",)), "no contrast MI"),
                            (dict(contrast_samples=1), "contrast_samples must be 0"),
                            (dict(renoise_samples=1), "renoise_samples must be 0"),
                            (dict(prompts=[]), "No prompts"),
                            (dict(prompts=PROMPTS + PROMPTS[:1]), "listed twice"),
                            (dict(prompts=PROMPTS + ["a purple circle and a red square"]), "purple")):
        args = {"prompts": PROMPTS, "n_candidates": 4, "top_k": 1, **kwargs}
        with pytest.raises(ValueError, match=message):
            build(toy, args.pop("prompts"), out, **args, **KW)
        assert not out.exists()
    (tmp_path / "a_file").write_text("keep me")
    for bad in (tmp_path / "a_file", tmp_path / "a_file" / "out"):
        with pytest.raises(ValueError, match="is a file|Cannot write"):
            build(toy, PROMPTS, bad, 4, 1, **KW)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "pool").mkdir()
    (tmp_path / "foreign" / "pool" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and was not made by minitune"):
        build(toy, PROMPTS, tmp_path / "foreign", 4, 1, **KW)
    assert files(tmp_path / "foreign") == {"pool/notes.txt": b"mine"} and (tmp_path / "a_file").read_text() == "keep me"


def test_prompt_files_and_train_prompts(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompts(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="is empty"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "p.txt").write_text("three green triangles\n\n a red circle and a blue square \n")
    assert read_prompts(tmp_path / "p.txt") == ["three green triangles", "a red circle and a blue square"]
    ps = train_prompts(12, seed=1)
    assert len(set(ps)) == 12 and set(ps) <= set(world.prompts("train")) and ps == train_prompts(12, seed=1)
    assert {world.parse(p).category for p in ps[:5]} == set(world.CATEGORIES)
    with pytest.raises(ValueError, match="n_prompts must lie in"):
        train_prompts(0)


def test_missing_or_corrupt_folders_are_named(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="There is no folder"):
        select(tmp_path / "nowhere", tmp_path / "set", 1)
    with pytest.raises(ValueError, match="is a set, not a pool"):
        select(built["mi"], tmp_path / "set", 1)

    def broken(name, damage):
        pool = tmp_path / name
        shutil.copytree(built["pool"], pool)
        damage(pool)
        return pool

    cases = [
        (lambda p: (p / "manifest.json").write_text("{not json"), ValueError, "not valid JSON"),
        (lambda p: (p / "manifest.json").unlink(), FileNotFoundError, "no manifest.json"),
        (lambda p: (p / "metadata.jsonl").unlink(), ValueError, "incomplete"),
        (lambda p: (p / "metadata.jsonl").write_text("oops\n"), ValueError, "Line 1 .* not a complete record"),
        (lambda p: (p / "00002_001.png").unlink(), FileNotFoundError, "00002_001.png"),
        (lambda p: (p / "latents" / "00001.safetensors").unlink(), FileNotFoundError, "latents/00001"),
        (lambda p: (p / "metadata.jsonl").write_text("".join((p / "metadata.jsonl").read_text().splitlines(True)[:5])),
         ValueError, "has 5 records but the manifest announces 12"),
    ]
    for n, (damage, error, message) in enumerate(cases):
        pool = broken(f"pool{n}", damage)
        with pytest.raises(error, match=message):
            select(pool, tmp_path / f"set{n}", 1, progress=False)
        assert not (tmp_path / f"set{n}").exists()


def test_cli_build(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["build", "--n-prompts", "2", "--candidates", "3", "--sample-steps", "2", "--controls", "--output-dir", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert all(f"{out / name} | {n} |" in table for name, n in (("pool", 6), ("mi", 2), ("random", 2), ("oracle", 2)))
    manifest = json.loads((out / "mi" / "manifest.json").read_text())
    settings = (manifest["model"], manifest["n_candidates"], manifest["k"], manifest["guidance_scale"])
    assert settings == ("toy", 3, 1, GUIDANCE_SCALE)  # the Shapes model's own scale when none is given
    (tmp_path / "bad.txt").write_text("a red circle and a blue square\na purple circle and a red square\n")
    for bad, needle in ((["--top-k", "4"], "top-k must be"), (["--prompt-file", str(tmp_path / "bad.txt")], "purple"),
                        (["--guidance-scale", "7"], "other parameters")):
        assert main(args + bad) == 2
        err = capsys.readouterr().err  # (model loading may draw progress bars before the error)
        assert err.splitlines()[-1].startswith("minitune build: error: ") and needle in err.splitlines()[-1]
        assert "Traceback" not in err
        if bad[0] == "--top-k":  # checked before the model loads: nothing else on stderr
            assert err.count("\n") == 1, err
