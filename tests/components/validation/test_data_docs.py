"""Data Docs render offline: no CSS/JS from CDNs, named assets, every dataset check's results.

The Chromium tests load the pages with every host name unresolvable, so a page that still
needed a CDN would render empty tables. They skip where `chromium` is not installed
(Debian/Ubuntu: `apt-get install -y chromium`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from components.config import ValidateConfig
from components.validate import DataValidationError, accept_profile, validate
from components.validation.data_docs import offline_page
from tests.helpers_data import make_splits, write_prepared

CLASSES = ["c0", "c1", "c2"]
ASSETS = {"train", "val", "test", "class_counts", "leakage", "rejected_items", "drift"}
REJECTED = [{"id": "raw/7/broken.png", "reason": "cannot identify image file"}]
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data Docs of a run with train/test leakage and a rejected file, checked for drift."""
    root = tmp_path_factory.mktemp("docs")
    write_prepared(root / "clean", make_splits(), class_names=CLASSES)
    validate(ValidateConfig(reference_profile=str(root / "none.json")), root / "clean",
             root / "clean_report", root / "clean.json")
    reference = accept_profile(root / "clean_report", root / "reference.json")
    arrays = make_splits()
    arrays["test"]["x"][4] = arrays["train"]["x"][1]
    write_prepared(root / "prepared", arrays, class_names=CLASSES, rejected=REJECTED)
    with pytest.raises(DataValidationError, match="train/test leakage"):
        validate(ValidateConfig(reference_profile=str(reference)), root / "prepared",
                 root / "report", root / "metrics.json")
    return root / "report/data_docs"


class References(HTMLParser):
    """What a page loads: stylesheets, scripts, images, and `url(...)` in inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "link" and a.get("href"):
            self.loaded.append(a["href"])
        elif tag in ("script", "img") and a.get("src"):
            self.loaded.append(a["src"])
        self._in_style = tag == "style"
        self.loaded += re.findall(r"url\(\s*['\"]?([^'\")]+)", a.get("style") or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.loaded += re.findall(r"url\(\s*['\"]?([^'\")]+)", data)


def loaded_by(page: Path) -> list[str]:
    parser = References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.loaded


def validation_page(docs: Path, asset: str) -> Path:
    (page,) = docs.glob(f"validations/**/prepared-{asset}.html")
    return page


def test_data_docs_load_no_css_js_or_image_from_the_network(docs):
    pages = sorted(docs.rglob("*.html"))
    assert len(pages) == 1 + 2 * len(ASSETS) - 2  # index, a page per validation and per suite
    for page in pages:
        refs = loaded_by(page)
        assert any(r.endswith("static/styles/offline.css") for r in refs), page
        remote = [r for r in refs if REMOTE.match(r)]
        assert not remote, f"{page} loads from the network: {remote}"
        missing = [r for r in refs if not r.startswith("data:")
                   and not (page.parent / r.split("?")[0]).is_file()]
        assert not missing, f"{page} references missing local files: {missing}"


def test_data_docs_name_the_data_asset_of_every_validation(docs):
    named = set()
    for page in docs.glob("validations/**/*.html"):
        (asset,) = re.findall(r"Data asset:\s*([^<\s]+)", page.read_text(encoding="utf-8"))
        named.add(asset)
    assert named == {f"prepared/{a}" for a in ASSETS}


def test_data_docs_index_rows_are_in_the_html_without_js(docs):
    text = (docs / "index.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr data-href=\"(validations/[^\"]+)\">(.*?)</tr>", text, re.S)
    assert {re.search(r"prepared-(\w+)\.html", link)[1] for link, _ in rows} == ASSETS
    status = {re.search(r"prepared-(\w+)\.html", link)[1]: "Failed" in row for link, row in rows}
    assert status == {a: a in ("leakage", "rejected_items") for a in ASSETS}


def test_offline_page_names_the_page_whose_table_it_cannot_read():
    page = ("<table\n  id=\"t\"\n>\n</table>\n<script>\n  $('#t').bootstrapTable(\n"
            "    Object.assign(\n      {\n        columns: [{'field': x}],\n"
            "        data: [],\n        toolbar: '#t-toolbar'\n      },\n      {}\n    )\n  );")
    with pytest.raises(ValueError, match=r"docs/index.html: cannot read the rows of table #t"):
        offline_page(page, "", "docs/index.html")


def test_offline_page_refuses_a_bootstrap_table_it_cannot_prerender():
    page = "<table id=\"t\"></table><script>$('#t').bootstrapTable(Object.assign({}, {}));"
    with pytest.raises(ValueError, match=r"docs/index.html: 1 bootstrap-table\(s\) but 0"):
        offline_page(page, "", "docs/index.html")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not on PATH (Debian/Ubuntu: apt-get install -y chromium)")


def render(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after headless Chromium ran the page's scripts, with no host name resolvable."""
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed on {page}: {proc.stderr[-2000:]}"
    return proc.stdout, proc.stderr


class Rows(HTMLParser):
    """The text of every table row in a DOM (a nested table's text counts for its row too)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self._open.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._open:
            self.rows.append(" ".join(" ".join(self._open.pop()).split()))

    def handle_data(self, data: str) -> None:
        for row in self._open:
            row.append(data)


def rows(dom: str) -> list[str]:
    parser = Rows()
    parser.feed(dom)
    return parser.rows


@needs_chromium
def test_chromium_renders_the_index_rows_offline(docs, tmp_path):
    dom, log = render(docs / "index.html", tmp_path)
    shown = rows(dom)
    for asset in ASSETS:
        assert any(f"prepared/{asset}" in r.split() for r in shown), \
            f"index shows no row for prepared/{asset}"
    assert "Uncaught" not in log, log


@needs_chromium
@pytest.mark.parametrize(("asset", "expected"), [
    ("leakage", ["If split == \"test\", then values must be null.",
                 "test-0004 = train train-0001"]),
    ("rejected_items", ["Must have exactly 0 rows."]),
    ("class_counts", ["If split == \"val\" and declared == True and samples > 0, then values "
                      "must be greater than or equal to 1.0."]),
    ("drift", ["If kind == \"intensity\", then values must be greater than or equal to 0.0 "
               "and less than or equal to 0.1."]),
])
def test_chromium_renders_dataset_expectation_results_offline(docs, tmp_path, asset, expected):
    dom, log = render(validation_page(docs, asset), tmp_path)
    shown = ["".join(r.split()) for r in rows(dom)]  # text nodes join with stray spaces
    for text in expected:
        assert any("".join(text.split()) in r for r in shown), \
            f"{asset}: no result row with {text!r}"
    text = Rows()
    text.feed(f"<tr>{dom}</tr>")  # the whole page's text as one row
    assert f"Data asset: prepared/{asset}" in text.rows[-1]
    assert "Uncaught" not in log, log
