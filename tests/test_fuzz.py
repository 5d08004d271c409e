"""Hostile input never stops the server or disturbs its other clients (fuzzing).

The requirement: malformed input of every kind gets a clear answer or closes only its
own connection.  A well-framed but invalid request gets ``{"invoke-error": {"message":
"<method>: ..."}}`` naming the offending field, then the close; a failed handshake
closes without a byte; a JSON ``null`` ends the session quietly; unknown extra fields
are ignored.  Nothing may hang: every hostile connection here ends (the server
answers or closes) within ``TIMEOUT`` seconds.

How: one real ``bin/bitbake-prserv -F`` process per module (its memory is read from
/proc), a fresh SQLite file, and a well-behaved client (``GoodClient``, a thread on
its own connection) asking get-pr for its own package without pause the whole time,
with exactly predictable answers.  Each hostile input goes over its own raw TCP
connection: first the fixed corpus ``hostile_inputs.txt`` (format at its top), then
hypothesis strategies (random bytes, handshakes, JSON-ish messages, valid requests
with one field broken).  After each input the good client must complete more rounds
without error; at the end the server is alive, answers a ping, its database holds
exactly the good client's rows (no hostile input wrote one), it logged no traceback
and nothing at ERROR level, and its peak RSS is below ``RSS_LIMIT_KB``.

Bugs the fuzzing found are kept as regression tests at the end (lone surrogates in
fields, a client that half-closes); a corpus entry marked ``xfail=`` (none now) would
be a known bug, run against a second server so that its traceback would not count
against the main one.

Takes about 10 s (400 examples per hypothesis test, fixed seeds so that CI is
repeatable).  Longer opt-in run, with random seeds (5000 examples: about 2 minutes):

    PRSERV_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from test_protocol import MAX_NESTING, bracket_depth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin", "bitbake-prserv")
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_inputs.txt")

SETUP = b"PRSERVICE 1.0\nneeds-headers: false\n\n"
TIMEOUT = 10.0
"""Failure guard for every read: a server that neither answers nor closes fails the test."""
RSS_LIMIT_KB = 200 * 1024

METHODS = ("ping", "get-pr", "test-pr", "test-package", "max-package-pr", "import-one", "export",
           "is-readonly")
"""The server's dispatch order: the first of these keys present in a request wins."""

EXAMPLES = int(os.environ.get("PRSERV_FUZZ_EXAMPLES") or 0)
FUZZ = settings(max_examples=EXAMPLES or 400, deadline=None, database=None, derandomize=not EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much], print_blob=True)


# --------------------------------------------------------------------------- the server process

