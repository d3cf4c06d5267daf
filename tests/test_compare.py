"""`minitune compare` (the side-by-side viewer, the blind study) in headless Chromium, and `minitune study-report`.

The evaluations are small fake ones written here from the Shapes world's renders and its oracle: the
"oracle top-k" arm draws every prompt, "base" leaves an object out of some images.
"""

import json
import time
import warnings

import numpy as np
import pytest

from minitune.cli import main
from minitune.tools.compare import build_study, build_viewer, image_uri, load_arms, page_data
from minitune.evaluate import EvalResult
from minitune.tools.study import report
from minitune.toy import world
from minitune.toy.scoring import oracle_scorer

PROMPTS = world.eval_prompts(1)  # one held-out prompt per category
SEEDS = (11, 12)
ARMS = {"base": "base", "random-k": "random-k", "oracle-top-k": "oracle top-k"}
BROKEN = {"base": {(0, 11), (1, 12), (3, 11)}, "random-k": {(0, 11), (2, 12)}, "oracle-top-k": set()}


def fake_eval(broken):
    """Records as evaluate_pipeline writes them, and their images: renders, with an object left out where broken."""
    rows = [(i, p, s) for i, p in enumerate(PROMPTS) for s in SEEDS]
    images = np.stack([world.render_missing(p, s) if (i, s) in broken else world.render(p, s) for i, p, s in rows])
    prompts = [p for _, p, _ in rows]
    scores = oracle_scorer(images, prompts)
    records = [{"prompt": p, "seed": s, "category": world.parse(p).category, "mi": 10.0 + k}
               | {m: float(v[k]) for m, v in scores.items()} for k, (_, p, s) in enumerate(rows)]
    return EvalResult(records, settings={"seed": 0, "failure_modes": list(world.FAILURE_MODES)}), images


def write_experiment(folder, previews_only=False):
    """An experiment's output folder with only what the viewer reads: eval/<arm>.json and its images."""
    (folder / "eval").mkdir(parents=True)
    for slug, name in ARMS.items():
        res, images = fake_eval(BROKEN[slug])
        res.save(folder / "eval" / f"{slug}.json")
        np.save(folder / "eval" / f"{slug}.preview.npy", images[:: len(SEEDS)])
        if not previews_only:
            np.save(folder / "eval" / f"{slug}.images.npy", images)
    (folder / "results.json").write_text(json.dumps({"summaries": {name: {} for name in ARMS.values()}}))
    return folder


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return write_experiment(tmp_path_factory.mktemp("experiment"))


@pytest.fixture(scope="module")
def driver(tmp_path_factory, browser_paths):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_paths  # skipped with what to install where they are missing, except under CI
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                "--host-resolver-rules=MAP * ~NOTFOUND"):  # a page that needs the network fails here
        options.add_argument(arg)
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(chromedriver), options=options)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.downloads = downloads
    yield d
    d.quit()


def strict(folder, slug):
    return {(r["prompt"], r["seed"]): r["strict"] for r in json.loads((folder / "eval" / f"{slug}.json").read_text())["records"]}


def shown(driver):
    return driver.execute_script("return [...document.querySelectorAll('section.prompt')].map((s) => s.dataset.prompt)")


