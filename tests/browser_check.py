"""Open every page of the built book in headless Chromium and check that it really renders.

    python tests/browser_check.py _build/html [--screenshots DIR] [--chromium PATH] [--chromedriver PATH]

The folder is served on 127.0.0.1 and every other host name is made unresolvable, so a page that
needs the internet fails here. For each HTML page of the book it checks that the page loaded
(HTTP 200, a title and an article), that every image of the book loaded (complete, naturalWidth
> 0), that MathJax rendered every math element (each holds an mjx-container, and no TeX delimiter
such as $$ or \\( is left in the text outside code), that no Markdown table was left unrendered
(no |--- in the text), that no cell shows a stderr stream or a traceback, that the browser console
logged no error, and that nothing is wider than the content column at 1280 px: neither the article
itself nor any element in it that scrolls sideways (a code block, a printed output, a table in its
scrolling box: scrollWidth > clientWidth) or sticks out of it (an image, a figure, a table). An
overflow is reported with its page, the element (tag, classes, the section it sits in and the start
of its text) and its width against the column's.
Images from other hosts (the Colab badge) cannot load offline: they are listed, not failed, and so
are the console messages of their failed loads; any other resource from another host (a script, a
style sheet, a font) fails the page. Two console messages that the book's theme extensions log on
every build are listed as known, not failed (KNOWN below). It prints one line per page, saves a
screenshot of each as tall as the page (the window is resized to the document's scrollHeight first),
and exits with status 1 if any page failed.

`make book-check` runs it, and CI runs that after building the book; it needs selenium, Chromium and
its driver (on Debian: apt-get install chromium chromium-driver), which `.ci/run` installs. Where they
are missing it prints one line saying what to install and exits with status 0, except under CI
(MINITUNE_CI set, as `.ci/run` does), where a missing browser is a failure (status 2). The tests that
drive a browser (tests/test_compare.py, tests/test_browser_check.py) skip or fail the same way.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import threading
import urllib.request
from pathlib import Path

SKIP = {"genindex.html", "search.html"}
KNOWN = {  # console messages from the theme's extensions, harmless, not the book's doing
    "Identifier 'THEBE_JS_URL' has already been declared": "sphinx-thebe adds its settings script twice; the first runs",
    "Got invalid theme mode": "pydata-sphinx-theme on a first visit, before a light/dark mode is stored",
}

WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
const wait = () => {
  if (document.readyState !== "complete") return setTimeout(wait, 50);
  if (!document.querySelector(".math")) return done("no math");
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)
    return MathJax.startup.promise.then(() => done("typeset"), (e) => done("error: " + e));
  if (Date.now() - start > 20000) return done("error: MathJax did not start within 20 s");
  setTimeout(wait, 50);
};
wait();
"""

INSPECT = """
const math = [...document.querySelectorAll(".math")];
const text = document.body.cloneNode(true);
text.querySelectorAll("pre, code, script, style, mjx-container, .math").forEach((e) => e.remove());
const raw = ["$$", "\\\\(", "\\\\[", "\\\\begin{"].filter((d) => text.textContent.includes(d));
if (/\\|\\s*:?[-\\u2013\\u2014]+:?\\s*\\|/.test(text.textContent)) raw.push("|---|");  // a table's rule row, maybe as dashes
return {
  title: document.title,
  article: !!document.querySelector("article"),
  images: [...document.images].map((i) => [i.src, i.complete && i.naturalWidth > 0]),
  math: math.length,
  rendered: math.filter((e) => e.querySelector("mjx-container")).length,
  containers: document.querySelectorAll("mjx-container").length,
  raw: raw,
  stderr: [...document.querySelectorAll(".output.stderr, .output.traceback")].map((e) => e.textContent.trim().slice(0, 120)),
  height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
};
"""