class ServerProcess:
    """``bitbake-prserv -F`` on 127.0.0.1:0 with a fresh database.

    Its standard error (the log, INFO level) is drained by a thread, so the server
    never blocks on a full pipe and the log can be searched afterwards."""

    def __init__(self, directory: str) -> None:
        self.dbfile = os.path.join(directory, "pr.sqlite3")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
        self.process = subprocess.Popen([sys.executable, BIN, "-F", "-f", self.dbfile, "--bind", "127.0.0.1:0"],
                                        stderr=subprocess.PIPE, env=env)
        self.log: List[str] = []
        self.address: Optional[str] = None
        self._listening = threading.Event()
        threading.Thread(target=self._drain_log, daemon=True, name="prserv-log").start()
        if not self._listening.wait(30) or self.address is None:
            self.stop()
            raise AssertionError("server did not start:\n" + "".join(self.log))

    def _drain_log(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace")
            self.log.append(line)
            if self.address is None and " serving " in line:
                self.address = line.split(" on ", 1)[1].split()[0].rstrip(",")
                self._listening.set()
        self._listening.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def memory_kb(self) -> Dict[str, int]:
        """VmRSS (now) and VmHWM (peak) of the server process, in kB."""
        with open("/proc/%d/status" % self.pid) as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
        return {name: int(value.split()[0]) for name, value in fields.items()}

    def problems(self) -> List[str]:
        """Log lines that must not appear for client mistakes: tracebacks, errors."""
        return [line for line in self.log if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def db_rows(path: str) -> List[Tuple[str, str, str, str]]:
    """Every row of the server's table, read through a read-only connection."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return sorted(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))
    finally:
        conn.close()


# --------------------------------------------------------------------------- the well-behaved client

class GoodClient:
    """A well-behaved client asking without pause, on its own connection, in a thread.

    Raw sockets on purpose: the project's client would reconnect and retry silently,
    hiding a dropped connection.  Its package's values are exactly predictable: the
    ``FIXED`` checksums got 0..9 first, and history lookups of them must keep giving
    those; every new checksum gets the next value.  Any other answer, a close or a
    timeout is recorded in ``errors``."""

    VERSION, ARCH = "good-1.0-r0", "core2-64"
    FIXED = 10

    def __init__(self, address: str) -> None:
        self.rows: Dict[str, str] = {}
        self.errors: List[str] = []
        self.rounds = 0
        self._next_value = 0
        self._cond = threading.Condition()
        self._hold = self._holding = self._stop = self._done = False
        host, port = address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self._reader = self._sock.makefile("rb")
        self._sock.sendall(SETUP)
        for k in range(self.FIXED):
            self._allocate("fixed-%d" % k)
        assert self.errors == [], self.errors
        self._thread = threading.Thread(target=self._run, daemon=True, name="good-client")
        self._thread.start()

    def _ask(self, request: Dict[str, Any]) -> Any:
        self._sock.sendall((json.dumps(request) + "\n").encode())
        line = self._reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("the server closed the good client's connection")
        return json.loads(line)

    def _expect(self, request: Dict[str, Any], answer: Any) -> None:
        got = self._ask(request)
        if got != answer:
            self.errors.append("%s -> %r, expected %r" % (json.dumps(request), got, answer))

    def _query(self, method: str, checksum: str, history: bool) -> Dict[str, Any]:
        return {method: {"version": self.VERSION, "pkgarch": self.ARCH, "checksum": checksum,
                         "history": history}}

    def _allocate(self, checksum: str) -> None:
        value = str(self._next_value)
        self._expect(self._query("get-pr", checksum, False), {"value": value})
        self.rows[checksum] = value
        self._next_value += 1

    def _round(self) -> None:
        k = self.rounds % self.FIXED
        self._expect(self._query("get-pr", "fixed-%d" % k, True), {"value": str(k)})
        self._allocate("new-%d" % self.rounds)
        self._expect(self._query("test-pr", "fixed-%d" % k, False), {"value": str(k)})

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._hold and not self._stop:
                        self._holding = True
                        self._cond.notify_all()
                        self._cond.wait()
                    self._holding = False
                    if self._stop:
                        return
                self._round()
                with self._cond:
                    self.rounds += 1
                    self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 -- recorded, and the tests fail on it
            self.errors.append("good client failed: %r" % exc)
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def check(self, more_rounds: int = 2) -> None:
        """Wait until ``more_rounds`` further rounds completed (so at least one started
        after this call) and assert that nothing went wrong so far."""
        with self._cond:
            target = self.rounds + more_rounds
            self._cond.wait_for(lambda: self.rounds >= target or self._done, TIMEOUT * 3)
            reached = self.rounds >= target
        assert self.errors == [], self.errors
        assert reached, "the good client made no progress within %g s" % (TIMEOUT * 3)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the client between rounds: every row it was answered is then on disk
        and no other is in flight."""
        with self._cond:
            self._hold = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._holding or self._done, TIMEOUT * 3)
        try:
            yield
        finally:
            with self._cond:
                self._hold = False
                self._cond.notify_all()

    def expected_rows(self) -> List[Tuple[str, str, str, str]]:
        return sorted((self.VERSION, self.ARCH, checksum, value) for checksum, value in self.rows.items())

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(TIMEOUT * 3)
        self._sock.close()


# --------------------------------------------------------------------------- a hostile connection

class Hostile:
    """One raw TCP connection; every read is bounded by ``TIMEOUT``."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.buffer = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        """Send everything; the server may legitimately close before it read it all
        (a refused handshake), which is not an error here."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def finish(self, how: str) -> None:
        """``wait``: keep the connection; ``halfclose``: no more data from us, keep
        reading; ``hangup``: close; ``reset``: close with a TCP RST."""
        if how == "halfclose":
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        elif how == "hangup":
            self.sock.close()
        elif how == "reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("the server neither answered nor closed within %g s (got %r)"
                                 % (TIMEOUT, self.buffer[:200])) from None
        except ConnectionResetError:
            data = b""            # a close with unread data: still a close
        if data:
            self.buffer += data
        else:
            self.eof = True

    def readline(self) -> bytes:
        """The next line with its newline; at the end of the stream what is left (b"")."""
        while b"\n" not in self.buffer and not self.eof:
            self._fill()
        if b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            return line + b"\n"
        line, self.buffer = self.buffer, b""
        return line

    def message(self) -> Any:
        """The next message (a chunk stream is joined); fails at the end of the stream."""
        line = self.readline()
        assert line.endswith(b"\n"), "expected a message, got %r and the end of the stream" % line
        value = json.loads(line)
        if isinstance(value, dict) and "chunk-stream" in value:
            pieces = []
            while True:
                line = self.readline()
                assert line.endswith(b"\n"), "the server's chunk stream was cut off"
                if line == b"\n":
                    return json.loads(b"".join(pieces))
                pieces.append(line[:-1])
        return value

    def rest(self) -> bytes:
        """Everything the server still sends, up to its close."""
        while not self.eof:
            self._fill()
        data, self.buffer = self.buffer, b""
        return data

    def close(self) -> None:
        self.sock.close()


