"""The HTML pages (``server.pages``, routed by ``server.web``) over HTTP: real servers
on 127.0.0.1 port 0, raw HTTP/1.1 over real sockets -- status codes, the exact
security headers, escaping of hostile names, percent-encoded links, paging by the
next link, error pages, HEAD, the stylesheet, who sees the giver's columns.  Then
the rendering of fields the documents gain on main (times, givers, figures), from
documents written out here."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

import prserv
from prserv.access import AccessRules
from prserv.server import pages

from test_http import exchange, parse_answers, request
from test_http_api import IMPORTED, PACKAGES, A, V, fill, get
from test_tokens import add_user

pytest.importorskip("h11")

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HOSTILE_VERSION = "<img src=x onerror=alert(1)>"
HOSTILE_PKGARCH = "\"'><script>alert(1)</script>"
FARM_ONLY = AccessRules(allow_write=["10.0.0.0/8"])
"""Loopback clients may connect, not write."""


class Page(HTMLParser):
    """What a test reads of a page: its links (href, rel, text), its table rows
    (cell texts), the text of its ``<pre>``, its table headings, its SVG marks."""

    def __init__(self, body: bytes) -> None:
        super().__init__(convert_charrefs=True)
        self.links: List[Tuple[str, Optional[str], str]] = []
        self.rows: List[List[str]] = []
        self.headings: List[str] = []
        self.pre = ""
        self.marks = 0
        self._link: Optional[List] = None
        self._cell: Optional[List[str]] = None
        self._in: List[str] = []
        self.feed(body.decode("utf-8"))

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        found = dict(attrs)
        if tag == "a":
            self._link = [found.get("href"), found.get("rel"), ""]
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "circle" and found.get("class") == "mark":
            self.marks += 1
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            self.links.append(tuple(self._link))            # type: ignore[arg-type]
            self._link = None
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            (self.headings if tag == "th" else self.rows[-1]).append(text)
            self._cell = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link[2] += data
        if self._cell is not None:
            self._cell.append(data)
        if "pre" in self._in:
            self.pre += data

    @property
    def data_rows(self) -> List[List[str]]:
        return [row for row in self.rows if row]

    def next_link(self) -> Optional[str]:
        found = [href for href, rel, _ in self.links if rel == "next"]
        assert len(found) <= 1
        return found[0] if found else None

    def package_links(self) -> List[Tuple[str, str]]:
        """(version, pkgarch) of every link to a package page, decoded from its href."""
        found = []
        for href, _, _ in self.links:
            parts = urlsplit(href)
            if parts.path == pages.PACKAGE:
                query = dict(parse_qsl(parts.query))
                found.append((query["version"], query["pkgarch"]))
        return found


def assert_page_headers(answer, status: int = 200) -> None:
    assert answer.status == status
    assert answer.header["content-type"] == "text/html; charset=utf-8"
    assert answer.header["content-security-policy"] == CSP
    assert answer.header["x-content-type-options"] == "nosniff"
    assert answer.header["referrer-policy"] == "no-referrer"
    assert answer.body.startswith(b"<!DOCTYPE html>")
    assert b"<script" not in answer.body.lower() and b" style=" not in answer.body.lower()


def package_target(version: str, pkgarch: str) -> str:
    return "/package?" + urlencode([("version", version), ("pkgarch", pkgarch)])


# --------------------------------------------------------------------------- every page

async def test_every_page_answers_with_the_security_headers(start_server):
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    for target in ("/", "/packages", "/packages?prefix=zlib&pkgarch=core2-64&limit=2", package_target(V, A),
                   "/recent", "/recent?since=2026-12-06T00:00:00Z"):
        answer = await get(address, target)
        assert_page_headers(answer)
        assert b'<link rel="stylesheet" href="/static/prserv.css">' in answer.body
        assert b'<meta name="viewport" content="width=device-width, initial-scale=1">' in answer.body


async def test_home_says_what_the_server_is_with_a_search_form(start_server):
    await start_server()                                                # makes the file
    server = await start_server(http="127.0.0.1:0", read_only=True)
    answer = await get(server.http_addresses[0], "/")
    assert_page_headers(answer)
    text = answer.body.decode()
    assert "<dt>role</dt><dd>read-only</dd>" in text
    assert "<dt>engine</dt><dd>sqlite</dd>" in text
    assert "<dt>version</dt><dd>%s</dd>" % prserv.__version__ in text
    assert '<form class="search" method="get" action="/packages">' in text
    assert '<input name="prefix"' in text and '<input name="pkgarch"' in text


async def test_head_is_answered_as_get_without_a_body(start_server):
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    for target in ("/", "/packages", package_target(V, A), "/recent", "/static/prserv.css",
                   package_target("nothing", A)):
        full = await get(address, target)
        [head] = parse_answers(await exchange(address, request("HEAD", target, close=True)), ["HEAD"])
        assert (head.status, head.body) == (full.status, b"")
        assert head.header["content-length"] == str(len(full.body))
        assert head.header["content-type"] == full.header["content-type"]


async def test_the_stylesheet_is_css_with_an_etag(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    answer = await get(address, "/static/prserv.css")
    assert answer.status == 200
    assert answer.header["content-type"] == "text/css; charset=utf-8"
    assert answer.header["x-content-type-options"] == "nosniff"
    assert answer.body == pages.STYLESHEET and b"body {" in answer.body
    again = await get(address, "/static/prserv.css", "If-None-Match: " + answer.header["etag"])
    assert (again.status, again.body) == (304, b"")


# --------------------------------------------------------------------------- escaping, links

async def test_hostile_names_are_shown_as_text_never_as_markup(start_server):
    server = await start_server(http="127.0.0.1:0")
    async with await prserv.create_async_client(server.address) as client:
        for checksum in ("<b>c1</b>", "c2"):
            await client.getPR(HOSTILE_VERSION, HOSTILE_PKGARCH, checksum)
    address = server.http_addresses[0]
    escaped_version = html.escape(HOSTILE_VERSION, quote=True).encode()
    escaped_pkgarch = html.escape(HOSTILE_PKGARCH, quote=True).encode()
    targets = ["/packages", package_target(HOSTILE_VERSION, HOSTILE_PKGARCH),
               "/packages?" + "prefix=%3Cimg&pkgarch=%22%27%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"]
    for target in targets:
        answer = await get(address, target)
        assert_page_headers(answer)
        assert b"<img src=x" not in answer.body and b"<script" not in answer.body, target
        assert escaped_pkgarch in answer.body, target
    listing = await get(address, targets[0])
    assert escaped_version in listing.body
    assert Page(listing.body).package_links() == [(HOSTILE_VERSION, HOSTILE_PKGARCH)]
    package = await get(address, targets[1])
    assert b"&lt;b&gt;c1&lt;/b&gt;" in package.body and b"<b>" not in package.body
    assert b"<title>&lt;b&gt;c1&lt;/b&gt;: 0</title>" in package.body          # the plot's mark, escaped too
    assert [row[1:3] for row in Page(package.body).data_rows] == [["<b>c1</b>", "0"], ["c2", "1"]]
    assert b"2 row(s) cannot be written in an export file" in package.body      # blanks, quotes: not writable
    missing = await get(address, package_target(HOSTILE_VERSION, "x"))
    assert_page_headers(missing, 404)
    assert b"no package " + escaped_version + b"/x" in missing.body


async def test_links_are_percent_encoded_and_lead_to_the_package(start_server):
    server = await start_server(http="127.0.0.1:0")
    version, pkgarch = "a b&c=d#e?f/\u00e9+1", "x&y"
    async with await prserv.create_async_client(server.address) as client:
        await client.getPR(version, pkgarch, "c")
    address = server.http_addresses[0]
    listing = await get(address, "/packages")
    assert (b'href="/package?version=a+b%26c%3Dd%23e%3Ff%2F%C3%A9%2B1&amp;pkgarch=x%26y"' in listing.body)
    [(href, _, text)] = [found for found in Page(listing.body).links if found[0].startswith("/package?")]
    assert text == version
    package = await get(address, href)
    assert_page_headers(package)
    page = Page(package.body)
    back = [found for found in page.links if found[0].startswith("/packages?")]
    assert back == [("/packages?prefix=a+b%26c%3Dd%23e%3Ff%2F%C3%A9%2B1", None, "packages starting with this version")]
    assert ("/", None, "home") in page.links
    assert Page((await get(address, back[0][0])).body).package_links() == [(version, pkgarch)]


# --------------------------------------------------------------------------- paging

async def walk(address: str, target: str) -> Tuple[List[Tuple[str, str]], int]:
    """Every package the pages from ``target`` on list, following the next links;
    and how many pages there were."""
    seen: List[Tuple[str, str]] = []
    count = 0
    while target is not None:
        answer = await get(address, target)
        assert_page_headers(answer)
        page = Page(answer.body)
        seen += page.package_links()
        count += 1
        target = page.next_link()
    return seen, count


async def test_next_links_walk_every_package_exactly_once(start_server):
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    every = sorted(PACKAGES, key=lambda p: (p[0].encode("utf-8"), p[1].encode("utf-8")))
    assert await walk(address, "/packages?limit=2") == (every, 4)
    assert await walk(address, "/packages?limit=1") == (every, 7)
    assert await walk(address, "/packages") == (every, 1)
    zlib = [("zlib", "core2-64"), ("zlib-1.3-r0", "armv7a"), ("zlib-1.3-r0", "core2-64"), ("zlibx-1.0-r0", "core2-64")]
    assert await walk(address, "/packages?prefix=zlib&limit=3") == (zlib, 2)
    assert await walk(address, "/packages?prefix=zlib-&pkgarch=core2-64&limit=1") == ([("zlib-1.3-r0", "core2-64")], 1)
    first = Page((await get(address, "/packages?prefix=zlib&limit=3")).body)
    assert first.next_link().startswith("/packages?prefix=zlib&limit=3&after=")
    assert (await walk(address, "/packages?prefix=zz"))[0] == []


async def test_a_prefix_is_literal_on_the_page_too(start_server):
    server = await start_server(http="127.0.0.1:0")
    async with await prserv.create_async_client(server.address) as client:
        for version in ("a%b-1", "axb-1", "a_b-1"):
            await client.getPR(version, "all", "c")
    address = server.http_addresses[0]
    assert (await walk(address, "/packages?prefix=a%25"))[0] == [("a%b-1", "all")]
    assert (await walk(address, "/packages?prefix=a_"))[0] == [("a_b-1", "all")]


# --------------------------------------------------------------------------- one package

def shown_time(given: str) -> str:
    """How a page shows an RFC 3339 time: to the second, in UTC."""
    assert given.endswith("Z") and len(given) == 27
    return given[:10] + " " + given[11:19] + " UTC"


async def test_a_package_page_lists_every_value_with_a_plot_and_its_export_lines(start_server):
    server = await start_server(http="127.0.0.1:0")
    async with await prserv.create_async_client(server.address) as client:
        for checksum, value in IMPORTED:
            await client.importone(V, A, checksum, value)
        await client.getPR(V, A, "new")
        await client.getPR(V, A, "c9")
    address = server.http_addresses[0]
    history = (await get(address, "/api/v1/history?version=%s&pkgarch=%s" % (V, A))).json()
    answer = await get(address, package_target(V, A))
    assert_page_headers(answer)
    page = Page(answer.body)
    assert [row[1:4] for row in page.data_rows] == [[item["checksum"], item["value"], shown_time(item["given"])]
                                                     for item in history["history"]]
    assert [row[0] for row in page.data_rows] == [str(n) for n in range(1, 8)]
    assert page.marks == 7 and b"<svg " in answer.body
    assert page.pre == "".join('PRAUTO$%s$%s$%s = "%s"\n' % (V, A, checksum, value) for checksum, value in [
        ("a19", "1.9"), ("a110", "1.10"), ("c9", "9"), ("c9", "12"), ("b10", "10"), ("c10", "10"), ("new", "11")]
    ) + 'PRAUTO_%s_%s = "12"\n' % (V, A)


async def test_error_pages_say_what_the_json_api_says(start_server):
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    for page_target, api_target, status in (
            (package_target("nothing", A), "/api/v1/history?version=nothing&pkgarch=" + A, 404),
            ("/package?version=" + V, "/api/v1/history?version=" + V, 400),
            ("/package?version=a&version=b&pkgarch=x", "/api/v1/history?version=a&version=b&pkgarch=x", 400),
            ("/packages?limit=0", "/api/v1/packages?limit=0", 400),
            ("/packages?after=garbage", "/api/v1/packages?after=garbage", 400)):
        answer, api = await get(address, page_target), await get(address, api_target)
        assert_page_headers(answer, status)
        assert api.status == status
        message = html.escape(api.json()["error"]["message"], quote=True)
        assert ('<p class="error">%s</p>' % message).encode() in answer.body, page_target
        assert ("<title>Error %d \u2014 prserv</title>" % status).encode() in answer.body
    twice = await get(address, "/recent?since=a&since=b")
    assert_page_headers(twice, 400)
    assert b"query parameter &#x27;since&#x27; is given 2 times" in twice.body


# --------------------------------------------------------------------------- who sees what

async def giver_headings(address: str, *headers: str) -> Dict[str, List[str]]:
    found = {}
    for target in (package_target(V, A), "/recent", "/"):
        answer = await get(address, target, *headers)
        assert_page_headers(answer)
        found[target] = [heading for heading in Page(answer.body).headings if heading in ("address", "user")]
    return found


async def test_address_and_user_columns_only_for_viewers_that_may_write(start_server):
    writers = await start_server(http="127.0.0.1:0")                    # everyone may write
    await fill(writers.address)
    assert (await giver_headings(writers.http_addresses[0]))[package_target(V, A)] == ["address", "user"]

    readers = await start_server(http="127.0.0.1:0", access=FARM_ONLY)   # the same file, read by others
    address = readers.http_addresses[0]
    assert set(map(tuple, (await giver_headings(address)).values())) == {()}
    ci, reader = await add_user(readers, "ci", ["write"]), await add_user(readers, "reader", ["read"])
    basic = "Authorization: Basic " + base64.b64encode(("%s:%s" % ci).encode()).decode()
    assert (await giver_headings(address, basic))[package_target(V, A)] == ["address", "user"]
    basic = "Authorization: Basic " + base64.b64encode(("%s:%s" % reader).encode()).decode()
    assert set(map(tuple, (await giver_headings(address, basic)).values())) == {()}


# --------------------------------------------------------------------------- fields from main

def test_times_givers_and_figures_are_rendered_when_the_documents_have_them():
    history = {"version": V, "pkgarch": A, "latest": "3", "history": [
        {"checksum": "a", "value": "1", "given": "2026-12-06T10:00:00.123456Z", "address": "10.0.0.1",
         "user": "<ci>"},
        {"checksum": "b", "value": "3", "given": "2026-12-06T09:00:00Z", "address": None, "user": None},
        {"checksum": "c", "value": "2.1", "given": "2026-12-06T11:30:00+01:00", "address": "::1", "user": None}]}
    writer = Page(pages.package_page(history, True))
    assert writer.data_rows == [["1", "a", "1", "2026-12-06 10:00:00 UTC", "10.0.0.1", "<ci>"],
                                ["2", "b", "3", "2026-12-06 09:00:00 UTC", "unknown", "unknown"],
                                ["3", "c", "2.1", "2026-12-06 10:30:00 UTC", "::1", "unknown"]]
    body = pages.package_page(history, True).decode()
    assert "by time given" in body and "&lt;ci&gt;" in body
    # x by time: b (09:00) left of a (10:00) left of c (10:30); the step path in time order
    xs = {title.split(":")[0]: float(cx) for cx, title in
          re.findall(r'<circle class="mark" cx="([\d.]+)"[^>]*><title>([^<]*)</title>', body)}
    assert xs["b"] < xs["a"] < xs["c"]
    assert Page(pages.package_page(history, False)).data_rows[0] == ["1", "a", "1", "2026-12-06 10:00:00 UTC"]
    untimed = dict(history, history=[dict(item, given=None) for item in history["history"]])
    assert "by row" in pages.package_page(untimed, False).decode()

    status = {"role": "mirror", "engine": "sqlite", "version": "2.19.0", "upstream": None,
              "mirror_of": "<src>:8585", "identity": "id-1",
              "figures": {"packages": 12, "values": 340, "given_24h": None},
              "mirror": {"state": "following", "rows_behind": 0, "lag_seconds": 0.5}, "upstream_state": None}
    recent = {"items": [{"version": V, "pkgarch": A, "checksum": "a", "value": "1",
                         "given": "2026-12-06T10:00:00Z", "address": "10.0.0.1", "user": None}], "next": None}
    home = pages.home_page(status, recent, True).decode()
    for fragment in ("<dd>mirror of &lt;src&gt;:8585</dd>", "<dt>identity</dt><dd>id-1</dd>",
                     "<dt>packages</dt><dd>12</dd>", "<dt>values</dt><dd>340</dd>",
                     "<dt>values given in the last 24 h</dt><dd><span class=\"muted\">unknown</span></dd>",
                     "<dt>state</dt><dd>following</dd>", "<dt>lag_seconds</dt><dd>0.5</dd>"):
        assert fragment in home
    assert Page(home.encode()).data_rows == [[V, A, "a", "1", "2026-12-06 10:00:00 UTC", "10.0.0.1", "unknown"]]
    assert Page(pages.home_page(status, recent, False)).data_rows == [[V, A, "a", "1", "2026-12-06 10:00:00 UTC"]]
    chained = dict(status, role="read-write", mirror_of=None, upstream="up:8585", mirror=None)
    assert "<dd>read-write, chained to up:8585</dd>" in pages.home_page(chained, recent, False).decode()
    following = [("since", "2026-12-06T00:00:00Z"), ("after", "abc")]
    assert ('<a href="/recent?since=2026-12-06T00%3A00%3A00Z&amp;after=abc" rel="next">'
            in pages.recent_page(recent, "2026-12-06T00:00:00Z", following, False).decode())


def test_a_plot_marks_each_row_up_to_200_and_times_read_fast_as_the_pattern_reads_them():
    from prserv import timestamps as history_module

    def document(rows: int) -> dict:
        return {"version": "v", "pkgarch": "a", "latest": str(rows - 1), "history": [
            {"checksum": "c%d" % i, "value": str(i), "given": "2026-12-06T10:%02d:00.000001Z" % (i % 60)}
            for i in range(rows)]}

    assert pages.package_page(document(200), False).count(b'<circle class="mark"') == 200
    many = pages.package_page(document(201), False)
    assert b'<circle class="mark"' not in many and b"201 values, marked where there are 200 at most" in many
    for text in ("2026-12-06T10:00:00.123456Z", "1970-01-01T00:00:00.000000Z", "2026-02-29T00:00:00.000000Z",
                 "2026-12-06T10:00:00.12345xZ", "2026-12-06T24:00:00.000000Z", "9999-12-31T23:59:59.999999Z"):
        try:
            fast = history_module.parse_rfc3339(text)
        except ValueError as exc:
            fast = str(exc)
        try:
            slow = history_module.parse_rfc3339(" " + text)          # not the fast path's form
        except ValueError as exc:
            slow = str(exc).replace(repr(" " + text)[:40], repr(text)[:40])
        assert fast == slow, text


def test_a_large_package_page_is_made_in_parts_that_are_the_page():
    """1,000 rows: the head and plot, five parts of 200 rows, the export lines; joined,
    they are the page (the server answers other requests between the parts)."""
    items = [{"checksum": "c%d" % i, "value": str(i), "given": None} for i in range(1000)]
    document = {"version": "v", "pkgarch": "a", "latest": "999", "history": items}
    parts = list(pages.package_parts(document, False))
    assert len(parts) == 1 + 1 + 5 + 1
    assert b"".join(parts) == pages.package_page(document, False)
    assert all(part.count(b"<tr><td>") == 200 for part in parts[2:7])
    assert Page(b"".join(parts)).data_rows[-1][:3] == ["1000", "c999", "999"]
