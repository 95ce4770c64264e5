"""Make GX-rendered Data Docs work offline: no CSS or JS from CDNs, index tables prerendered.

GX 1.x's page templates link Bootstrap, bootstrap-table, jQuery, Font Awesome and Vega from
CDNs and ship no local copies; the index tables are empty `<table>`s that bootstrap-table fills
from a script, so offline they never render. After GX has rendered the site, `make_offline`
(1) replaces every CDN `<link>`/`<script>` with one local stylesheet and one local script under
`static/`, (2) writes each bootstrap-table's rows into its `<table>` as plain HTML, so the
tables render with no JS at all, and (3) points the remote GX logo at its copy in
`static/images/` and drops remote `url(...)` images from styles.
The pages stay GX's own; only the references to the network change.
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from typing import Any

from components.core.io import atomic_write_text

STYLESHEET = "static/styles/offline.css"
SCRIPT = "static/scripts/offline.js"

_REMOTE_TAG = re.compile(
    r"""<link\b[^>]*\bhref=["']https?://[^>]*>"""
    r"""|<script\b[^>]*\bsrc=["']https?://[^>]*>\s*</script>""", re.I)
_REMOTE_URL = re.compile(r"""url\(\s*["']?https?://[^)]*\)""", re.I)
_LOCAL_STATIC = re.compile(r"""\b(href|src)=(["'])(?:\./|\.\./)*static/""")
_REMOTE_IMG = re.compile(  # GX's logo, of which static/images holds a copy
    r"""(<img\b[^>]*?\bsrc=)["']https?://[^"']*?/([^/"'?]+)(?:\?[^"']*)?["']""", re.I)
_TABLE_SCRIPT = re.compile(  # bootstrap_table.j2: columns, data and options, one line each
    r"\$\('#(?P<id>[^']+)'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*"
    r"columns: (?P<columns>\[[^\n]*\]),\s*\n\s*data: (?P<data>\[[^\n]*\]),\s*\n"
    r"[^\n]*\n\s*\},\s*(?P<options>\{[^\n]*\})\s*\n")
_TABLE_CALL = re.compile(r"\.bootstrapTable\(\s*Object\.assign")

# A stand-in for the few Bootstrap 4 / bootstrap-table / Font Awesome rules the pages rely on;
# GX's own inline styles come after it and win where both apply.
OFFLINE_CSS = """\
*, ::before, ::after { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       font-size: .9rem; line-height: 1.5; color: #212529; background: #fff; }
a { color: #0069d9; text-decoration: none; } a:hover { text-decoration: underline; }
.container-fluid { width: 100%; padding: 0 15px; }
.row { display: flex; flex-wrap: wrap; margin: 0 -15px; }
[class*="col-"] { position: relative; width: 100%; padding: 0 15px; }
.col-12 { flex: 0 0 100%; max-width: 100%; }
@media (min-width: 768px) {
  .col-md-2 { flex: 0 0 16.667%; max-width: 16.667%; }
  .col-md-4 { flex: 0 0 33.333%; max-width: 33.333%; }
  .col-md-6 { flex: 0 0 50%; max-width: 50%; }
  .col-md-8 { flex: 0 0 66.667%; max-width: 66.667%; }
  .col-md-10 { flex: 0 0 83.333%; max-width: 83.333%; }
  .col-md-12 { flex: 0 0 100%; max-width: 100%; }
}
.navbar { display: flex; flex-wrap: wrap; align-items: center; padding: .5rem 1rem;
          border-bottom: 1px solid #dee2e6; }
.breadcrumb { display: flex; flex-wrap: wrap; list-style: none; margin: 0; padding: 0; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; padding: 0 .5rem; color: #6c757d; }
.table { width: 100%; margin-bottom: 1rem; border-collapse: collapse; }
.table th, .table td { padding: .3rem .5rem; border-top: 1px solid #dee2e6; text-align: left;
                       vertical-align: top; }
.table thead th { border-bottom: 2px solid #dee2e6; }
.table tbody tr:hover { background: #f5f5f5; }
.card { border: 1px solid rgba(0, 0, 0, .125); border-radius: .25rem; margin-bottom: 1rem; }
.card-header { padding: .5rem 1rem; background: rgba(0, 0, 0, .03);
               border-bottom: 1px solid rgba(0, 0, 0, .125); }
.card-body { padding: 1rem; }
.btn { display: inline-block; padding: .25rem .5rem; margin: .1rem; border: 1px solid #6c757d;
       border-radius: .2rem; background: #f8f9fa; color: #212529; cursor: pointer; }
.collapse:not(.show), .modal, [hidden], .d-none { display: none !important; }
.text-success { color: #28a745; } .text-danger { color: #dc3545; }
.text-warning { color: #d39e00; } .text-muted { color: #6c757d; }
.fas, .far, .fa { font-style: normal; }
.fa-check-circle::before { content: "\\2714"; } .fa-times::before { content: "\\2718"; }
.fa-exclamation-triangle::before { content: "\\26A0"; }
.fa-question-circle::before { content: "?"; } .fa-comment::before { content: "\\1F4AC"; }
.cooltip { position: relative; } .cooltip .top { display: none; }
.cooltip:hover .top { display: block; position: absolute; z-index: 10; white-space: pre;
                      background: #fff; border: 1px solid #ccc; padding: .5rem; }
.ge-status-text { margin-left: .3rem; }
"""

