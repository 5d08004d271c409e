#!/usr/bin/env python3
"""Make docs/package.png, README's picture of a package's page.

A temporary SQLite database gets one realistic package over the server's own wire
protocol (40 checksums: a dozen values imported from an older server, a jump where
another server's higher value was merged in, then new checksums as builds produce
them); a server with ``--http`` serves it on 127.0.0.1; Debian's headless Chromium
(``/usr/bin/chromium`` with ``/usr/bin/chromedriver``, driven by Selenium) opens the
package's page and saves a screenshot.  Not part of the test suite: run it by hand
after changing the pages, from a checkout with the test extra installed:

    .venv/bin/python contrib/screenshot.py [--output docs/package.png]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

import prserv  # noqa: E402

VERSION, PKGARCH = "linux-yocto-6.6.23+git-r0", "qemux86_64"
IMPORTED = 12
"""Values 0 .. 11 came from an older server's export."""
MERGED = "30"
"""Then another server's higher value was merged in: the next values follow it."""
TOTAL = 40


def checksum(n: int) -> str:
    return hashlib.sha256(b"%d" % n).hexdigest()


async def fill(address: str) -> None:
    async with await prserv.create_async_client(address) as client:
        for n in range(IMPORTED):
            await client.importone(VERSION, PKGARCH, checksum(n), str(n))
        await client.importone(VERSION, PKGARCH, checksum(IMPORTED), MERGED)
        for n in range(IMPORTED + 1, TOTAL):
            await client.getPR(VERSION, PKGARCH, checksum(n))


def screenshot(url: str, output: Path, width: int, height: int) -> None:
    os.environ["SE_OFFLINE"] = "true"             # never let Selenium download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--window-size=%d,%d" % (width, height)):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        output.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "package.png")
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=700)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as directory:
        server = prserv.create_server("127.0.0.1:0", os.path.join(directory, "pr.sqlite3"), http="127.0.0.1:0")
        asyncio.run_coroutine_threadsafe(server.start_serving(), loop).result(30)
        try:
            asyncio.run_coroutine_threadsafe(fill(server.address), loop).result(60)
            url = server.http_addresses[0] + "/package?" + urlencode([("version", VERSION), ("pkgarch", PKGARCH)])
            screenshot(url, args.output, args.width, args.height)
        finally:
            asyncio.run_coroutine_threadsafe(server.stop_serving(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
    print("%s: %d bytes" % (args.output, args.output.stat().st_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
