"""The repository's address lives in one place, _config.yml's `repository` (`url`, `branch`); the rest follows it.

    python tests/repository.py                          # list what does not follow _config.yml (status 1 if any)
    python tests/repository.py --set URL [--branch B]   # a fork: `make repository URL=https://github.com/you/minitune`

What follows it: Jupyter Book's repository button and launch buttons (they read _config.yml), each
notebook's Colab badge and its install cell's REPOSITORY constant (which also locates constraints.txt
for Colab), pyproject.toml's [project.urls], and the README's link to the published book, whose
address GitHub Pages derives from the repository's: https://OWNER.github.io/NAME/. `--set` rewrites
them all; tests/test_repository.py and tests/test_notebooks.py fail where one disagrees. Standard
library only, so that it runs before `make setup`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)/?$")
CONFIG_REPOSITORY = re.compile(r"^(repository:\n(?:[ \t]+.*\n)*?[ \t]+url:[ \t]*)(\S+)(.*)$", re.M)
CONFIG_BRANCH = re.compile(r"^(repository:\n(?:[ \t]+.*\n)*?[ \t]+branch:[ \t]*)(\S+)(.*)$", re.M)
URLS = re.compile(r"^\[project\.urls\]\n(?:.+\n)*", re.M)
BOOK_LINK = re.compile(r"https://[\w.-]+\.github\.io/[\w./-]*")
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+")
CONSTANT = re.compile(r'^REPOSITORY = "[^"]*"', re.M)


def address(root=ROOT) -> tuple[str, str]:
    """(url, branch) from _config.yml's `repository`."""
    text = (root / "_config.yml").read_text()
    url, branch = CONFIG_REPOSITORY.search(text), CONFIG_BRANCH.search(text)
    if not url:
        raise ValueError("_config.yml has no repository.url.")
    return url.group(2).rstrip("/"), branch.group(2) if branch else "main"


def owner_name(url: str) -> tuple[str, str]:
    match = GITHUB.match(url)
    if not match:
        raise ValueError(f"{url} is not a GitHub repository's address (https://github.com/OWNER/NAME).")
    return match.group(1), match.group(2).removesuffix(".git")


def book_url(url: str) -> str:
    """Where GitHub Pages publishes the book of the repository at `url`."""
    owner, name = owner_name(url)
    site = f"https://{owner.lower()}.github.io/"
    return site if name.lower() == f"{owner.lower()}.github.io" else f"{site}{name}/"


def project_urls(url: str) -> dict[str, str]:
    return {"Homepage": url, "Documentation": book_url(url), "Source": url, "Issues": f"{url}/issues"}


def urls_block(url: str) -> str:
    return "[project.urls]\n" + "".join(f'{k} = "{v}"\n' for k, v in project_urls(url).items())


def notebook_links(url: str, branch: str, name: str) -> tuple[str, str]:
    """A notebook's Colab badge URL and its install cell's REPOSITORY line."""
    owner, repo = owner_name(url)
    return (f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/notebooks/{name}",
            f'REPOSITORY = "{url}"')


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def sync(root=ROOT, url: str | None = None, branch: str | None = None) -> list[str]:
    """Write `url` and `branch` (default: _config.yml's own) into _config.yml and everything that follows it;
    returns the files changed."""
    old_url, old_branch = address(root)
    url, branch = (url or old_url).rstrip("/"), branch or old_branch
    owner_name(url)  # a GitHub address, or a ValueError
    changed = []

    def write(path: Path, text: str):
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path.relative_to(root).as_posix())

    config = (root / "_config.yml").read_text()
    config = CONFIG_REPOSITORY.sub(lambda m: m.group(1) + url + m.group(3), config)
    config = CONFIG_BRANCH.sub(lambda m: m.group(1) + branch + m.group(3), config)
    write(root / "_config.yml", config)

    pyproject = (root / "pyproject.toml").read_text()
    if URLS.search(pyproject):
        pyproject = URLS.sub(lambda m: urls_block(url), pyproject)
    else:
        extras = "\n[project.optional-dependencies]"
        pyproject = pyproject.replace(extras, f"\n{urls_block(url)}{extras}")
    write(root / "pyproject.toml", pyproject)

    write(root / "README.md", BOOK_LINK.sub(book_url(url), (root / "README.md").read_text(encoding="utf-8")))

    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        badge, constant = notebook_links(url, branch, path.name)
        before = json.dumps(nb)
        for k, cell in enumerate(nb["cells"]):
            source = "".join(cell["source"])
            if k == 0:
                source = BADGE.sub(badge, source)
            elif cell["cell_type"] == "code" and "%pip install" in source:
                source = CONSTANT.sub(constant, source)
            cell["source"] = _lines(source)
        if json.dumps(nb) != before:  # as nbformat writes it
            write(path, json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
    return changed


def problems(root=ROOT) -> list[str]:
    """One line for each file that does not follow _config.yml's repository."""
    url, _ = address(root)
    out = []
    text = (root / "pyproject.toml").read_text()
    if urls_block(url) not in text:
        out.append(f"pyproject.toml: [project.urls] must read\n{urls_block(url)}")
    links = BOOK_LINK.findall((root / "README.md").read_text(encoding="utf-8"))
    if not links or any(link != book_url(url) for link in links):
        out.append(f"README.md: the link to the published book must be {book_url(url)} (found: {links or 'none'})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="url", metavar="URL", help="the repository's address, https://github.com/OWNER/NAME")
    ap.add_argument("--branch", help="the branch that the badges and the repository button open (default: unchanged)")
    args = ap.parse_args(argv)
    if args.url or args.branch:
        try:
            changed = sync(url=args.url, branch=args.branch)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
        url, branch = address()
        print(f"repository {url} (branch {branch}), book {book_url(url)}; "
              + (f"rewrote {', '.join(changed)}" if changed else "nothing to change"))
        return 0
    found = problems()
    print("\n".join(found) if found else f"everything follows _config.yml: {address()[0]}, book {book_url(address()[0])}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