# The jQuery calls GX's inline scripts make, over the DOM: show/hide buttons, collapsibles and
# classes work; anything else (bootstrap-table, modals, events) is a no-op, so no script throws
# (the tables are already rendered).
OFFLINE_JS = """\
(function () {
  function wrap(nodes) {
    var w = {
      nodes: nodes,
      each: function (fn) { nodes.forEach(function (n, i) { fn(i, n); }); return w; },
      parent: function () { return wrap(nodes.map(function (n) { return n.parentNode; })
                                         .filter(Boolean)); },
      fadeIn: function () { nodes.forEach(function (n) { n.style.display = ""; }); return w; },
      fadeOut: function () { nodes.forEach(function (n) { n.style.display = "none"; });
                             return w; },
      prepend: function (h) { nodes.forEach(function (n) { n.insertAdjacentHTML("afterbegin", h);
                                                          }); return w; },
      ready: function (fn) {
        if (document.readyState !== "loading") { fn(); }
        else { document.addEventListener("DOMContentLoaded", fn); }
        return w;
      },
      addClass: function (c) { nodes.forEach(function (n) { n.classList.add(c); }); return w; },
      removeClass: function (c) { nodes.forEach(function (n) { n.classList.remove(c); });
                                  return w; }
    };
    // any other call (bootstrapTable, on, modal, tooltip, ...) does nothing and chains
    var p = new Proxy(w, { get: function (t, k) {
      return k in t ? t[k] : (typeof k === "string" ? function () { return p; } : undefined);
    } });
    return p;
  }
  window.$ = window.jQuery = function (sel) {
    if (typeof sel === "function") { return wrap([document]).ready(sel); }
    if (typeof sel !== "string") { return wrap([sel]); }
    try { return wrap(Array.prototype.slice.call(document.querySelectorAll(sel))); }
    catch (e) { return wrap([]); }
  };
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest("[data-toggle=collapse]");
    if (!a) { return; }
    var target = document.getElementById((a.getAttribute("href") || "").replace(/^#/, ""));
    if (target) { ev.preventDefault(); target.classList.toggle("show"); }
  });
})();
"""


