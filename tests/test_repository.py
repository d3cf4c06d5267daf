"""The repository's address in one place (tests/repository.py) and the workflow that publishes the book."""

import json
import re
import shutil

import pytest
import yaml

import repository

ROOT = repository.ROOT
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def make_targets(commands: str) -> list[str]:
    """The make targets that shell commands run, in order (`make a b` gives a, b)."""
    return [t for line in re.findall(r"^\s*make ([^\n#;&|]+)", commands, re.M) for t in line.split() if "=" not in t]


def test_the_workflow_runs_the_make_targets_of_ci_and_deploys_the_book():
    ci = make_targets((ROOT / ".ci" / "run").read_text())
    assert ci[:2] == ["lint", "test"] and "book-ci" in ci and "book-check" in ci
    flow = yaml.safe_load(WORKFLOW.read_text())
    build = flow["jobs"]["build"]
    steps = build["steps"]
    assert make_targets("\n".join(s["run"] for s in steps if "run" in s)) == ci
    assert build["env"]["MINITUNE_CI"] == "1" and "export MINITUNE_CI=1" in (ROOT / ".ci" / "run").read_text()
    pages = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert len(pages) == 1 and pages[0]["with"]["path"] == "_build/html"
    assert steps.index(pages[0]) > max(i for i, s in enumerate(steps) if "run" in s and "make" in s["run"])
    deploy = flow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert flow[True]["push"]["branches"] == [repository.address()[1]]  # YAML reads the key `on` as True


def test_make_targets_reads_commands():
    assert make_targets("make lint\n  make test && echo\nmake book-ci # x\nmake X=1 book-check") == [
        "lint", "test", "book-ci", "book-check"]


def test_everything_follows_config():
    url, branch = repository.address()
    assert url == yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert repository.problems() == []
    assert repository.book_url(url) in (ROOT / "README.md").read_text()


def test_book_url_is_github_pages():
    assert repository.book_url("https://github.com/Ann/minitune") == "https://ann.github.io/minitune/"
    assert repository.book_url("https://github.com/ann/ann.github.io") == "https://ann.github.io/"
    with pytest.raises(ValueError, match="not a GitHub repository"):
        repository.book_url("https://example.org/ann/minitune")


@pytest.fixture
def copy(tmp_path):
    for name in ("_config.yml", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    return tmp_path


def test_a_fork_sets_its_address_in_one_command(copy):
    changed = repository.sync(copy, url="https://github.com/ann/minitune-fork", branch="dev")
    notebooks = sorted(p.name for p in (copy / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(changed) == sorted(["_config.yml", "pyproject.toml", "README.md"] + [f"notebooks/{n}" for n in notebooks])
    config = yaml.safe_load((copy / "_config.yml").read_text())["repository"]
    assert config == {"url": "https://github.com/ann/minitune-fork", "branch": "dev"}
    assert repository.problems(copy) == []
    assert 'Documentation = "https://ann.github.io/minitune-fork/"' in (copy / "pyproject.toml").read_text()
    for name in notebooks:
        text = (copy / "notebooks" / name).read_text()
        badge, constant = repository.notebook_links("https://github.com/ann/minitune-fork", "dev", name)
        assert badge in text and constant.replace('"', '\\"') in text and "minitune/minitune" not in text
    assert repository.sync(copy) == []  # nothing left to change
    assert repository.sync(copy, url="https://github.com/minitune/minitune", branch="main")
    for name in ("_config.yml", "pyproject.toml", "README.md"):
        assert (copy / name).read_text() == (ROOT / name).read_text(), name  # back to the original, byte for byte
    for name in notebooks:  # the same notebook (written as nbformat writes it)
        assert json.loads((copy / "notebooks" / name).read_text()) == json.loads((ROOT / "notebooks" / name).read_text())


def test_problems_name_what_does_not_follow(copy):
    text = (copy / "README.md").read_text().replace("https://minitune.github.io/minitune/", "https://ann.github.io/old/")
    (copy / "README.md").write_text(text)
    (copy / "pyproject.toml").write_text((copy / "pyproject.toml").read_text().replace("/issues", "/pulls"))
    found = repository.problems(copy)
    assert len(found) == 2 and found[0].startswith("pyproject.toml") and "https://ann.github.io/old/" in found[1]