def test_viewer_shows_every_arm_and_seed_and_its_filters_work(experiment, driver, tmp_path):
    page = build_viewer([experiment], tmp_path)
    driver.get(page.as_uri())
    assert shown(driver) == PROMPTS
    images = driver.execute_script("return [...document.images].map((i) => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == len(PROMPTS) * len(SEEDS) * len(ARMS) and all(i == [True, 32, 32] for i in images)
    # the first cell is the base's image of the first prompt and seed, pixel for pixel
    pixels = driver.execute_script("""const i = document.querySelector('td[data-arm="base"] img');
        const c = document.createElement('canvas');
        c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);""")
    expected = np.load(experiment / "eval" / "base.images.npy")[0]
    assert np.array_equal(np.array(pixels).reshape(32, 32, 4)[..., :3], expected)
    assert driver.execute_script("return getComputedStyle(document.images[0]).imageRendering") == "pixelated"
    headers = driver.execute_script("return [...document.querySelectorAll('section.prompt')[0].querySelectorAll('th')]"
                                    ".map((t) => t.textContent)")
    assert headers == ["", *ARMS.values(), "seed 1", "seed 2"]

    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "category")).select_by_value("count")
    assert shown(driver) == [p for p in PROMPTS if world.parse(p).category == "count"]
    Select(driver.find_element("id", "category")).select_by_value("all")
    driver.find_element("id", "disagree").click()
    verdicts = {slug: strict(experiment, slug) for slug in ARMS}
    disagree = [p for p in PROMPTS if any(len({verdicts[a][p, s] for a in ARMS}) > 1 for s in SEEDS)]
    assert shown(driver) == disagree and 0 < len(disagree) < len(PROMPTS)
    driver.find_element("css selector", 'input.arm[value="random-k"]').click()  # hide an arm: fewer columns, fewer disagree
    assert shown(driver) == [p for p in PROMPTS if any(verdicts["base"][p, s] != verdicts["oracle-top-k"][p, s] for s in SEEDS)]
    assert not driver.find_elements("css selector", 'td[data-arm="random-k"]')
    assert driver.find_element("id", "count").text == f"{len(shown(driver))} of {len(PROMPTS)} prompts"


def test_previews_only_and_evaluate_folders(tmp_path):
    old = write_experiment(tmp_path / "old", previews_only=True)
    data = page_data(load_arms([old]))
    assert data["previews_only"] and all(p["seeds"] == [SEEDS[0]] for p in data["prompts"])
    for slug in ("base", "oracle-top-k"):  # `minitune evaluate --output-dir` folders, named by their folder
        res, images = fake_eval(BROKEN[slug])
        (tmp_path / "runs" / slug).mkdir(parents=True)
        res.save(tmp_path / "runs" / slug / "eval.json")
        np.save(tmp_path / "runs" / slug / "images.npy", images)
    data = page_data(load_arms([tmp_path / "runs"]))
    assert data["arms"] == ["base", "oracle-top-k"] and not data["previews_only"]
    assert [len(p["seeds"]) for p in data["prompts"]] == [len(SEEDS)] * len(PROMPTS)
    one = page_data(load_arms([tmp_path / "runs" / "base"]), max_seeds=1)
    assert one["arms"] == ["base"] and all(len(p["seeds"]) == 1 for p in one["prompts"])


def test_study_randomisation_is_reproducible_from_its_seed(experiment, tmp_path):
    a = build_study([experiment], tmp_path / "a", seed=5)
    b = build_study([experiment], tmp_path / "b", seed=5)
    c = build_study([experiment], tmp_path / "c", seed=6)
    key = [json.loads((p.parent / "study.json").read_text()) for p in (a, b, c)]
    assert key[0] == key[1] and a.read_text() == b.read_text()
    assert key[0]["id"] != key[2]["id"] and key[0]["trials"] != key[2]["trials"]
    trials = key[0]["trials"]
    assert sorted(t["prompt"] for t in trials) == sorted(PROMPTS) and all(t["seed"] in SEEDS for t in trials)
    pairs = [tuple(sorted((t["left"], t["right"]))) for t in trials]
    assert len(set(pairs)) == 3  # three arms: every pair once or twice among five prompts
    few = json.loads((build_study([experiment], tmp_path / "d", seed=5, arms=["base", "oracle top-k"], n_prompts=3)
                      .parent / "study.json").read_text())
    assert len(few["trials"]) == 3 and all({t["left"], t["right"]} == {"base", "oracle top-k"} for t in few["trials"])


