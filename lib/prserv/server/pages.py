"""The HTML pages of the HTTP listener, rendered from the JSON API's documents.

Each page is its JSON answer's twin: ``web.WebRoutes`` builds the same document
(``status``, ``recent_data``, ``packages_data``, ``history_data``) and hands it here,
so a page never shows what the API would not.  Pure functions from documents to
bytes: no I/O, no state, the standard library only.

What every page holds to, because a page shows what clients sent (versions,
pkgarchs, checksums, users: anything):

* every such string goes through ``esc`` (``html.escape`` with quotes), in text,
  in attribute values and inside the SVG plot;
* no script and no inline style: the answer's ``Content-Security-Policy``
  (``HEADERS``) forbids both, so an injection that slipped through would still not
  run; the one stylesheet is ``STYLESHEET``, served at ``STYLESHEET_URL``, and the
  plot uses SVG presentation attributes;
* links are built with ``urlencode``, so a version with ``&`` or ``#`` in it
  still names its package.

A time the record does not know (``given`` null) reads "unknown"; the address and
user columns are there only when the documents carry them (viewers that may write);
the status' ``mirror`` and ``upstream_state`` are shown key by key, whatever they hold.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlencode

from ..oefile import export_lines
from ..timestamps import datetime_of, parse_rfc3339

HOME = "/"
PACKAGES = "/packages"
PACKAGE = "/package"
RECENT = "/recent"
STYLESHEET_URL = "/static/prserv.css"
ROUTES = (HOME, PACKAGES, PACKAGE, RECENT)
"""The paths of the pages (the stylesheet is served beside them)."""
HOME_RECENT = 50
"""How many of the last values given the home page lists."""

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = (("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
           ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "no-referrer"))
"""Every page's headers: no script may run, nothing may frame the page, no URL of
it (which names packages) leaks to another site."""
STYLESHEET_HEADERS = (("Content-Type", "text/css; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))

Document = Dict[str, Any]
Parameters = Optional[List[Tuple[str, str]]]
"""The query parameters of the page after this one (None: this is the last)."""


STYLESHEET = b"""\
:root { color-scheme: light; --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --accent: #0a58ca; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f6f8fa; }
header { display: flex; flex-wrap: wrap; gap: 0.25rem 1rem; align-items: baseline;
         padding: 0.6rem 1rem; background: #24292f; }
header a { color: #fff; text-decoration: none; }
header .brand { font-weight: 700; font-size: 1.1rem; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.4rem; margin: 0.2rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 0.5rem; }
a { color: var(--accent); }
p, dd, dt, li { overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0.2rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.scroll { max-width: 100%; overflow-x: auto; background: #fff; border: 1px solid var(--line);
          border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
th, td { text-align: left; padding: 0.35rem 0.6rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: #eaeef2; font-weight: 600; }
tr:last-child td { border-bottom: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85rem; }
pre { max-width: 100%; overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 6px;
      padding: 0.6rem; margin: 0; }
form.search { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: end; margin: 0.5rem 0 1rem; }
form.search label { display: flex; flex-direction: column; font-size: 0.85rem; color: var(--muted);
                    flex: 1 1 10rem; min-width: 0; }
input { font: inherit; padding: 0.35rem 0.5rem; border: 1px solid var(--line); border-radius: 6px;
        width: 100%; min-width: 0; }
button { font: inherit; padding: 0.35rem 0.9rem; border: 1px solid var(--accent); border-radius: 6px;
         background: var(--accent); color: #fff; }
nav.pager { margin: 0.75rem 0; }
.muted { color: var(--muted); }
figure.plot { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem; }
figure.plot svg { display: block; width: 100%; height: auto; }
figure.plot figcaption { font-size: 0.85rem; color: var(--muted); }
"""


# --------------------------------------------------------------------------- pieces

def esc(text: Any) -> str:
    """``text`` safe in HTML text and in quoted attribute values (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def link(path: str, parameters: Sequence[Tuple[str, str]], text: str, rel: Optional[str] = None) -> str:
    """An ``<a>`` to ``path`` with ``parameters`` percent-encoded; ``text`` escaped here."""
    target = path + ("?" + urlencode(list(parameters)) if parameters else "")
    relation = ' rel="%s"' % esc(rel) if rel else ""
    return '<a href="%s"%s>%s</a>' % (esc(target), relation, esc(text))


def package_link(version: str, pkgarch: str, text: Optional[str] = None) -> str:
    """A link to one package's page (the version is the link's text by default)."""
    return link(PACKAGE, [("version", version), ("pkgarch", pkgarch)], version if text is None else text)


def parse_time(given: Optional[str]) -> Optional[datetime]:
    """An RFC 3339 time as the documents write it, or None (absent or unreadable)."""
    if not isinstance(given, str):
        return None
    try:
        return datetime_of(parse_rfc3339(given))
    except ValueError:
        return None


def when(given: Optional[str]) -> str:
    """A time as a page shows it: to the second, in UTC, or "unknown".  The documents'
    own form (``2026-12-06T10:00:00.123456Z``) is cut, not parsed."""
    if isinstance(given, str) and len(given) == 27 and given.endswith("Z") and given[10] == "T":
        return '<time datetime="%s">%s %s UTC</time>' % (esc(given), esc(given[:10]), esc(given[11:19]))
    moment = parse_time(given)
    if moment is None:
        return text_or_unknown(given)
    shown = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return '<time datetime="%s">%s</time>' % (esc(given), esc(shown))


def text_or_unknown(value: Any) -> str:
    return '<span class="muted">unknown</span>' if value is None else esc(value)


def table(headings: Sequence[str], rows: Iterable[Sequence[str]], empty: str = "nothing yet") -> str:
    """A table in a horizontally scrolling wrapper (a phone shows it whole);
    ``headings`` are plain text, cells are HTML made by the caller."""
    body = table_rows(rows)
    if not body:
        return '<p class="muted">%s</p>' % esc(empty)
    return table_head(headings) + body + TABLE_END


TABLE_END = "</tbody></table></div>"


def table_head(headings: Sequence[str]) -> str:
    """A table's start, to its headings (``table``)."""
    head = "".join('<th scope="col">%s</th>' % esc(heading) for heading in headings)
    return '<div class="scroll"><table><thead><tr>%s</tr></thead><tbody>' % head


def table_rows(rows: Iterable[Sequence[str]]) -> str:
    """Rows of a table: cells are HTML made by the caller."""
    return "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % cell for cell in row) for row in rows)


def pager(path: str, following: Parameters) -> str:
    """The link to the next page, if there is one."""
    if following is None:
        return ""
    return '<nav class="pager">%s</nav>' % link(path, following, "next page \u2192", rel="next")


def search_form(prefix: str = "", pkgarch: str = "") -> str:
    """The package search (GET ``/packages``): a literal version prefix, a pkgarch."""
    return ('<form class="search" method="get" action="%s">'
            '<label>version starts with<input name="prefix" value="%s" placeholder="zlib-"></label>'
            '<label>pkgarch<input name="pkgarch" value="%s" placeholder="any"></label>'
            '<button type="submit">search</button></form>' % (esc(PACKAGES), esc(prefix), esc(pkgarch)))


def document(title: str, body: str) -> bytes:
    """A whole page: ``title`` (plain text) over ``body`` (HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>%s \u2014 prserv</title><link rel=\"stylesheet\" href=\"%s\"></head>\n<body>"
            "<header><a class=\"brand\" href=\"%s\">prserv</a><a href=\"%s\">packages</a>"
            "<a href=\"%s\">recent</a></header>\n<main><h1>%s</h1>\n%s</main></body></html>\n"
            % (esc(title), esc(STYLESHEET_URL), esc(HOME), esc(PACKAGES), esc(RECENT), esc(title), body)
            ).encode("utf-8")


def facts(pairs: Iterable[Tuple[str, str]]) -> str:
    """A definition list of (plain-text name, HTML value)."""
    return '<dl class="facts">%s</dl>' % "".join("<dt>%s</dt><dd>%s</dd>" % (esc(name), value)
                                                   for name, value in pairs)


def generic(value: Any) -> str:
    """Any JSON value shown as text: objects as nested facts (mirror state, upstream
    state: their keys are the server's, their values may be anything)."""
    if isinstance(value, dict):
        return facts((str(key), generic(item)) for key, item in value.items()) if value else "\u2014"
    if isinstance(value, list):
        return esc(", ".join(str(item) for item in value))
    return text_or_unknown(value)


def giver_cells(item: Document, may_write: bool) -> List[str]:
    """Who was given the value: shown only to viewers that may write."""
    return [text_or_unknown(item.get("address")), text_or_unknown(item.get("user"))] if may_write else []


# --------------------------------------------------------------------------- pages

def role_of(status: Document) -> str:
    """What kind of server this is, in words."""
    role = status.get("role")
    text = "mirror of %s" % status.get("mirror_of") if role == "mirror" and status.get("mirror_of") else str(role)
    if status.get("upstream"):
        text += ", chained to %s" % status["upstream"]
    return text


def status_facts(status: Document) -> str:
    figures = status.get("figures") or {}
    pairs = [("role", esc(role_of(status))), ("engine", text_or_unknown(status.get("engine"))),
             ("identity", text_or_unknown(status.get("identity"))),
             ("version", text_or_unknown(status.get("version"))),
             ("packages", text_or_unknown(figures.get("packages"))),
             ("values", text_or_unknown(figures.get("values"))),
             ("values given in the last 24 h", text_or_unknown(figures.get("given_24h")))]
    if status.get("mirror") is not None:
        pairs.append(("mirror", generic(status["mirror"])))
    if status.get("upstream_state") is not None:
        pairs.append(("upstream", generic(status["upstream_state"])))
    return facts(pairs)


def recent_table(items: List[Document], may_write: bool) -> str:
    headings = ["version", "pkgarch", "checksum", "value", "given"] + (["address", "user"] if may_write else [])
    rows = ([package_link(item["version"], item["pkgarch"]), esc(item["pkgarch"]), esc(item["checksum"]),
             text_or_unknown(item["value"]), when(item.get("given"))] + giver_cells(item, may_write) for item in items)
    return table(headings, rows, "no values given")


def home_page(status: Document, recent: Document, may_write: bool) -> bytes:
    """``/``: what this server is, its figures, a search, the last values given."""
    body = (status_facts(status) + "<h2>Find a package</h2>" + search_form()
            + "<h2>Last %d values given</h2>" % HOME_RECENT + recent_table(recent.get("items", []), may_write)
            + '<p>%s \u00b7 JSON: <a href="/api/v1/status">status</a>, '
              '<a href="/api/v1/openapi.json">API description</a></p>' % link(RECENT, [], "all recent values"))
    return document("PR server", body)


def packages_page(page: Document, prefix: str, pkgarch: str, following: Parameters) -> bytes:
    """``/packages``: one page of the listing, each package linked to its history."""
    rows = ([package_link(item["version"], item["pkgarch"]), esc(item["pkgarch"]),
             text_or_unknown(item.get("latest")), when(item.get("given"))] for item in page["items"])
    body = (search_form(prefix, pkgarch)
            + table(["version", "pkgarch", "latest value", "last given"], rows, "no package matches")
            + pager(PACKAGES, following))
    return document("Packages" + (" starting with %s" % prefix if prefix else ""), body)


ROWS_PER_PART = 200
"""Table rows ``package_parts`` renders in one part."""


def package_page(history: Document, may_write: bool) -> bytes:
    """``/package``: every value of one package, a plot of them, its export lines."""
    return b"".join(package_parts(history, may_write))


def package_parts(history: Document, may_write: bool) -> Iterator[bytes]:
    """``package_page`` in parts of about a millisecond's work each (the plot, the
    table ``ROWS_PER_PART`` rows at a time, the export lines): the server lets other
    requests run between them, so that a package of thousands of rows does not hold
    it."""
    version, pkgarch, items = history["version"], history["pkgarch"], history["history"]
    head, tail = document("%s / %s" % (version, pkgarch), "\0").split(b"\0")
    yield head + (facts([("version", esc(version)), ("pkgarch", esc(pkgarch)),
                         ("latest value", text_or_unknown(history.get("latest"))), ("rows", str(len(items)))])
                  + "<h2>Values</h2>").encode("utf-8")
    yield step_plot(items).encode("utf-8")
    headings = ["#", "checksum", "value", "given"] + (["address", "user"] if may_write else [])
    if not items:
        yield table(headings, []).encode("utf-8")
    for start in range(0, len(items), ROWS_PER_PART):
        rows = (['<span class="muted">%d</span>' % number, esc(item["checksum"]), text_or_unknown(item["value"]),
                 when(item.get("given"))] + giver_cells(item, may_write)
                for number, item in enumerate(items[start:start + ROWS_PER_PART], start + 1))
        part = table_rows(rows)
        if start == 0:
            part = table_head(headings) + part
        if start + ROWS_PER_PART >= len(items):
            part += TABLE_END
        yield part.encode("utf-8")
    yield ("<h2>Export-file lines</h2>" + export_block(version, pkgarch, items)
           + "<p>%s \u00b7 %s</p>" % (link(PACKAGES, [("prefix", version)], "packages starting with this version"),
                                      link(HOME, [], "home"))).encode("utf-8") + tail


def export_block(version: str, pkgarch: str, items: List[Document]) -> str:
    """The package's lines of OpenEmbedded's export file (``oefile``), to copy."""
    rows = [{"version": version, "pkgarch": pkgarch, "checksum": item["checksum"], "value": item["value"]}
            for item in items]
    lines, unwritable = export_lines(rows)
    text = "<pre>%s</pre>" % esc("".join(lines)) if lines else ""
    if unwritable:
        text += ('<p class="muted">%d row(s) cannot be written in an export file (a field with blanks, '
                 '<code>$</code> or quotes, or a value that is not a revision).</p>' % len(unwritable))
    return text


def recent_page(recent: Document, since: str, following: Parameters, may_write: bool) -> bytes:
    """``/recent``: values newest first, from ``since`` (RFC 3339) on."""
    form = ('<form class="search" method="get" action="%s"><label>given since (RFC 3339)'
            '<input name="since" value="%s" placeholder="2026-12-06T00:00:00Z"></label>'
            '<button type="submit">show</button></form>' % (esc(RECENT), esc(since)))
    body = form + recent_table(recent.get("items", []), may_write) + pager(RECENT, following)
    return document("Recent values", body)


def error_page(status: int, message: str) -> bytes:
    """An error as a page: the same message the JSON API gives."""
    body = '<p class="error">%s</p><p>%s</p>' % (esc(message), link(HOME, [], "home"))
    return document("Error %d" % status, body)


# --------------------------------------------------------------------------- the plot

PLOT_WIDTH, PLOT_HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 12, 30


def leading_number(value: Any) -> Optional[int]:
    """The first field of a revision (``12`` of ``12.3``); None for anything else."""
    head = str(value).split(".", 1)[0]
    return int(head) if head.isdigit() and head.isascii() else None


MAX_MARKS = 200
"""Rows a plot marks one by one at most (each mark names its checksum: a thousand of
them would weigh more than the table); above, the steps alone."""


def plot_points(items: List[Document]) -> Tuple[List[Tuple[float, int, int]], bool]:
    """(x, y, row index) per row with a number, in x order, and whether x is time:
    the given times when every row has one, else the rows' order."""
    times = [parse_time(item.get("given")) for item in items]
    timed = bool(items) and all(moment is not None for moment in times)
    points = []
    for index, item in enumerate(items):
        number = leading_number(item["value"])
        if number is not None:
            x = times[index].timestamp() if timed else float(index)     # type: ignore[union-attr]
            points.append((x, number, index))
    return sorted(points) if timed else points, timed


def scale(low: float, high: float, start: float, end: float) -> Callable[[float], float]:
    """The linear map from [low, high] onto [start, end] (a point range: its middle)."""
    if high == low:
        return lambda value: (start + end) / 2
    return lambda value: start + (value - low) * (end - start) / (high - low)


def step_plot(items: List[Document]) -> str:
    """An inline SVG step plot of the values: a step per value, a mark per row
    (presentation attributes only: the page's policy forbids inline style)."""
    points, timed = plot_points(items)
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    to_x = scale(min(xs), max(xs), LEFT + 6, PLOT_WIDTH - RIGHT - 6)
    to_y = scale(min(ys), max(ys), PLOT_HEIGHT - BOTTOM - 6, TOP + 6)
    path = "M%.1f,%.1f" % (to_x(points[0][0]), to_y(points[0][1]))        # points are in x order
    path += "".join(" H%.1f V%.1f" % (to_x(x), to_y(y)) for x, y, _ in points[1:])
    marks = "".join('<circle class="mark" cx="%.1f" cy="%.1f" r="3.5" fill="#0a58ca"><title>%s</title></circle>'
                    % (to_x(x), to_y(y), esc("%s: %s" % (items[i]["checksum"], items[i]["value"])))
                    for x, y, i in points) if len(points) <= MAX_MARKS else ""
    return ('<figure class="plot"><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" '
            'height="%d" role="img" aria-label="values of the package">%s<path d="%s" fill="none" '
            'stroke="#0a58ca" stroke-width="1.5"/>%s</svg><figcaption>%s</figcaption></figure>'
            % (PLOT_WIDTH, PLOT_HEIGHT, PLOT_WIDTH, PLOT_HEIGHT, plot_axes(xs, ys, timed), path, marks,
               ("value (leading number) by time given" if timed else "value (leading number) by row")
               + ("" if marks else "; %d values, marked where there are %d at most" % (len(points), MAX_MARKS))))


def plot_axes(xs: List[float], ys: List[int], timed: bool) -> str:
    """The axes with their end labels: lowest and highest value, first and last
    time (or row)."""
    bottom, right = PLOT_HEIGHT - BOTTOM, PLOT_WIDTH - RIGHT
    if timed:
        first, last = (datetime.fromtimestamp(x, timezone.utc).strftime("%Y-%m-%d %H:%M") for x in (min(xs), max(xs)))
    else:
        first, last = "row %d" % (min(xs) + 1), "row %d" % (max(xs) + 1)
    label = '<text x="%d" y="%d" font-size="11" fill="#57606a" text-anchor="%s">%s</text>'
    return ('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d0d7de"/>' % (LEFT, TOP, LEFT, bottom)
            + '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d0d7de"/>' % (LEFT, bottom, right, bottom)
            + label % (LEFT - 6, bottom - 4, "end", esc(min(ys)))
            + label % (LEFT - 6, TOP + 10, "end", esc(max(ys)))
            + label % (LEFT, PLOT_HEIGHT - 10, "start", esc(first))
            + label % (right, PLOT_HEIGHT - 10, "end", esc(last)))
