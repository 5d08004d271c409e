"""The pages in a real browser: Debian's headless Chromium driven by Selenium, against
a real server on 127.0.0.1 port 0 (its own event loop serving them, and a
``bitbake-prserv`` process's HTTP child, the command's default) -- searching from ``/``, opening a package by its
link, paging by the next links, following links back, a hostile version shown as
text with no script run, the step plot, the stylesheet applied under the pages'
policy, and a phone-wide window without horizontal overflow.

Without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's ``chromium``,
``chromium-driver``) the module is skipped, except under ``CI=true``, where it fails:
CI installs them (``.ci/run``).  ``SE_OFFLINE`` keeps Selenium from downloading a
browser or a driver of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from typing import Iterator, List, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

import prserv

from processes import start_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE_VERSION = "<img src=x onerror=alert(1)>"
HOSTILE_PKGARCH = "\"'><script>alert(1)</script>"
PACKAGES = [("zlib-1.3-r0", "core2-64", 5), ("zlib-1.3-r0", "armv7a", 2), ("zlibx-1.0-r0", "core2-64", 1),
            ("busybox-1.36.1-r0", "core2-64", 3), ("openssl-3.2.1-r0", "core2-64", 4),
            ("a b&c=d#e", "x&y", 1), (HOSTILE_VERSION, HOSTILE_PKGARCH, 2)]
"""(version, pkgarch, how many values) the server holds."""
EVERY = sorted(((version, pkgarch) for version, pkgarch, _ in PACKAGES),
               key=lambda p: (p[0].encode("utf-8"), p[1].encode("utf-8")))


def _browser_missing() -> bool:
    missing = not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK))
    if missing and os.environ.get("CI") == "true":
        pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)", pytrace=False)
    return missing


if _browser_missing():
    pytest.skip("no Debian chromium with chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)
pytest.importorskip("h11")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def checksum(version: str, pkgarch: str, n: int) -> str:
    return hashlib.sha256(("%s/%s/%d" % (version, pkgarch, n)).encode("utf-8")).hexdigest()


async def fill(address: str) -> None:
    """Store ``PACKAGES`` through the server at ``address``."""
    async with await prserv.create_async_client(address) as client:
        for version, pkgarch, count in PACKAGES:
            for n in range(count):
                await client.getPR(version, pkgarch, checksum(version, pkgarch, n))


@pytest.fixture(scope="module", params=["event-loop", "child"])
def base(request, tmp_path_factory) -> Iterator[str]:
    """One server for the module holding ``PACKAGES``; the URL of its pages.  Served
    by the event loop of an in-process server (in a thread of its own: the browser's
    requests arrive while a test waits on Selenium), and by the HTTP child of a
    ``bitbake-prserv`` process, as the command serves them by default."""
    if request.param == "child":
        yield from served_by_a_child(tmp_path_factory.mktemp("browser-child"))
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = prserv.create_server("127.0.0.1:0", str(tmp_path_factory.mktemp("browser") / "pr.sqlite3"),
                                  http="127.0.0.1:0")

    async def start() -> None:
        await server.start_serving()
        await fill(server.address)

    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield server.http_addresses[0]
    finally:
        asyncio.run_coroutine_threadsafe(server.stop_serving(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def served_by_a_child(directory) -> Iterator[str]:
    process, address, lines = start_process(directory, "--http", "127.0.0.1:0")
    try:
        asyncio.run(fill(address))
        [url] = re.findall(r"HTTP listener on (http://\S+) \(process", "".join(lines))
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def driver():
    """One headless Chromium for the module."""
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1024,768"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


def open_page(driver, url: str) -> None:
    driver.get(url)
    assert_no_alert(driver)


def assert_no_alert(driver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert


def click_and_wait(driver, element) -> None:
    """Click a link or button and wait for the next page to be loaded."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.TAG_NAME, "html").id != old.id
                                    and d.execute_script("return document.readyState") == "complete")


def listed(driver) -> List[Tuple[str, str]]:
    """(version, pkgarch) of each package link in the page's table, from its href."""
    found = []
    for anchor in driver.find_elements(By.CSS_SELECTOR, "table a"):
        query = dict(parse_qsl(urlsplit(anchor.get_attribute("href")).query))
        assert anchor.text == query["version"]
        found.append((query["version"], query["pkgarch"]))
    return found