def invoke_error_message(reply: Any) -> str:
    """The message of an ``{"invoke-error": {"message": ...}}`` reply (asserting its shape)."""
    assert isinstance(reply, dict) and list(reply) == ["invoke-error"], "expected an invoke-error, got %r" % reply
    error = reply["invoke-error"]
    assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], reply
    return error["message"]


def split_messages(data: bytes) -> List[Any]:
    """Parse a whole transcript from the server into messages (joining chunk streams);
    anything that is not well-framed JSON fails."""
    assert data == b"" or data.endswith(b"\n"), "the server's last line is cut off: %r" % data[-200:]
    lines = data.split(b"\n")[:-1]
    messages, i = [], 0
    while i < len(lines):
        value = json.loads(lines[i])
        i += 1
        if isinstance(value, dict) and "chunk-stream" in value:
            end = lines.index(b"", i)
            value = json.loads(b"".join(lines[i:end]))
            i = end + 1
        messages.append(value)
    return messages


def check_transcript(messages: List[Any]) -> None:
    """A session's replies: answers (JSON objects), at most one invoke-error, last."""
    for n, message in enumerate(messages):
        assert isinstance(message, dict), "a reply that is not an object: %r" % (message,)
        if "invoke-error" in message:
            invoke_error_message(message)
            assert n == len(messages) - 1, "the server went on after an invoke-error: %r" % messages


# --------------------------------------------------------------------------- the fixed corpus

@dataclass(frozen=True)
class Entry:
    """One corpus entry (see the top of ``hostile_inputs.txt``)."""

    line: int
    comment: str
    mode: str
    finish: str
    expect: Tuple[str, ...]
    payload: bytes
    xfail: Optional[str]


def _evaluate(node: ast.AST) -> Any:
    """Bytes literals, integers, ``+`` and ``*``: all a corpus payload may use."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, int)):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _evaluate(node.left), _evaluate(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError("not allowed in a corpus payload: %s" % ast.dump(node))


EXPECT_WORDS = re.compile(r"(closed|headers|eof|open|-|answer=.+|error=[a-z-]+:[a-z]+|error-text=.+|xfail=.+)\Z",
                          re.S)


def load_corpus(path: str = CORPUS) -> List[Entry]:
    entries: List[Entry] = []
    comment: Optional[str] = None
    with open(path, encoding="utf-8") as corpus:
        for number, line in enumerate(corpus, 1):
            line = line.rstrip("\n")
            if not line.strip():
                comment = None
            elif line.startswith("#"):
                comment = line.lstrip("#").strip()
            else:
                if not comment:
                    raise ValueError("%s:%d: an entry without a comment line above it" % (path, number))
                mode, expect, payload = line.split(" | ", 2)
                start, _, finish = mode.partition("+")
                words = tuple(shlex.split(expect))
                if start not in ("setup", "raw") or finish not in ("", "halfclose", "hangup", "reset") \
                        or not all(EXPECT_WORDS.match(word) for word in words):
                    raise ValueError("%s:%d: malformed entry" % (path, number))
                value = _evaluate(ast.parse(payload, mode="eval"))
                if not isinstance(value, bytes):
                    raise ValueError("%s:%d: the payload is not bytes" % (path, number))
                xfail = next((word[len("xfail="):] for word in words if word.startswith("xfail=")), None)
                entries.append(Entry(number, comment, start, finish or "wait",
                                     tuple(w for w in words if not w.startswith("xfail=")), value, xfail))
                comment = None
    return entries


CORPUS_ENTRIES = load_corpus()


def _corpus_params() -> List[Any]:
    params = []
    for entry in CORPUS_ENTRIES:
        name = "%d-%s" % (entry.line, re.sub(r"[^a-z0-9]+", "-", entry.comment.lower()).strip("-")[:50])
        marks = [pytest.mark.xfail(strict=True, reason=entry.xfail)] if entry.xfail else []
        params.append(pytest.param(entry, id=name, marks=marks))
    return params


def run_entry(address: str, entry: Entry) -> None:
    """Send one corpus input on a fresh connection and check the server's reaction."""
    conn = Hostile(address)
    try:
        conn.send((SETUP if entry.mode == "setup" else b"") + entry.payload)
        conn.finish(entry.finish)
        for word in entry.expect:
            if word == "closed":
                data = conn.rest()
                assert data == b"", "expected a close without a reply, got %r" % data[:300]
            elif word == "eof":
                data = conn.rest()
                assert data == b"", "expected the close, got more: %r" % data[:300]
            elif word == "headers":
                assert conn.readline() == b"\n"
            elif word == "open":
                conn.send(b'{"ping": {}}\n')
                assert conn.message() == {"alive": True}
            elif word.startswith("answer="):
                assert conn.message() == json.loads(word[len("answer="):])
            elif word.startswith("error="):
                method, field = word[len("error="):].split(":")
                message = invoke_error_message(conn.message())
                assert message.startswith(method + ": ") and ("'%s'" % field) in message, message
            elif word.startswith("error-text="):
                message = invoke_error_message(conn.message())
                assert message.startswith(word[len("error-text="):]), message
    finally:
        conn.close()


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    process = ServerProcess(str(tmp_path_factory.mktemp("fuzz")))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def good(server: ServerProcess) -> Iterator[GoodClient]:
    client = GoodClient(server.address)
    yield client
    client.stop()


