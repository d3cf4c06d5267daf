"""tests/browser_check.py (`make book-check`) on a small site written here: it fails a page on horizontal
overflow, names the element, passes a page that fits, and screenshots whole pages however tall."""

import pytest

import browser_check

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ margin: 0; }} article {{ width: 700px; margin: 0 auto; }} pre {{ overflow-x: auto; }}</style></head>
<body><article><section id="{title}"><h1>{title}</h1>{body}</section></article></body></html>"""

WIDE_PRE = "<pre>" + "x" * 300 + "</pre>"
WIDE_TABLE = "<table><tr>" + "<td>a-rather-long-cell-value</td>" * 30 + "</tr></table>"
WRAPPED = '<pre style="white-space: pre-wrap">' + "word " * 200 + "</pre>"


@pytest.fixture
def site(tmp_path):
    pages = {"index": "<p>short</p>" + WRAPPED, "code": "<p>a printed line</p>" + WIDE_PRE, "table": WIDE_TABLE,
             "tall": "<p>top</p>" + '<div style="height: 22000px"></div>' + "<p>bottom</p>"}
    for name, body in pages.items():
        (tmp_path / "html" / f"{name}.html").parent.mkdir(exist_ok=True)
        (tmp_path / "html" / f"{name}.html").write_text(PAGE.format(title=name, body=body))
    return tmp_path


def test_overflow_fails_the_page_and_names_the_element(site, browser_paths, capsys):
    chromium, chromedriver = browser_paths
    code = browser_check.main([str(site / "html"), "--screenshots", str(site / "shots"),
                               "--chromium", chromium, "--chromedriver", chromedriver])
    out = capsys.readouterr().out
    lines, found = {}, {}  # each page's line, and the indented lines under it
    for line in out.splitlines():
        if line[:4] in ("ok  ", "FAIL"):
            page = line.split()[1]
            lines[page], found[page] = line, []
        elif line.startswith("       "):
            found[page].append(line.strip())
    assert code == 1 and "2 of 4 pages passed" in out, out
    assert lines["index.html"].startswith("ok") and lines["tall.html"].startswith("ok"), out
    assert lines["code.html"].startswith("FAIL") and lines["table.html"].startswith("FAIL"), out
    assert found["index.html"] == [] and found["tall.html"] == []
    (pre,) = found["code.html"]
    assert 'wider than the column: pre in #code "xxxxxxxx' in pre and pre.endswith(" px in 700 px"), out
    table = found["table.html"]
    assert any("wider than the column: table in #table" in p and p.endswith(" px in 700 px") for p in table), out
    assert any("the article (content column)" in p for p in table), out

    from PIL import Image

    assert Image.open(site / "shots" / "index.png").size[0] == 1280
    tall = Image.open(site / "shots" / "tall.png")
    assert tall.size[0] == 1280 and tall.size[1] >= 22000, tall.size  # the whole page, not a fixed height
    bottom = tall.crop((0, tall.size[1] - 200, 1280, tall.size[1])).convert("L")
    assert bottom.getextrema()[0] < 128  # the last paragraph's text is in the picture


def test_a_missing_browser_skips_with_what_to_install_except_under_ci(site, monkeypatch, capsys):
    monkeypatch.setattr(browser_check, "find_browser", lambda: (None, None))
    monkeypatch.delenv("MINITUNE_CI", raising=False)
    assert browser_check.main([str(site / "html")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "skipped" in out and "apt-get install chromium chromium-driver" in out
    monkeypatch.setenv("MINITUNE_CI", "1")
    assert browser_check.main([str(site / "html")]) == 2
    assert "apt-get install chromium chromium-driver" in capsys.readouterr().err
