"""Open every page of the built book in headless Chromium and check that it really renders.

    python tests/browser_check.py _build/html [--screenshots DIR] [--chromium PATH] [--chromedriver PATH]

The folder is served on 127.0.0.1 and every other host name is made unresolvable, so a page that
needs the internet fails here. For each HTML page of the book it checks that the page loaded
(HTTP 200, a title and an article), that every image of the book loaded (complete, naturalWidth
> 0), that MathJax rendered every math element (each holds an mjx-container, and no TeX delimiter
such as $$ or \\( is left in the text outside code), that no Markdown table was left unrendered
(no |--- in the text), that no cell shows a stderr stream or a traceback, and that the browser console
logged no error.
Images from other hosts (the Colab badge) cannot load offline: they are listed, not failed, and so
are the console messages of their failed loads; any other resource from another host (a script, a
style sheet, a font) fails the page. Two console messages that the book's theme extensions log on
every build are listed as known, not failed (KNOWN below). It prints one line per page, saves a
screenshot of each, and exits with status 1 if any page failed.

`make book-check` runs it, and CI runs that after building the book; it needs Chromium and its driver
(on Debian: apt-get install chromium chromium-driver), which `.ci/run` installs.
"""

from __future__ import annotations

import argparse
import functools
import http.server
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
    driver.get(url)
    state = driver.execute_async_script(WAIT_FOR_MATHJAX)
    if state.startswith("error"):
        problems.append(state)
    page = driver.execute_script(INSPECT)
    # a window as tall as the page (up to 16000 px), so that lazy images load and the screenshot shows it all
    driver.set_window_size(1280, min(max(page["height"], 1000) + 200, 16000))
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
    if shot is not None:
        driver.save_screenshot(str(shot))
    summary = (f"images {len(local) - len(broken)}/{len(local)} loaded"
               + (f" (+{len(external)} external, offline: {', '.join(s.rsplit('/', 1)[-1] for s in external)})"
                  if external else "")
               + f", math {page['rendered']}/{page['math']} rendered ({page['containers']} mjx-container)"
               + f", console errors {len(errors)}" + (f" ({len(known)} known, ignored)" if known else ""))
    return problems, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per page")
    ap.add_argument("--chromium",
                    default=shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"))
    ap.add_argument("--chromedriver", default=shutil.which("chromedriver"))
    args = ap.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"{args.html} has no index.html: build the book first (make book).", file=sys.stderr)
        return 2
    if not args.chromium or not args.chromedriver:
        print("Chromium and chromedriver are needed: on Debian, apt-get install chromium chromium-driver "
              "(or pass --chromium and --chromedriver).", file=sys.stderr)
        return 2
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