@pytest.fixture(scope="module")
def quarantine(tmp_path_factory) -> Iterator[ServerProcess]:
    """A second server for known-bug reproductions (their tracebacks stay out of the
    main server's log; their writes out of its database)."""
    process = ServerProcess(str(tmp_path_factory.mktemp("quarantine")))
    yield process
    process.stop()


def assert_server_healthy(server: ServerProcess, good: GoodClient) -> None:
    """The good client progresses without error, the server lives and answers a ping,
    the database holds exactly the good client's rows, nothing alarming was logged."""
    good.check()
    assert server.alive(), "the server exited with %s" % server.process.returncode
    conn = Hostile(server.address)
    conn.send(SETUP + b'{"ping": {}}\n')
    assert conn.message() == {"alive": True}
    conn.close()
    with good.paused():
        assert db_rows(server.dbfile) == good.expected_rows()
    assert server.problems() == []


# --------------------------------------------------------------------------- corpus tests

def test_corpus_is_large_and_distinct() -> None:
    inputs = [(entry.mode, entry.payload) for entry in CORPUS_ENTRIES]
    assert len(CORPUS_ENTRIES) >= 50
    assert len(set(inputs)) == len(inputs), "duplicate corpus inputs"
    assert all(entry.comment and entry.expect for entry in CORPUS_ENTRIES)


@pytest.mark.parametrize("entry", _corpus_params())
def test_corpus_input(entry: Entry, server: ServerProcess, good: GoodClient, request) -> None:
    target = request.getfixturevalue("quarantine") if entry.xfail else server
    run_entry(target.address, entry)
    good.check()


def test_corpus_all_at_once(server: ServerProcess, good: GoodClient) -> None:
    """Every corpus input (but any known bug) three times, 24 connections at a time:
    hostile clients do not disturb each other either."""
    entries = [entry for entry in CORPUS_ENTRIES if not entry.xfail] * 3
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda entry: run_entry(server.address, entry), entries))
    good.check()


def test_after_the_corpus_server_is_healthy(server: ServerProcess, good: GoodClient) -> None:
    assert_server_healthy(server, good)


# --------------------------------------------------------------------------- hypothesis: strategies

FIELDS: Dict[str, Dict[str, str]] = {
    "get-pr": {"version": "text", "pkgarch": "text", "checksum": "text", "history": "optional-flag"},
    "test-pr": {"version": "text", "pkgarch": "text", "checksum": "text", "history": "optional-flag"},
    "test-package": {"version": "text", "pkgarch": "text"},
    "max-package-pr": {"version": "text", "pkgarch": "text"},
    "import-one": {"version": "text", "pkgarch": "text", "checksum": "text", "value": "revision"},
    "export": {"version": "filter", "pkgarch": "filter", "checksum": "filter", "colinfo": "flag",
               "history": "optional-flag"},
}
"""The kind of each request field: "text" a required non-empty string, "filter" a
required string or null, "flag" a required boolean, "optional-flag" a boolean that
may be left out, "revision" a required revision (string or non-negative integer)."""