def wait_for(fn, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if out := fn():
            return out
        time.sleep(0.05)
    raise TimeoutError


def test_study_records_votes_per_rater_and_exports_them(experiment, driver, tmp_path):
    page = build_study([experiment], tmp_path, seed=1)
    key = json.loads((tmp_path / "study.json").read_text())
    images = {slug: np.load(experiment / "eval" / f"{slug}.images.npy") for slug in ARMS}
    driver.get(page.as_uri())
    driver.execute_script("localStorage.clear()")
    driver.refresh()
    html = page.read_text().split('id="main"')[1].split("<script")[0]
    assert all(name not in driver.find_element("tag name", "body").text for name in ARMS.values()) and "base" not in html
    driver.find_element("id", "rater").send_keys("ann")
    driver.find_element("id", "start").click()
    first = key["trials"][0]
    row = PROMPTS.index(first["prompt"]) * len(SEEDS) + SEEDS.index(first["seed"])
    slug = {v: k for k, v in ARMS.items()}
    # the left image is the left arm's image of the trial's prompt and seed: the page follows its key
    assert driver.find_element("id", "left").get_attribute("src") == image_uri(images[slug[first["left"]]][row])
    assert driver.find_element("id", "right").get_attribute("src") == image_uri(images[slug[first["right"]]][row])
    assert driver.find_element("id", "prompt").text == f"“{first['prompt']}”"
    choices = ["left", "tie", "right", "left", "left"]
    for choice in choices[:3]:
        driver.find_element("css selector", f'button.vote[data-choice="{choice}"]').click()
    for k in ("1", "1"):  # the keyboard: 1 left, 2 tie, 3 right
        driver.find_element("tag name", "body").send_keys(k)
    votes = json.loads(driver.find_element("id", "votes-json").get_attribute("textContent"))
    assert votes["rater"] == "ann" and votes["study"]["id"] == key["id"]
    assert [(v["trial"], v["choice"], v["left"], v["right"]) for v in votes["votes"]] == [
        (t["trial"], c, t["left"], t["right"]) for t, c in zip(key["trials"], choices)]
    assert driver.find_element("id", "finished")
    driver.refresh()  # kept in the browser's storage; a second rater on the same browser keeps the first one's votes
    driver.find_element("id", "rater").clear()
    driver.find_element("id", "rater").send_keys("bob")
    driver.find_element("id", "start").click()
    driver.find_element("css selector", 'button.vote[data-choice="tie"]').click()
    driver.execute_script("minitune.start('ann')")
    assert len(driver.execute_script("return minitune.votes().votes")) == len(choices)
    driver.find_element("id", "export").click()
    path = wait_for(lambda: [p for p in driver.downloads.glob("votes-ann-*.json")])[0]
    exported = json.loads(wait_for(lambda: path.read_text()))
    assert exported["votes"] == votes["votes"] and exported["format"] == "minitune-study-votes"
    md, data, problems = report([path])
    assert not problems and data["raters"] == ["ann"] and sum(r["votes"] for r in data["pairs"]) == len(choices)


ARM_PAIR = ("base", "MI-TUNE")


def vote_file(path, rater, choices, study="s1", arms=ARM_PAIR, swap=()):
    """A vote file as the page writes it: trial t shows arms[0] on the left unless t is in `swap`."""
    votes = []
    for t, c in enumerate(choices):
        if c is not None:
            left, right = (arms[1], arms[0]) if t in swap else arms
            votes.append({"trial": t, "prompt": f"p{t}", "seed": t, "left": left, "right": right, "choice": c,
                          "time": f"2026-01-01T00:00:{t:02d}Z"})
    path.write_text(json.dumps({"format": "minitune-study-votes", "version": 1, "rater": rater, "votes": votes,
                                "study": {"id": study, "seed": 0, "arms": list(arms), "trials": len(choices)}}))
    return path


def test_study_report_counts_and_agreement_by_hand(tmp_path):
    # trial 1 shows MI-TUNE on the left, so "left" there is a win of the second arm
    a = vote_file(tmp_path / "a.json", "ann", ["right", "left", "tie", "left"], swap={1})
    b = vote_file(tmp_path / "b.json", "bob", ["right", "tie", "tie", "left"], swap={1})
    md, data, problems = report([a, b], seed=0, n_boot=500)
    assert not problems
    # base against MI-TUNE: wins (trial 3 twice) 2, ties (1 by bob, 2 twice) 3, losses (trial 0 twice, 1 by ann) 3 of 8
    (row,) = data["pairs"]
    assert (row["first"], row["second"], row["prompts"], row["votes"]) == ("base", "MI-TUNE", 4, 8)
    assert row["shares"] == [2 / 8, 3 / 8, 3 / 8]
    assert "| base | MI-TUNE | 4 | 8 | 25.0 (" in md and "| 37.5 (" in md
    assert [(r["first"], r["shares"]) for r in data["arms"]] == [("base", [2 / 8, 3 / 8, 3 / 8]),
                                                                 ("MI-TUNE", [3 / 8, 3 / 8, 2 / 8])]
    assert "| MI-TUNE | any other arm | 4 | 8 | 37.5 (" in md
    for share, (lo, hi) in zip(row["shares"], row["ci"]):
        assert 0 <= lo <= share <= hi <= 1
    # agreement on the answers (right, left, tie, left) and (right, tie, tie, left): 3 of 4
    ag = data["agreement"]
    assert ag["pairs_shared"] == 4 and ag["rater_pairs"] == 1 and ag["percent_agreement"] == 0.75
    # Cohen: p_e = (1·1 + 2·1 + 1·2) / 16 = 5/16; Fleiss: p = (3/8 left, 3/8 tie, 2/8 right), P_e = 22/64
    assert ag["cohen_kappa"] == pytest.approx((0.75 - 5 / 16) / (1 - 5 / 16))
    assert ag["fleiss_kappa"] == pytest.approx((0.75 - 22 / 64) / (1 - 22 / 64))
    assert "75.0 % pairwise percent agreement, Cohen's κ 0.64 (mean over 1 rater pair), Fleiss' κ 0.62" in md
    again = report([a, b], seed=0, n_boot=500)[1]
    assert again["pairs"] == data["pairs"]  # the bootstrap is seeded
    # unanimous votes: the interval cannot move
    c = vote_file(tmp_path / "c.json", "cy", ["left"] * 3)
    assert report([c], n_boot=200)[1]["pairs"][0]["ci"] == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]


