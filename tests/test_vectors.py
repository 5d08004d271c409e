"""Replay the reference's wire transcripts (tests/vectors: recordings of bitbake's own server).

Each file is replayed from the top against fresh servers; every answer must equal
the recorded one, or the ``correct`` / ``correct_error`` annotation where the
reference's answer is a known defect (docs/semantics.md §10).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections import Counter

import pytest

from conftest import VECTORS
from wire import RawConnection, free_refused_address, parse_raw

NORMATIVE = [
    "handshake.jsonl", "basic-nohist.jsonl", "history.jsonl", "import-export.jsonl",
    "export-chunked.jsonl", "chunk-boundary.jsonl", "readonly.jsonl", "upstream-2level.jsonl",
    "upstream-3level.jsonl", "errors.jsonl", "defects.jsonl",
]


def _drop(value, path):
    head, _, rest = path.partition(".")
    if isinstance(value, dict) and head in value:
        if rest:
            _drop(value[head], rest)
        else:
            del value[head]


def _multiset(items):
    return Counter(json.dumps(item, sort_keys=True) for item in items)


def _normalise(message, item):
    message = copy.deepcopy(message)
    for path in item.get("ignore", []):
        _drop(message, path)
    for path in item.get("unordered", []):
        if isinstance(message, dict) and isinstance(message.get(path), list):
            message[path] = _multiset(message[path])
    return message


def _is_invoke_error(message) -> bool:
    return (isinstance(message, dict) and set(message) == {"invoke-error"}
            and isinstance(message["invoke-error"].get("message"), str))


async def _stub_invoke_error(message: str):
    """A peer that completes setup, answers the first request with an invoke-error, closes."""
    async def handle(reader, writer):
        try:
            if (await reader.readline()).strip():
                while (await reader.readline()).strip():
                    pass
                if await reader.readline():
                    writer.write((json.dumps({"invoke-error": {"message": message}}) + "\n").encode())
                    await writer.drain()
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, "127.0.0.1:%d" % server.sockets[0].getsockname()[1]


class Replay:
    def __init__(self, start_server, tmp_path):
        self.start_server = start_server
        self.tmp_path = tmp_path
        self.addresses = {}
        self.conn = None
        self.resources = []
        self.compared = 0

    async def run(self, path):
        with open(path) as f:
            items = [json.loads(line) for line in f if line.strip()]
        try:
            for number, item in enumerate(items, 1):
                try:
                    await self.step(item)
                except AssertionError as exc:
                    raise AssertionError("%s line %d: %s" % (os.path.basename(path), number, exc)) from None
        finally:
            if self.conn is not None:
                await self.conn.close()
            for resource in self.resources:
                resource.close()

    async def step(self, item):
        if "note" in item:
            return
        if "server" in item:
            await self.start(item["server"])
        elif "connect" in item:
            if self.conn is not None:
                await self.conn.close()
            self.conn = await RawConnection.open(self.addresses[item["connect"]])
        elif "send" in item:
            await self.conn.send(item["send"])
        elif "recv" in item:
            await self.receive(item)
        else:
            raise AssertionError("unknown vector item %r" % item)

    async def start(self, spec):
        kind = spec["kind"]
        if kind == "prserv":
            upstream = self.addresses[spec["upstream"]] if spec["upstream"] else None
            server = await self.start_server(db=spec["db"] + ".sqlite3", upstream=upstream,
                                             read_only=spec["read_only"])
            self.addresses[spec["name"]] = server.address
        elif kind == "stub-invoke-error":
            server, address = await _stub_invoke_error(spec["message"])
            self.resources.append(server)
            self.addresses[spec["name"]] = address
        elif kind == "unreachable":
            sock = free_refused_address()
            self.resources.append(sock)
            self.addresses[spec["name"]] = "127.0.0.1:%d" % sock.getsockname()[1]
        else:
            raise AssertionError("unknown server kind %r" % kind)

    async def receive(self, item):
        self.compared += 1
        expected_raw = item["recv"]
        if item.get("headers"):
            assert await self.conn.recv_headers() == expected_raw
            return
        got_raw = await self.conn.recv_raw()
        if item.get("correct_error"):
            assert got_raw, "expected an invoke-error, the connection was closed"
            assert _is_invoke_error(parse_raw(got_raw)), got_raw[:300]
            return
        if "correct" in item:
            assert got_raw, "expected %r, the connection was closed" % (item["correct"],)
            got = parse_raw(got_raw)
            assert _normalise(got, item) == _normalise(item["correct"], item), got_raw[:300]
            return
        if expected_raw == "":
            if got_raw and item.get("or_invoke_error"):
                assert _is_invoke_error(parse_raw(got_raw)), got_raw[:300]
                await self.conn.expect_closed()
            else:
                assert got_raw == "", "expected close, got %r" % got_raw[:300]
            return
        assert got_raw, "expected %r, the connection was closed" % expected_raw[:300]
        got, expected = parse_raw(got_raw), parse_raw(expected_raw)
        assert _normalise(got, item) == _normalise(expected, item), got_raw[:300]
        if expected_raw.startswith('{"chunk-stream"'):
            # Framing: same chunk structure (32767-character lines, closing empty line).
            assert [len(line) for line in got_raw.split("\n")] == \
                [len(line) for line in expected_raw.split("\n")]
        else:
            assert "\n" not in got_raw[:-1], "expected a single line"


@pytest.mark.parametrize("name", NORMATIVE)
async def test_replay_vector(name, start_server, tmp_path):
    replay = Replay(start_server, tmp_path)
    await replay.run(os.path.join(VECTORS, name))
    assert replay.compared > 0


def test_every_normative_vector_is_replayed():
    on_disk = {name for name in os.listdir(VECTORS) if name.endswith(".jsonl")}
    assert on_disk == set(NORMATIVE)