def make_offline(docs_dir: Path) -> list[Path]:
    """Rewrite every page under `docs_dir` to need no network; return the pages rewritten."""
    docs_dir = Path(docs_dir)
    atomic_write_text(docs_dir / STYLESHEET, OFFLINE_CSS)
    atomic_write_text(docs_dir / SCRIPT, OFFLINE_JS)
    for sheet in sorted((docs_dir / "static/styles").glob("*.css")):
        atomic_write_text(sheet, _REMOTE_URL.sub("none", sheet.read_text(encoding="utf-8")))
    pages = sorted(docs_dir.rglob("*.html"))
    for page in pages:
        up = "../" * (len(page.relative_to(docs_dir).parts) - 1)
        text = page.read_text(encoding="utf-8")
        atomic_write_text(page, offline_page(text, up, page))
    return pages


def offline_page(text: str, up: str, page: Path | str = "page") -> str:
    """One page with its CDN references swapped for `up`-relative local ones, tables filled."""
    local = (f'<link rel="stylesheet" href="{up}{STYLESHEET}">\n'
             f'<script src="{up}{SCRIPT}"></script>')
    first = _REMOTE_TAG.search(text)
    if first:
        text = text[:first.start()] + "\0LOCAL\0" + text[first.end():]
        text = _REMOTE_TAG.sub("", text).replace("\0LOCAL\0", local, 1)
    text = _REMOTE_URL.sub("none", text)
    # GX counts one folder too few on validation pages (the favicon): point all at `static/`
    text = _LOCAL_STATIC.sub(lambda m: f"{m[1]}={m[2]}{up}static/", text)
    text = _REMOTE_IMG.sub(lambda m: f'{m[1]}"{up}static/images/{m[2]}"', text)
    tables = list(_TABLE_SCRIPT.finditer(text))
    if len(tables) != len(_TABLE_CALL.findall(text)):  # a GX template unlike bootstrap_table.j2
        raise ValueError(f"{page}: {len(_TABLE_CALL.findall(text))} bootstrap-table(s) but "
                         f"{len(tables)} in the form bootstrap_table.j2 writes; the rest "
                         "would render empty offline")
    for m in tables:
        try:
            columns, rows, options = (ast.literal_eval(m[k]) for k in ("columns", "data",
                                                                       "options"))
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{page}: cannot read the rows of table #{m['id']}: {e}") from e
        empty = re.compile(r'(<table\s+id="' + re.escape(m["id"]) + r'"[^>]*>)\s*(</table>)')
        body = _render_rows(columns, rows, options)
        text = empty.sub(lambda t, body=body: t[1] + body + t[2], text, count=1)
    return text


def _render_rows(columns: list[dict], rows: list[dict], options: dict) -> str:
    """bootstrap-table's columns and data as a static `<thead>` and `<tbody>`."""
    sort = options.get("sortName")
    key = next((c.get("sortName", c["field"]) for c in columns if c["field"] == sort), sort)
    if key:
        rows = sorted(rows, key=lambda r: (0, r[key], "") if isinstance(r.get(key), int | float)
                      else (1, 0, str(r.get(key, ""))), reverse=options.get("sortOrder") == "desc")
    head = "".join(f"<th>{html.escape(str(c.get('title', c['field'])))}</th>" for c in columns)
    body = []
    for row in rows:
        link = row.get("_table_row_link_path")
        cells = []
        for i, c in enumerate(columns):
            cell = _cell(row.get(c["field"], ""))
            if c["field"] == "validation_success" and "_validation_success_text" in row:
                status = html.escape(row["_validation_success_text"])
                cell += f'<span class="ge-status-text">{status}</span>'
            if i == 0 and link and "<a " not in cell:
                cell = f'<a href="{html.escape(link)}">{cell}</a>'
            cells.append(f"<td>{cell}</td>")
        attr = f' data-href="{html.escape(link)}"' if link else ""
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f"\n<thead><tr>{head}</tr></thead>\n<tbody>{''.join(body)}</tbody>\n"


def _cell(value: Any) -> str:
    """bootstrap-table shows string cells as HTML (GX renders them so); others as text."""
    return value.strip() if isinstance(value, str) else html.escape(str(value))