# Everything in the article that scrolls sideways or sticks out of the content column. Scroll boxes are
# found by their computed overflow-x; images, figures and tables by their box against the column's.
OVERFLOW = """
const article = document.querySelector("article");
if (!article) return [];
const box = article.getBoundingClientRect();
const found = [];
const describe = (e) => {
  const classes = [...e.classList].slice(0, 3).map((c) => "." + c).join("");
  const section = e.closest("section[id]");
  const text = (e.textContent || e.getAttribute("src") || e.getAttribute("alt") || "").replace(/\\s+/g, " ").trim().slice(0, 60);
  return e.tagName.toLowerCase() + classes + (section ? " in #" + section.id : "") + (text ? " " + JSON.stringify(text) : "");
};
const doc = document.documentElement;
if (doc.scrollWidth > doc.clientWidth + 1)
  found.push({element: "the page (html)", width: doc.scrollWidth, column: doc.clientWidth});
if (article.scrollWidth > article.clientWidth + 1)
  found.push({element: "the article (content column)", width: article.scrollWidth, column: article.clientWidth});
const seen = new Set();
for (const e of article.querySelectorAll("*")) {
  if (e.closest("mjx-assistive-mml")) continue;  // MathJax's hidden copy for screen readers
  const style = getComputedStyle(e);
  if (style.display === "none" || style.visibility === "hidden") continue;
  const r = e.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  let width = 0, column = 0;
  if (["auto", "scroll", "hidden", "clip"].includes(style.overflowX) && e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0) {
    width = e.scrollWidth; column = e.clientWidth;  // scrolls sideways (or hides what does not fit)
  } else if (/^(IMG|FIGURE|TABLE|PRE|SVG|VIDEO|IFRAME)$/i.test(e.tagName) && r.right > box.right + 1) {
    width = Math.round(r.right - box.left); column = Math.round(box.width);  // sticks out of the column
  }
  if (!width || [...seen].some((s) => s.contains(e))) continue;  // report the outermost element only
  seen.add(e);
  found.push({element: describe(e), width: width, column: column});
}
return found;
"""

IMAGES_DONE = "return [...document.images].every((i) => i.complete);"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the browser dropping a connection is not an error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


INSTALL = "apt-get install chromium chromium-driver"  # Debian and Ubuntu


def find_browser() -> tuple[str | None, str | None]:
    """Chromium's binary and chromedriver, from the PATH (None where missing)."""
    return (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"),
            shutil.which("chromedriver"))


def under_ci() -> bool:
    """CI sets MINITUNE_CI (`.ci/run`, the book's workflow): there a missing browser fails instead of skipping."""
    return os.environ.get("MINITUNE_CI", "") not in ("", "0")


def missing_browser(chromium: str | None = None, chromedriver: str | None = None) -> str | None:
    """None when selenium, Chromium and chromedriver are all here; otherwise one line saying what to install."""
    found = find_browser()
    chromium, chromedriver = chromium or found[0], chromedriver or found[1]
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install selenium (the book extra, make setup)."
    if not chromium or not chromedriver:
        what = " and ".join(n for n, p in (("Chromium", chromium), ("chromedriver", chromedriver)) if not p)
        return f"{what} not found: {INSTALL} (on Debian or Ubuntu)."
    return None


