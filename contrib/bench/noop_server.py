#!/usr/bin/env python3
"""A PRSERVICE 1.0 server that answers every request with a constant: the floor.

    noop_server.py [--bind 127.0.0.1:0] [--uvloop]

What a Python asyncio server must spend per connection and per request whatever it
does: accept, read the setup lines up to the blank one, then for each request line
write ``{"value": "0"}``.  No JSON parsing, no logging, no database.  Prints
``noop serving on HOST:PORT`` on standard error once listening (as bitbake-prserv
prints its address), then serves until SIGTERM/SIGINT.  Standard library only
(uvloop when asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

ANSWER = b'{"value": "0"}\n'


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:                                     # the setup lines, up to a blank one
            line = await reader.readline()
            if not line:
                return
            if not line.strip():
                break
        while True:
            line = await reader.readline()
            if not line:
                return
            writer.write(ANSWER)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()
    print("noop serving on %s:%d" % (bound[0], bound[1]), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    host, port = args.bind.rsplit(":", 1)
    if args.uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(host, int(port)))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
