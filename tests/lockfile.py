"""constraints.txt: the exact versions the tests passed with, for every package the project needs.

    python tests/lockfile.py --write [constraints.txt]   # `make lock`: pin what this environment holds
    python tests/lockfile.py --diff [constraints.txt]    # what this environment holds that the file does not

The file pins the dependency closure of pyproject.toml's dependencies with the `dev` and `book` extras
(each requirement, what it needs in turn, with the extras asked for and the environment markers of the
machine that writes it), each at the version installed in the running environment, local version
labels dropped (torch 2.13.0+cpu is pinned as torch==2.13.0, which the CPU and CUDA builds both
satisfy). `make setup`, environment.yml and the notebooks' Colab install cells install with
`-c constraints.txt`; pyproject.toml keeps the lower bounds, and tests/test_lockfile.py fails where the
two disagree. `make upgrade-check` tries the newest versions in a scratch environment.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
LOCK = ROOT / "constraints.txt"
EXTRAS = ("dev", "book")
HEADER = """\
# The versions the tests passed with, for every package minitune needs (pyproject.toml's dependencies
# with the dev and book extras, and what they need in turn), written by `make lock`
# (python tests/lockfile.py --write) from the environment that passed `make test`, on Python {python}.
# `make setup` installs with `pip install -c constraints.txt -e ".[dev,book]"`; pyproject.toml keeps
# the lower bounds, and tests/test_lockfile.py checks that the two agree.
# python >= {floor}: the oldest Python that every pinned version installs on (make setup checks it)
"""
FLOOR_PREFIX = "# python >= "
# the Pythons a lock can ask for, oldest first: each minor release from 3.10 with its patch releases
PYTHONS = [f"3.{minor}.{patch}" for minor in range(10, 16) for patch in range(0, 21)]


def project() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(extras=EXTRAS) -> list[Requirement]:
    """pyproject.toml's dependencies and those of the given extras."""
    p = project()
    return [Requirement(r) for r in p["dependencies"]] + [
        Requirement(r) for e in extras for r in p.get("optional-dependencies", {}).get(e, [])]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def closure(extras=EXTRAS) -> dict[str, str]:
    """{canonical name: installed version} of everything the project's requirements need, here."""
    found: dict[str, str] = {}
    asked: dict[str, set[str]] = {}
    todo = [r for r in requirements(extras) if _applies(r, set())]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras_now = asked.setdefault(name, set())
        if name in found and set(req.extras) <= extras_now:
            continue
        extras_now |= set(req.extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is required but not installed here: install the project first (make setup).")
        found[name] = dist.version
        todo += [r for r in map(Requirement, dist.requires or []) if _applies(r, extras_now)]
    found.pop("minitune", None)
    return found


def requires_python(names) -> dict[str, str]:
    """{name: Requires-Python} of the installed distributions `names` that declare one."""
    out = {}
    for name in names:
        spec = metadata.distribution(name).metadata.get("Requires-Python")
        if spec:
            out[name] = spec
    return out


def python_floor(specs: dict[str, str]) -> str:
    """The oldest Python (of PYTHONS) that every Requires-Python in `specs` admits."""
    sets = [SpecifierSet(s) for s in specs.values()]
    for version in PYTHONS:
        if all(s.contains(version, prereleases=True) for s in sets):
            return version
    raise ValueError(f"No Python from {PYTHONS[0]} to {PYTHONS[-1]} satisfies every pin: {specs}")


def stated_floor(path=LOCK) -> str:
    """The Python floor that a constraints file's header states."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(FLOOR_PREFIX):
            return line[len(FLOOR_PREFIX):].split(":", 1)[0].strip()
    raise ValueError(f"{path} states no Python floor (a line {FLOOR_PREFIX!r}...): rewrite it with `make lock`.")


def public(version: str) -> str:
    return Version(version).public


def render(pins: dict[str, str]) -> str:
    floor = python_floor(requires_python(pins))
    return HEADER.format(python=".".join(map(str, sys.version_info[:2])), floor=floor) + "".join(
        f"{name}=={public(v)}\n" for name, v in sorted(pins.items()))


def read(path=LOCK) -> dict[str, str]:
    """{canonical name: version} of a constraints file (lines `name==version`, comments ignored)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        if spec.operator != "==":
            raise ValueError(f"{path}: {line!r} is not a pin (name==version).")
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def disagreements(pins: dict[str, str], reqs: list[Requirement]) -> list[str]:
    """One sentence for each requirement that the pins leave out or pin outside its bounds."""
    out = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pins:
            out.append(f"{req.name} is required by pyproject.toml ({req}) but not pinned in the lock file.")
        elif not req.specifier.contains(pins[name], prereleases=True):
            out.append(f"{req.name} is pinned at {pins[name]}, outside pyproject.toml's {req}.")
    return out


def diff(pins: dict[str, str], here: dict[str, str]) -> list[str]:
    """Lines `name: pinned -> here` for each package whose version here differs from the pin (or is not pinned)."""
    return [f"{n}: {pins.get(n, 'not pinned')} -> {public(v)}" for n, v in sorted(here.items())
            if pins.get(n) != public(v)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--write", action="store_true", help="pin the versions installed here")
    what.add_argument("--diff", action="store_true", help="list the versions here that differ from the file")
    ap.add_argument("path", nargs="?", type=Path, default=LOCK)
    args = ap.parse_args(argv)
    here = closure()
    if args.write:
        args.path.write_text(render(here))
        print(f"{args.path}: {len(here)} packages pinned")
        return 0
    changed = diff(read(args.path), here)
    print("\n".join(changed) if changed else f"every package here has the version pinned in {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