FIELD_NAMES = sorted({name for fields in FIELDS.values() for name in fields})
REVISION = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\Z")
MISSING = object()

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.integers(min_value=-10 ** 80, max_value=10 ** 80),
                         st.floats(), st.text(max_size=20))
json_keys = st.one_of(st.sampled_from(METHODS + tuple(FIELD_NAMES)), st.text(max_size=12))
json_values = st.recursive(json_scalars,
                           lambda children: st.one_of(st.lists(children, max_size=4),
                                                      st.dictionaries(json_keys, children, max_size=4)),
                           max_leaves=12)
extra_keys = st.text(max_size=12).filter(lambda key: key not in METHODS and key not in FIELD_NAMES
                                         and key != "chunk-stream")
not_objects = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                        st.lists(json_scalars, max_size=3))


def valid_value(kind: str) -> st.SearchStrategy:
    return {"text": st.text(min_size=1, max_size=30),
            "filter": st.one_of(st.none(), st.text(max_size=30)),
            "flag": st.booleans(),
            "optional-flag": st.one_of(st.just(MISSING), st.booleans()),
            "revision": st.one_of(st.sampled_from(["0", "1", "7.1", "10.0.3"]), st.integers(0, 10 ** 6))}[kind]


def invalid_value(kind: str) -> st.SearchStrategy:
    """Values the server must refuse for a field of this kind (``MISSING``: leave it out)."""
    containers = st.one_of(st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=5), json_scalars,
                                                                               max_size=3))
    not_flags = st.one_of(st.text(max_size=10), st.floats(), containers,
                          st.integers().filter(lambda n: n not in (0, 1)))
    return {"text": st.one_of(st.just(MISSING), st.just(""), st.none(), st.booleans(), st.integers(), st.floats(),
                              containers),
            "filter": st.one_of(st.just(MISSING), st.booleans(), st.integers(), st.floats(), containers),
            "flag": st.one_of(st.just(MISSING), not_flags),
            "optional-flag": not_flags,
            "revision": st.one_of(st.just(MISSING), st.none(), st.booleans(), st.floats(), containers,
                                  st.integers(max_value=-1),
                                  st.text(max_size=12).filter(lambda s: not REVISION.match(s)))}[kind]


@st.composite
def broken_requests(draw) -> Tuple[Dict[str, Any], str, Optional[str]]:
    """A request of a known method with exactly one thing wrong: its argument is not
    an object, or one field is missing / has a wrong type / is empty.  Random extra
    fields and top-level keys are added (they must be ignored).  Returns (request,
    method, field or None for the argument)."""
    method = draw(st.sampled_from(sorted(FIELDS)))
    fields = FIELDS[method]
    extra_top = draw(st.dictionaries(extra_keys, json_values, max_size=2))
    if draw(st.integers(0, 9)) == 0:
        return dict(extra_top, **{method: draw(not_objects)}), method, None
    broken = draw(st.sampled_from(sorted(fields)))
    args: Dict[str, Any] = draw(st.dictionaries(extra_keys, json_values, max_size=3))
    for name, kind in fields.items():
        value = draw(invalid_value(kind) if name == broken else valid_value(kind))
        if value is not MISSING:
            args[name] = value
    order = draw(st.permutations(list(args)))
    return dict(extra_top, **{method: {name: args[name] for name in order}}), method, broken


def framed(text: str, pieces: List[int]) -> bytes:
    """``text`` as one line, or (with cut points) as a chunk stream of those pieces."""
    if not pieces:
        return (text + "\n").encode("utf-8")
    cuts = [0] + sorted(set(pieces)) + [len(text)]
    chunks = [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
    return ('{"chunk-stream": null}\n' + "".join(c + "\n" for c in chunks) + "\n").encode("utf-8")


def would_write(message: Any) -> bool:
    """Conservatively: could the server store a row for this message?  Such messages
    are not hostile and must not be sent (the database must stay the good client's)."""
    if not isinstance(message, dict):
        return False
    method = next((m for m in METHODS if m in message), None)
    args = message.get(method)
    return method in ("get-pr", "import-one") and isinstance(args, dict) and all(
        isinstance(args.get(name), str) and args.get(name) for name in ("version", "pkgarch", "checksum"))


def messages_in(stream: bytes) -> Iterator[Any]:
    """The JSON messages a server would take from ``stream`` (after the handshake),
    an independent model of the framing; unparsable ones are skipped."""
    lines = stream.split(b"\n")[:-1]          # a last line without newline is never read
    chunks: Optional[List[bytes]] = None
    for line in lines:
        if chunks is not None:
            if line:
                chunks.append(line)
                continue
            line, chunks = b"".join(chunks), None
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) and "chunk-stream" in value and chunks is None:
            chunks = []
        yield value