def browser(chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_script_timeout(30)
    driver.set_page_load_timeout(30)
    return driver


def check_page(driver, url: str, shot: Path | None) -> tuple[list[str], str]:
    """Load one page; return the problems found and a one-line summary."""
    from selenium.webdriver.support.ui import WebDriverWait

    problems = []
    driver.get_log("browser")  # drop what the previous page logged late
    with urllib.request.urlopen(url) as response:
        if response.status != 200:
            problems.append(f"HTTP {response.status}")
    driver.set_window_size(1280, 1000)  # the reader's window again: the last page's tall one would be this page's floor
    driver.get(url)
    state = driver.execute_async_script(WAIT_FOR_MATHJAX)
    if state.startswith("error"):
        problems.append(state)
    page = driver.execute_script(INSPECT)
    overflow = driver.execute_script(OVERFLOW)  # measured at the 1280 × 1000 window a reader has
    # a window as tall as the page, so that lazy images load and the screenshot shows all of it; the height
    # is measured again after each resize, until it holds
    for _ in range(3):
        inner = driver.execute_script("return window.innerHeight")
        chrome = driver.get_window_size()["height"] - inner
        if inner == max(page["height"], 1000):
            break
        driver.set_window_size(1280, max(page["height"], 1000) + chrome)
        WebDriverWait(driver, 15).until(lambda d: d.execute_script(IMAGES_DONE))
        page = driver.execute_script(INSPECT)
    if not page["title"] or not page["article"]:
        problems.append("no title or no article: the page did not load")
    origin = url.split("/", 3)[:3]
    local = [(src, ok) for src, ok in page["images"] if src.split("/", 3)[:3] == origin]
    external = [src for src, _ in page["images"] if src.split("/", 3)[:3] != origin]
    broken = [src for src, ok in local if not ok]
    if broken:
        problems.append("images not loaded: " + ", ".join(broken))
    if page["rendered"] < page["math"]:
        problems.append(f"MathJax rendered {page['rendered']} of {page['math']} math elements")
    if page["raw"]:
        problems.append("unrendered TeX or Markdown table in the text: " + " ".join(page["raw"]))
    if page["stderr"]:
        problems.append(f"{len(page['stderr'])} stderr or traceback output(s), the first: {page['stderr'][0]!r}")
    severe = list(dict.fromkeys(e["message"] for e in driver.get_log("browser")
                                if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]))
    known = [m for m in severe if any(k in m for k in KNOWN)]
    errors = [m for m in severe if m not in known and not any(m.startswith(src + " ") for src in external)]
    problems += [f"console: {m}" for m in errors]
    problems += [f"wider than the column: {o['element']}: {o['width']} px in {o['column']} px" for o in overflow]
    if shot is not None:
        driver.save_screenshot(str(shot))
    summary = (f"images {len(local) - len(broken)}/{len(local)} loaded"
               + (f" (+{len(external)} external, offline: {', '.join(s.rsplit('/', 1)[-1] for s in external)})"
                  if external else "")
               + f", math {page['rendered']}/{page['math']} rendered ({page['containers']} mjx-container)"
               + f", console errors {len(errors)}" + (f" ({len(known)} known, ignored)" if known else "")
               + f", overflowing elements {len(overflow)}, {page['height']} px tall")
    return problems, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per page")
    ap.add_argument("--chromium", default=find_browser()[0])
    ap.add_argument("--chromedriver", default=find_browser()[1])
    args = ap.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"{args.html} has no index.html: build the book first (make book).", file=sys.stderr)
        return 2
    if missing := missing_browser(args.chromium, args.chromedriver):
        if under_ci():
            print(f"The browser check needs a browser under CI: {missing}", file=sys.stderr)
            return 2
        print(f"browser check skipped: {missing}")
        return 0
    pages = sorted(p.relative_to(args.html).as_posix() for p in args.html.rglob("*.html")
                   if not any(part.startswith("_") for part in p.relative_to(args.html).parts) and p.name not in SKIP)
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    server, base = serve(args.html)
    driver = browser(args.chromium, args.chromedriver)
    failed = 0
    try:
        for page in pages:
            shot = args.screenshots / (page.removesuffix(".html").replace("/", "__") + ".png") if args.screenshots else None
            try:
                problems, summary = check_page(driver, f"{base}/{page}", shot)
            except Exception as e:  # a timeout or a crashed page is a failed page, not a crashed check
                problems, summary = [f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"], "not checked"
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {page:40s} {summary}" + "".join(f"\n       {p}" for p in problems))
    finally:
        driver.quit()
        server.shutdown()
    print(f"{len(pages) - failed} of {len(pages)} pages passed"
          + (f"; screenshots in {args.screenshots}" if args.screenshots else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
