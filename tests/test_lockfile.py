"""constraints.txt (written by `make lock`) and pyproject.toml agree, and every way of installing uses it."""

import json
import re
import subprocess

import pytest
from packaging.requirements import Requirement

import lockfile
from browser_check import under_ci

ROOT = lockfile.ROOT


def test_every_requirement_is_pinned_within_its_bounds():
    pins = lockfile.read()
    problems = lockfile.disagreements(pins, lockfile.requirements())
    assert not problems, "\n".join(problems) + "\nrun `make lock` in an environment that passed the tests"
    assert lockfile.LOCK.read_text().startswith(lockfile.HEADER.split("{")[0])  # says how it was written


def test_disagreements_name_the_missing_and_the_out_of_bounds():
    reqs = [Requirement("torch>=2.2"), Requirement("Diffusers>=0.35,<1"), Requirement("numpy>=1.24")]
    assert lockfile.disagreements({"torch": "2.13.0", "diffusers": "0.42.1", "numpy": "2.1.0"}, reqs) == []
    found = lockfile.disagreements({"torch": "2.1.0", "diffusers": "1.0.0"}, reqs)
    assert found == ["torch is pinned at 2.1.0, outside pyproject.toml's torch>=2.2.",
                     "Diffusers is pinned at 1.0.0, outside pyproject.toml's Diffusers<1,>=0.35.",
                     "numpy is required by pyproject.toml (numpy>=1.24) but not pinned in the lock file."]


def test_python_floor_is_the_oldest_python_every_pin_admits():
    assert lockfile.python_floor({"a": ">=3.10", "b": ">=3.11.5", "c": "!=3.12.0,>=3.9"}) == "3.11.5"
    assert lockfile.python_floor({}) == "3.10.0"
    with pytest.raises(ValueError, match="satisfies every pin"):
        lockfile.python_floor({"a": "<3.10", "b": ">=3.11"})


def test_the_lock_states_the_python_its_pins_install_on():
    """The header's floor is the oldest Python that every pinned version installs on (read from the installed
    packages' metadata, so where this environment is the locked one)."""
    pins = lockfile.read()
    if lockfile.diff(pins, lockfile.closure()) and not under_ci():
        pytest.skip("this environment differs from constraints.txt; `make setup` installs the locked versions")
    assert lockfile.stated_floor() == lockfile.python_floor(lockfile.requires_python(pins))


def test_make_setup_refuses_a_python_older_than_the_lock(tmp_path):
    """Before it makes a virtual environment, `make setup` checks the Python against the lock's floor and says
    what to do in one sentence, creating nothing."""
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "-s", "setup", f"VENV={venv}", "PY_FLOOR=99.0.0"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode != 0 and not venv.exists()
    assert "constraints.txt needs Python 99.0.0 or newer" in done.stdout and "PYTHON=" in done.stdout


def test_read_takes_pins_only(tmp_path):
    (tmp_path / "c.txt").write_text("# a comment\nTorch==2.13.0  # the CPU build\n\nzope.interface==7.0\n")
    assert lockfile.read(tmp_path / "c.txt") == {"torch": "2.13.0", "zope-interface": "7.0"}
    (tmp_path / "c.txt").write_text("torch>=2.2\n")
    with pytest.raises(ValueError, match="not a pin"):
        lockfile.read(tmp_path / "c.txt")


def test_every_install_route_uses_the_lock_file():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*-c constraints\.txt -e \"\.\[dev,book\]\"", make), "make setup"
    assert re.search(r"^TORCH := .*constraints\.txt", make, re.M), "the Makefile reads torch's version from the lock"
    env = (ROOT / "environment.yml").read_text()
    assert "- -c constraints.txt" in env and "- -e .[dev,book]" in env, "environment.yml"
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        install = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                   if c["cell_type"] == "code" and "%pip install" in "".join(c["source"])]
        assert len(install) == 1 and "constraints.txt" in install[0], f"{path.name}'s install cell"
        assert re.search(r"%pip install [^\n]*-c constraints\.txt [^\n]*\"minitune @ git\+\{REPOSITORY\}\"", install[0])


def test_the_environment_here_is_the_locked_one():
    """Under CI, which installs with `make setup`, every package the project needs has its pinned version:
    a lock file that leaves a package out or that pip could not follow shows here."""
    changed = lockfile.diff(lockfile.read(), lockfile.closure())
    if changed and not under_ci():
        pytest.skip(f"this environment differs from constraints.txt in {len(changed)} packages (first: {changed[0]}); "
                    "`make setup` installs the locked versions")
    assert not changed, "\n".join(changed)