raw_fragments = st.sampled_from([
    b"{", b"}", b"[", b"]", b'"', b":", b",", b" ", b"\n", b"\n\n", b"null", b"true", b"1e999", b"-0",
    b'"get-pr"', b'"ping"', b'"export"', b'"version"', b'"history"', b'"chunk-stream"',
    b'{"chunk-stream": null}\n', b"\\u", b"\\ud800", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"\r",
])
raw_payloads = st.one_of(
    st.binary(max_size=400),
    st.lists(st.binary(max_size=40), max_size=8).map(b"\n".join),
    st.lists(raw_fragments, max_size=40).map(b"".join),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
)
FINISHES = ("terminate", "halfclose", "hangup", "reset")
TERMINATOR = b"\n\nnull\n"
"""Ends any session state: finishes a partial line, closes a chunk stream (or makes an
empty-line error), and a ``null`` ends a session that is still open."""


# --------------------------------------------------------------------------- hypothesis: tests

@pytest.mark.slow
@FUZZ
@given(payload=raw_payloads, finish=st.sampled_from(FINISHES))
def test_fuzz_raw_bytes_after_setup(server: ServerProcess, good: GoodClient, payload: bytes, finish: str) -> None:
    """Random bytes after a valid handshake: replies are well-framed JSON objects, an
    invoke-error only last, and the server ends the session (no hang)."""
    stream = payload + (TERMINATOR if finish == "terminate" else b"")
    assume(not any(would_write(m) for m in messages_in(stream)))
    conn = Hostile(server.address)
    try:
        conn.send(SETUP + stream)
        conn.finish("wait" if finish == "terminate" else finish)
        if finish in ("terminate", "halfclose"):
            check_transcript(split_messages(conn.rest()))
    finally:
        conn.close()
    assert good.errors == []


def handshake_model(lines: List[bytes]) -> Tuple[Optional[bool], int]:
    """Independent model of the server's setup checks (docs/protocol.md §2).

    Returns (None if refused, else whether the client asked for headers; the number
    of lines the setup took)."""
    def text(line: bytes) -> Optional[str]:
        try:
            return line.decode("utf-8").rstrip()
        except UnicodeDecodeError:
            return None

    first = text(lines[0])
    words = first.split() if first is not None else []
    if len(words) != 2 or words[0] != "PRSERVICE":
        return None, 1
    parts = words[1].split(".")
    if not all(p.isascii() and p.isdigit() for p in parts) or tuple(map(int, parts)) != (1, 0):
        return None, 1
    headers: Dict[str, str] = {}
    for n, line in enumerate(lines[1:], 2):
        header = text(line)
        if header is None or (header and ":" not in header):
            return None, n
        if not header:
            return headers.get("needs-headers") == "true", n
        name, value = header.split(":", 1)
        headers[name.lower()] = value.strip()
    return None, len(lines)             # not reached: the generated input ends with "null"


handshake_alphabet = st.sampled_from(list("PRSEVICprsevic01234.:- \tx") + ["\r", "\u0661", "\u00e9"])
protocol_lines = st.one_of(
    st.builds(lambda name, sep, version, tail: name + sep + version + tail,
              st.sampled_from(["PRSERVICE", "PRSERV", "prservice", "PRSERVICEX", "", "OEHASHEQUIV"]),
              st.sampled_from([" ", "  ", "\t", ""]),
              st.one_of(st.sampled_from(["1.0", "1.00", "01.0", "1.1", "0.1", "2.0", "1", "1.0.0", "", "1.",
                                         ".0", "1.x", "\u0661.\u0660", "-1.0"]),
                        st.text(handshake_alphabet, max_size=8)),
              st.sampled_from(["", " ", "\r", " extra", "\t"])),
    st.text(handshake_alphabet, max_size=30),
).map(lambda text: text.encode("utf-8"))
header_lines = st.one_of(
    st.sampled_from([b"needs-headers: true", b"needs-headers: false", b"needs-headers: TRUE", b"NEEDS-HEADERS: true",
                     b"needs-headers:true", b"needs-headers", b"x: y", b":", b"  ", b"no colon", b"a:b:c",
                     b"\xff: x", b"needs-headers: true\r"]),
    st.text(handshake_alphabet, max_size=20).map(lambda text: text.encode("utf-8")),
)