def path_and_query(driver) -> Tuple[str, List[Tuple[str, str]]]:
    parts = urlsplit(driver.current_url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


# --------------------------------------------------------------------------- scenarios

def test_search_open_a_package_then_follow_links_back(driver, base):
    open_page(driver, base + "/")
    driver.find_element(By.NAME, "prefix").send_keys("zlib-")
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form.search button"))
    assert path_and_query(driver) == ("/packages", [("prefix", "zlib-"), ("pkgarch", "")])
    assert listed(driver) == [("zlib-1.3-r0", "armv7a"), ("zlib-1.3-r0", "core2-64")]

    link = driver.find_element(By.CSS_SELECTOR, 'table a[href$="pkgarch=core2-64"]')
    click_and_wait(driver, link)
    assert path_and_query(driver) == ("/package", [("version", "zlib-1.3-r0"), ("pkgarch", "core2-64")])
    assert driver.find_element(By.TAG_NAME, "h1").text == "zlib-1.3-r0 / core2-64"
    rows = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows] == ["0", "1", "2", "3", "4"]
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg circle.mark")) == len(rows) == 5
    assert driver.find_element(By.TAG_NAME, "pre").text.splitlines()[-1] == 'PRAUTO_zlib-1.3-r0_core2-64 = "4"'

    click_and_wait(driver, driver.find_element(By.LINK_TEXT, "packages starting with this version"))
    assert path_and_query(driver) == ("/packages", [("prefix", "zlib-1.3-r0")])
    assert listed(driver) == [("zlib-1.3-r0", "armv7a"), ("zlib-1.3-r0", "core2-64")]
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "header a.brand"))
    assert path_and_query(driver) == ("/", [])


def test_next_links_page_through_every_package_once(driver, base):
    open_page(driver, base + "/packages?limit=2")
    seen, pages = listed(driver), 1
    while driver.find_elements(By.CSS_SELECTOR, 'a[rel="next"]'):
        click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, 'a[rel="next"]'))
        seen += listed(driver)
        pages += 1
    assert seen == EVERY and pages == 4


def test_a_package_with_awkward_characters_opens_by_its_link(driver, base):
    open_page(driver, base + "/packages?" + urlencode([("prefix", "a b&")]))
    click_and_wait(driver, driver.find_element(By.LINK_TEXT, "a b&c=d#e"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "a b&c=d#e / x&y"


def test_a_hostile_version_is_text_and_runs_nothing(driver, base):
    open_page(driver, base + "/packages?" + urlencode([("prefix", "<")]))
    assert listed(driver) == [(HOSTILE_VERSION, HOSTILE_PKGARCH)]
    cells = driver.find_elements(By.CSS_SELECTOR, "table tbody td")
    assert [cells[0].text, cells[1].text] == [HOSTILE_VERSION, HOSTILE_PKGARCH]
    assert driver.find_elements(By.CSS_SELECTOR, "table img") == []
    assert driver.find_elements(By.TAG_NAME, "script") == []
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "table a"))
    assert_no_alert(driver)
    facts = driver.find_elements(By.CSS_SELECTOR, "dl.facts dd")
    assert [facts[0].text, facts[1].text] == [HOSTILE_VERSION, HOSTILE_PKGARCH]
    assert driver.find_element(By.TAG_NAME, "h1").text == "%s / %s" % (HOSTILE_VERSION, HOSTILE_PKGARCH)
    assert driver.find_elements(By.TAG_NAME, "img") == [] and driver.find_elements(By.TAG_NAME, "script") == []
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg circle.mark")) == 2
    assert driver.title == "%s / %s \u2014 prserv" % (HOSTILE_VERSION, HOSTILE_PKGARCH)


def test_the_stylesheet_applies_under_the_pages_policy(driver, base):
    open_page(driver, base + "/")
    style = driver.execute_script("var s = getComputedStyle(document.body);"
                                  "return [s.marginTop, s.backgroundColor, s.fontFamily];")
    assert style[0] == "0px" and style[1] == "rgb(246, 248, 250)", style       # the browser's: 8px, transparent
    assert driver.execute_script("return document.styleSheets.length") == 1


def test_a_phone_wide_window_does_not_overflow(driver, base):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    try:
        for target in ("/", "/packages", "/recent", "/package?" + urlencode([("version", "zlib-1.3-r0"),
                                                                             ("pkgarch", "core2-64")])):
            open_page(driver, base + target)
            widths = driver.execute_script("return [window.innerWidth, document.body.scrollWidth, "
                                           "document.documentElement.scrollWidth];")
            assert widths[0] == 360 and max(widths[1:]) <= widths[0], (target, widths)
        wrapper = driver.find_element(By.CSS_SELECTOR, "div.scroll")        # the last page's table
        assert driver.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth;", wrapper)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