def test_a_raters_later_file_replaces_earlier_votes(tmp_path):
    early = vote_file(tmp_path / "early.json", "ann", ["left", None, None])
    late = vote_file(tmp_path / "late.json", "ann", ["right", "tie", None])
    data = report([early, late], n_boot=100)[1]
    assert data["raters"] == ["ann"] and data["pairs"][0]["shares"] == [0.0, 0.5, 0.5] and data["agreement"] is None


def one_sentence(text):
    text = text.strip()
    return text.count("\n") == 0 and text.endswith(".") and "Traceback" not in text


def test_bad_inputs_are_one_sentence_and_no_other_raters_votes_are_lost(tmp_path, capsys):
    good = vote_file(tmp_path / "good.json", "ann", ["left", "tie"])
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "cut.json").write_text(good.read_text()[:40])
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    vote_file(tmp_path / "elsewhere.json", "bob", ["left"], study="s2")
    vote_file(tmp_path / "none.json", "cy", [None, None])
    vote_file(tmp_path / "edited.json", "dan", ["left", "left"], swap={0})  # pair 0 with its sides changed
    bad = ["empty", "cut", "other", "elsewhere", "none", "edited"]
    capsys.readouterr()
    assert main(["study-report", str(good), *(str(tmp_path / f"{b}.json") for b in bad)]) == 2
    out, err = capsys.readouterr()
    assert "| base | MI-TUNE | 2 | 2 | 50.0 (" in out  # the good file still counts
    lines = err.strip().splitlines()
    assert len(lines) == len(bad) + 1 and all(one_sentence(line) for line in lines)
    for b, word in zip(bad, ("is empty", "not valid JSON", "not a vote file", "another study", "no votes", "other arms")):
        (line,) = [line for line in lines if f"{b}.json" in line]
        assert word in line, line
    assert "6 of 7 vote files were left out" in lines[-1]
    for files, word in (([tmp_path / "empty.json"], "is empty"), ([tmp_path / "cut.json", tmp_path / "none.json"],
                                                                   "nothing to report")):
        assert main(["study-report", *map(str, files)]) == 2
        err = capsys.readouterr().err
        assert word in err and one_sentence(err), err