@pytest.mark.slow
@FUZZ
@given(first=protocol_lines, headers=st.lists(header_lines, max_size=4), blank=st.booleans())
def test_fuzz_handshake(server: ServerProcess, good: GoodClient, first: bytes, headers: List[bytes],
                        blank: bool) -> None:
    """Mutated handshakes followed by a ping and a null: a refused setup closes without
    a byte; an accepted one answers the ping (after an empty header block if asked)."""
    lines = [first] + headers + ([b""] if blank else []) + [b'{"ping": {}}', b"null"]
    needs_headers, used = handshake_model(lines)
    conn = Hostile(server.address)
    try:
        conn.send(b"".join(line + b"\n" for line in lines))
        data = conn.rest()
    finally:
        conn.close()
    if needs_headers is None:
        assert data == b"", "expected a refused setup, got %r" % data
    else:
        header_block = b"\n" if needs_headers else b""
        assert data.startswith(header_block), data
        if lines[used:] == [b'{"ping": {}}', b"null"]:
            assert data == header_block + b'{"alive": true}\n'
        else:                           # header-like lines after an early end of the headers
            check_transcript(split_messages(data[len(header_block):]))
    assert good.errors == []


@st.composite
def corrupted(draw, text: str) -> str:
    """``text`` with a slice deleted, a character inserted, or a slice repeated."""
    if not text:
        return text
    a = draw(st.integers(0, len(text) - 1))
    b = draw(st.integers(a, min(len(text), a + 8)))
    how = draw(st.sampled_from(["delete", "insert", "repeat"]))
    if how == "delete":
        return text[:a] + text[b:]
    if how == "insert":
        return text[:a] + draw(st.characters(exclude_characters="\n")) + text[a:]
    return text[:b] + text[a:b] + text[b:]


