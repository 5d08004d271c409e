"""The line every connection ends with, written in batches (``runtime.logs.InfoLine``):
the same text as the logging module's, in the log's order, after a rotation in the
new file, and from a real server process."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os

import prserv
from prserv.runtime.logs import LOG_FORMAT, InfoLine

from processes import start_process
from waiting import until

MESSAGE = "[Client 192.0.2.7:40000] connection closed after 1 request in 0.0 s: closed by the client"


def logger_to(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


async def test_the_line_is_the_logging_modules_and_batches_keep_the_logs_order():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logger_to(handler, "test.infoline.order")
    line = InfoLine(handler)
    logger.info("%s", MESSAGE)
    line(MESSAGE)
    line(MESSAGE.replace("40000", "40001"))
    assert out.getvalue().count("\n") == 1                  # the two are held back
    logger.warning("a warning")                            # written after them, not before
    first, second, third, warning = out.getvalue().splitlines()
    assert second[23:] == first[23:] and len(second[:23]) == len(first[:23]) == 23
    assert third.endswith("[Client 192.0.2.7:40001] connection closed after 1 request in 0.0 s: "
                          "closed by the client")
    assert warning.endswith(" WARNING a warning")
    line(MESSAGE)
    await until(lambda: out.getvalue().count("\n") == 5)   # the timer writes it
    assert out.getvalue().splitlines()[-1][23:] == first[23:]


async def test_a_rotated_log_file_gets_the_lines_that_follow(tmp_path):
    path = str(tmp_path / "prserv.log")
    handler = logging.handlers.WatchedFileHandler(path)
    logger_to(handler, "test.infoline.rotate")
    line = InfoLine(handler)
    line(MESSAGE)
    line.flush()
    os.rename(path, path + ".1")                            # logrotate
    line(MESSAGE.replace("40000", "40002"))
    line.flush()
    handler.close()
    assert "40000" in open(path + ".1").read()
    assert "40002" in open(path).read() and "40000" not in open(path).read()


async def test_a_server_process_logs_every_connection_in_order(tmp_path):
    process, address, lines = start_process(tmp_path)
    try:
        for n in range(3):
            async with await prserv.create_async_client(address) as client:
                assert await client.getPR("zlib-1.3-r0", "core2-64", "c%d" % n) == str(n)
    finally:
        process.terminate()
        process.wait(15)
    await until(lambda: any("PRServer stopped" in line for line in lines))
    closed = [i for i, line in enumerate(lines) if "connection closed after 1 request" in line]
    stopped = [i for i, line in enumerate(lines) if "PRServer stopped" in line]
    assert len(closed) == 3 and closed[-1] < stopped[0]
    assert all(" INFO [Client 127.0.0.1:" in lines[i] for i in closed)