def test_compare_refuses_what_is_not_an_evaluation(tmp_path, experiment, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "broken" / "eval").mkdir(parents=True)
    (tmp_path / "broken" / "eval" / "base.json").write_text("{not json")
    (tmp_path / "noimages").mkdir()
    fake_eval(set())[0].save(tmp_path / "noimages" / "eval.json")
    for folder, word in (("plain", "neither an experiment"), ("missing", "not a folder"), ("broken", "not valid JSON"),
                         ("noimages", "no images")):
        capsys.readouterr()
        assert main(["compare", str(tmp_path / folder), "--output", str(tmp_path / "page")]) == 2
        err = capsys.readouterr().err
        assert word in err and one_sentence(err), err
    for args, word in ((["--study", "--arms", "nobody"], "No arm named"), (["--study", "--arms", "base"], "at least two"),
                       (["--study", "--n-prompts", "99"], "--n-prompts must be"), (["--seeds", "0"], "--seeds must")):
        assert main(["compare", str(experiment), "--output", str(tmp_path / "page"), *args]) == 2
        err = capsys.readouterr().err
        assert word in err and one_sentence(err), err


def test_compare_saves_a_screenshot(tmp_path, experiment, browser_paths):
    shot = tmp_path / "shot.png"
    assert main(["compare", str(experiment), "--output", str(tmp_path / "page"), "--screenshot", str(shot)]) == 0
    assert (tmp_path / "page" / "viewer.html").is_file()
    from PIL import Image

    assert Image.open(shot).size == (1000, 1100)


def test_experiment_keeps_images_only_where_sampling_again_reproduces_its_records(tmp_path):
    from minitune.toy.experiment import _keep_images

    res, images = fake_eval(set())
    tensors = world.to_tensor(images)
    _keep_images(tmp_path / "a.images.npy", tensors, res, res)
    assert np.array_equal(np.load(tmp_path / "a.images.npy"), images)
    other = EvalResult([r | {"strict": 1 - r["strict"]} if k == 0 else r for k, r in enumerate(res.records)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _keep_images(tmp_path / "b.images.npy", tensors, other, res)
    assert not (tmp_path / "b.images.npy").exists() and "did not reproduce" in str(caught[0].message)


def test_evaluate_keeps_the_images_the_viewer_shows(tmp_path, capsys):
    args = ["evaluate", "--prompt", "one cyan square", "--prompt", "two red circles", "--n-per-prompt", "2",
            "--sample-steps", "2"]
    for sampler, name in (("ddpm", "ddpm"), ("dpmpp-sde", "sde")):
        assert main(args + ["--sampler", sampler, "--output-dir", str(tmp_path / "runs" / name)]) == 0
    assert np.load(tmp_path / "runs" / "sde" / "images.npy").shape == (4, 32, 32, 3)
    data = page_data(load_arms([tmp_path / "runs"]))
    assert data["arms"] == ["ddpm", "sde"] and [p["prompt"] for p in data["prompts"]] == ["one cyan square", "two red circles"]
    assert all(len(p["seeds"]) == 2 and all(c["img"] for cells in p["cells"].values() for c in cells) for p in data["prompts"])