def opens_chunk_stream(text: str) -> bool:
    """Whether a line of this text starts a chunk stream (a JSON object with that key)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and "chunk-stream" in value


def expected_reaction(text: str, chunked: bool) -> Tuple[str, str]:
    """What the server must do with one message text: ("quiet", ""), ("error",
    message prefix) or ("request", method)."""
    if not chunked and not text.strip():
        return "error", "empty line where a message was expected"
    if bracket_depth(text) > MAX_NESTING:
        return "error", "JSON nested deeper than %d levels" % MAX_NESTING
    try:
        value = json.loads(text)
    except ValueError:
        return "error", "invalid JSON"
    if value is None:
        return "quiet", ""
    if not isinstance(value, dict):
        return "error", "a request must be a JSON object"
    method = next((m for m in METHODS if m in value), None)
    if method is None:
        return "error", "unknown command"
    return "request", method


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzz_json_messages(server: ServerProcess, good: GoodClient, data: st.DataObject) -> None:
    """Random JSON values (often with method and field names), sometimes corrupted,
    as a line or a chunk stream, then a null: each gets the reaction its class calls
    for, and an error for a method names that method."""
    message = data.draw(st.one_of(json_values, st.dictionaries(json_keys, json_values, min_size=1, max_size=4)))
    text = json.dumps(message, ensure_ascii=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        text = data.draw(corrupted(text))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=4)) if len(text) > 1 else []
    stream = framed(text, cuts)
    kind, detail = expected_reaction(text, chunked=bool(cuts))
    assume(not any(would_write(m) for m in messages_in(stream)))
    assume(cuts or not opens_chunk_stream(text))
    conn = Hostile(server.address)
    try:
        conn.send(SETUP + stream + b"null\n")
        replies = split_messages(conn.rest())
    finally:
        conn.close()
    if kind == "quiet":
        assert replies == []
    elif kind == "error":
        assert len(replies) == 1 and invoke_error_message(replies[0]).startswith(detail), replies
    else:
        assert len(replies) == 1, replies
        reply = replies[0]
        assert isinstance(reply, dict), reply
        if "invoke-error" in reply:
            assert invoke_error_message(reply).startswith(detail + ": "), reply
        elif detail == "ping":
            assert reply == {"alive": True}
        elif detail == "is-readonly":
            assert reply == {"readonly": False}
    assert good.errors == []


@pytest.mark.slow
@FUZZ
@given(case=broken_requests(), ensure_ascii=st.booleans(), cuts=st.lists(st.integers(1, 400), max_size=3))
def test_fuzz_invalid_field_is_named(server: ServerProcess, good: GoodClient,
                                     case: Tuple[Dict[str, Any], str, Optional[str]], ensure_ascii: bool,
                                     cuts: List[int]) -> None:
    """A known method's request with one field wrong (or a non-object argument), random
    extra fields, as a line or a chunk stream: the invoke-error starts with the method
    and names the field, then the connection closes."""
    request, method, field = case
    text = json.dumps(request, ensure_ascii=ensure_ascii)
    conn = Hostile(server.address)
    try:
        conn.send(SETUP + framed(text, [c for c in cuts if c < len(text)]))
        message = invoke_error_message(conn.message())
        assert conn.rest() == b""
    finally:
        conn.close()
    assert message.startswith(method + ": "), message
    if field is None:
        assert "the argument must be a JSON object" in message, message
    else:
        assert ("'%s'" % field) in message, message
    assert good.errors == []


def test_after_the_fuzzing_server_is_healthy_and_small(server: ServerProcess, good: GoodClient) -> None:
    """The summary check after everything above (tests run in file order)."""
    assert_server_healthy(server, good)
    memory = server.memory_kb()
    print("\nserver memory after fuzzing: VmRSS %d kB, VmHWM %d kB; good client rounds: %d"
          % (memory["VmRSS"], memory["VmHWM"], good.rounds))
    assert memory["VmHWM"] < RSS_LIMIT_KB, memory
    assert good.rounds > 0


# --------------------------------------------------------------------------- bugs found by fuzzing

SURROGATE_FIELDS = {"test-pr": ("version", "pkgarch", "checksum"), "test-package": ("version", "pkgarch"),
                    "max-package-pr": ("version", "pkgarch"), "export": ("version", "pkgarch", "checksum")}


@st.composite
def surrogate_requests(draw) -> Tuple[Dict[str, Any], str, str]:
    """A read-only request whose one string field holds a lone surrogate (a JSON
    ``\\udXXX`` escape: valid JSON, not encodable as UTF-8)."""
    method = draw(st.sampled_from(sorted(SURROGATE_FIELDS)))
    field = draw(st.sampled_from(SURROGATE_FIELDS[method]))
    args: Dict[str, Any] = {"version": "fz-1.0", "pkgarch": "a", "checksum": "c", "history": False}
    if method == "export":
        args.update(version=None, pkgarch=None, checksum=None, colinfo=False)
    elif method in ("test-package", "max-package-pr"):
        args = {"version": "fz-1.0", "pkgarch": "a"}
    args[field] = draw(st.text(max_size=5)) + chr(draw(st.integers(0xD800, 0xDFFF))) + draw(st.text(max_size=5))
    return {method: args}, method, field


@settings(max_examples=20, deadline=None, database=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate])
@given(case=surrogate_requests())
def test_fuzz_lone_surrogate_in_a_field_is_named(quarantine: ServerProcess,
                                                 case: Tuple[Dict[str, Any], str, str]) -> None:
    request, method, field = case
    conn = Hostile(quarantine.address)
    try:
        conn.send(SETUP + (json.dumps(request) + "\n").encode())
        message = invoke_error_message(conn.message())
    finally:
        conn.close()
    assert message.startswith(method + ": ") and ("'%s'" % field) in message, message


def test_half_closed_client_still_gets_its_answers(quarantine: ServerProcess) -> None:
    """Like ``printf 'PRSERVICE 1.0\\n\\n{...}\\n' | nc -N host port``: the reference keeps
    the transport open after the client's EOF and answers; five tries so that a lucky
    timing cannot hide the bug."""
    for attempt in range(5):
        conn = Hostile(quarantine.address)
        try:
            conn.send(SETUP + b'{"get-pr": {"version": "hc-1.0", "pkgarch": "a", "checksum": "c%d"}}\n'
                      b'{"ping": {}}\n' % attempt)
            conn.finish("halfclose")
            assert split_messages(conn.rest()) == [{"value": str(attempt)}, {"alive": True}]
        finally:
            conn.close()
