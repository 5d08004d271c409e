"""The fast paths checked against a plain reference model (hypothesis).

``prserv.db`` answers from per-package caches kept up to date incrementally (and
through ``PRAGMA data_version`` for rows other connections commit); the server adds
group commit on top.  Those are easy places for a cache to drift from the rules of
docs/semantics.md §2-§6.  Here a deliberately naive model -- a set of rows, O(n) scans,
values ordered by a numeric tuple key -- is written straight from the spec, without
importing any project code, and random operation sequences are applied to both,
comparing every answer value by value:

1. the database layer (``PRTable``) on a real SQLite file, through two writer
   connections and a read-only one on the same file (one writer with a tiny package
   cache, so entries are evicted and reloaded), closed and reopened mid-sequence;
2. real servers over the wire (``127.0.0.1`` port 0, the project's async client),
   in ``immediate`` mode (two writers and a read-only server sharing the file) and
   in ``on-shutdown`` mode (answers from uncommitted state), restarted mid-sequence.

The file's rows, read by a plain sqlite3 connection, are compared with the model's
after every step where every write is committed at once (layer 1, ``immediate``)
and after every close (also ``on-shutdown``): a value answered but not stored, or
stored by a read-only server, fails even if no later answer depends on it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, rule,
                                 run_state_machine_as_test)

# The code under test.  The model below uses none of it (no revision parsing,
# ordering or policy from lib/prserv), so a shared mistake cannot hide.
import prserv
import prserv.db
from prserv.storage.sqlite import cache as sqlite_cache
from prserv.storage.sqlite import schema as sqlite_schema
from prserv.storage.sqlite import engine as sqlite_engine
from prserv.asyncrpc import InvokeError
from prserv.client import PRAsyncClient
from prserv.db import PRData, PRTable
from prserv.errors import InvalidRevisionError
from prserv.serv import PRServer

# --------------------------------------------------------------------------- the model

Row = Tuple[str, str, str, str]          # (version, pkgarch, checksum, value text)
ImportValue = Any                        # what import-one sends: str, int, or junk


class ModelError(Exception):
    """The model's "this request must be refused" (an invoke-error on the wire)."""


def model_is_revision(text: object) -> bool:
    """docs/semantics.md §5: dotted decimal integers, ASCII digits only, no leading zeros."""
    if not isinstance(text, str) or text == "":
        return False
    for field in text.split("."):
        if field == "" or any(ch not in "0123456789" for ch in field):
            return False
        if len(field) > 1 and field[0] == "0":
            return False
    return True


def model_key(text: str) -> Tuple[int, ...]:
    """docs/semantics.md §2: compare field by field as integers; a strict prefix is smaller.

    Python's tuple order is exactly that (``(1,) < (1, 0) < (1, 2) < (1, 10) < (2,)``).
    """
    return tuple(int(field) for field in text.split("."))


def model_increase(text: str) -> str:
    """docs/semantics.md §2 ``increase``: add one to the last field."""
    fields = text.split(".")
    fields[-1] = str(int(fields[-1]) + 1)
    return ".".join(fields)


def model_import_text(value: ImportValue) -> str:
    """The text import-one stores, or ModelError for a value §5 says to reject."""
    if isinstance(value, bool):
        raise ModelError("boolean")
    if isinstance(value, int):
        if value < 0:
            raise ModelError("negative")
        return str(value)
    if model_is_revision(value):
        return value
    raise ModelError("not a revision: %r" % (value,))


class Model:
    """A server without upstream, as a set of rows scanned on every question."""

    def __init__(self) -> None:
        self.rows: Set[Row] = set()

    def _values(self, version: str, pkgarch: str, checksum: Optional[str] = None) -> List[str]:
        return [value for (v, a, c, value) in self.rows
                if v == version and a == pkgarch and (checksum is None or c == checksum)]

    def max_package_pr(self, version: str, pkgarch: str) -> Optional[str]:
        values = self._values(version, pkgarch)
        return max(values, key=model_key) if values else None

    def test_pr(self, version: str, pkgarch: str, checksum: str, history: bool) -> Optional[str]:
        """§4: the checksum's min value (history) or max value (no history)."""
        values = self._values(version, pkgarch, checksum)
        if not values:
            return None
        return min(values, key=model_key) if history else max(values, key=model_key)

    def test_package(self, version: str, pkgarch: str) -> bool:
        return bool(self._values(version, pkgarch))

    def get_pr(self, version: str, pkgarch: str, checksum: str, history: bool,
               read_only: bool = False) -> str:
        """§3 step by step; the row is stored unless it exists or the server is read-only."""
        package_max = self.max_package_pr(version, pkgarch)
        if package_max is None:
            result = "0"
        else:
            mine = self.test_pr(version, pkgarch, checksum, history)
            if mine is None:
                result = model_increase(package_max)
            elif history:
                result = mine
            elif model_key(mine) < model_key(package_max):
                result = model_increase(package_max)
            else:
                result = mine
        if not read_only:
            self.rows.add((version, pkgarch, checksum, result))
        return result

    def import_one(self, version: str, pkgarch: str, checksum: str, value: ImportValue,
                   read_only: bool = False) -> Optional[ImportValue]:
        """§5: no ordering check, the value echoed as sent; null when read-only."""
        text = model_import_text(value)          # refused even when read-only
        if read_only:
            return None
        self.rows.add((version, pkgarch, checksum, text))
        return value

    def export(self, version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
               history: bool) -> List[Row]:
        """§6, sorted (the order is unspecified): all rows, or each package's max rows."""
        if history:
            selected = list(self.rows)
        else:
            selected = [row for row in self.rows
                        if model_key(row[3]) == model_key(self.max_package_pr(row[0], row[1]))]
        wanted = [(0, version), (1, pkgarch), (2, checksum)]
        return sorted(row for row in selected
                      if row[0] != "" and all(not want or row[i] == want for i, want in wanted))


# --------------------------------------------------------------------------- operations

VERSIONS = ["zlib-1.3", "curl-8.6"]
PKGARCHS = ["core2-64", "cortexa53"]
CHECKSUMS = ["c0", "c1", "c2", "c3"]
# Valid import values: "1.20" > "1.3" and "10" > "9" only numerically; prefixes
# ("1" < "1.0" < "1.0.5"); JSON integers, echoed back as integers.
GOOD_VALUES: List[ImportValue] = ["0", "1", "2", "3", "9", "10", "1.0", "1.2", "1.3", "1.9",
                                  "1.10", "1.20", "1.0.5", "2.0.1", "2.0.10", 0, 3, 10, 12]
# Values §5 says to refuse (nothing stored).
BAD_VALUES: List[ImportValue] = ["01", "+7", " 7", "1_0", "1'", "", "1.", ".1", "1.a", "1.01",
                                 "²", -1, True, None, 1.5]


@dataclass(frozen=True)
class GetPR:
    via: int
    version: str
    pkgarch: str
    checksum: str
    history: bool


@dataclass(frozen=True)
class ImportOne:
    via: int
    version: str
    pkgarch: str
    checksum: str
    value: ImportValue


@dataclass(frozen=True)
class TestPR:
    __test__ = False                     # not a pytest class
    via: int
    version: str
    pkgarch: str
    checksum: str
    history: bool


@dataclass(frozen=True)
class TestPackage:
    __test__ = False
    via: int
    version: str
    pkgarch: str


@dataclass(frozen=True)
class MaxPackagePR:
    via: int
    version: str
    pkgarch: str


@dataclass(frozen=True)
class Export:
    via: int
    version: Optional[str]
    pkgarch: Optional[str]
    checksum: Optional[str]
    history: bool


@dataclass(frozen=True)
class Reopen:
    """Close every connection / server and open them again on the same file."""


Op = Union[GetPR, ImportOne, TestPR, TestPackage, MaxPackagePR, Export, Reopen]

WRITER, OTHER_WRITER, READER = 0, 1, 2


def every(cls: type, *choices: List[Any]) -> st.SearchStrategy[Op]:
    """``cls(...)`` over every combination of ``choices``.

    One draw per operation: ``st.builds`` draws each field separately, which made
    data generation cost more than the database work being tested.
    """
    return st.sampled_from([cls(*fields) for fields in itertools.product(*choices)])


def operations(vias: List[int], versions: List[str] = VERSIONS) -> st.SearchStrategy[Op]:
    """Random operations through the given connections (``READER`` is read-only).

    ``vias`` may repeat a connection to favour it.  get-pr and import-one dominate
    so that packages fill up and collide.
    """
    package = [versions, PKGARCHS]
    flags = [False, True]
    any_or = [None, ""]
    return st.one_of(
        every(GetPR, vias, *package, CHECKSUMS, flags),
        every(GetPR, vias, *package, CHECKSUMS, flags),
        every(GetPR, vias, *package, CHECKSUMS, flags),
        every(ImportOne, vias, *package, CHECKSUMS, GOOD_VALUES),
        every(ImportOne, vias, *package, CHECKSUMS, GOOD_VALUES),
        every(ImportOne, vias, *package, CHECKSUMS, BAD_VALUES),
        every(TestPR, vias, *package, CHECKSUMS, flags),
        every(TestPackage, vias, *package),
        every(MaxPackagePR, vias, *package),
        every(Export, vias, any_or + [v for v in versions if v], any_or + PKGARCHS,
              any_or + CHECKSUMS, flags),
        st.just(Reopen()),
    )


def expected(model: Model, op: Op) -> Any:
    """The model's answer to ``op`` (a ``ModelError`` instance for a refusal)."""
    read_only = getattr(op, "via", WRITER) == READER
    try:
        if isinstance(op, GetPR):
            return model.get_pr(op.version, op.pkgarch, op.checksum, op.history, read_only)
        if isinstance(op, ImportOne):
            return model.import_one(op.version, op.pkgarch, op.checksum, op.value, read_only)
        if isinstance(op, TestPR):
            return model.test_pr(op.version, op.pkgarch, op.checksum, op.history)
        if isinstance(op, TestPackage):
            return model.test_package(op.version, op.pkgarch)
        if isinstance(op, MaxPackagePR):
            return model.max_package_pr(op.version, op.pkgarch)
        if isinstance(op, Export):
            return model.export(op.version, op.pkgarch, op.checksum, op.history)
    except ModelError as exc:
        return exc
    raise AssertionError("unexpected operation %r" % (op,))


def same(actual: Any, wanted: Any) -> bool:
    """Equal and of the same type: ``7`` is not ``"7"``, ``True`` is not ``1``."""
    if isinstance(wanted, ModelError):
        return isinstance(actual, ModelError)
    return type(actual) is type(wanted) and actual == wanted


def export_rows(datainfo: List[Dict[str, Any]]) -> List[Row]:
    """An export's rows as sorted tuples (§6: the order is unspecified)."""
    return sorted((d["version"], d["pkgarch"], d["checksum"], d["value"]) for d in datainfo)


class FileRows:
    """What is really in the file, read by a plain sqlite3 connection (no cache of ours).

    In autocommit mode each SELECT sees everything committed so far.
    """

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def __call__(self) -> Set[Row]:
        return set(self.conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))

    def close(self) -> None:
        self.conn.close()


def read_file_rows(path: str) -> Set[Row]:
    """``FileRows`` for one look (a buffered-mode server must be alone with the file)."""
    rows = FileRows(path)
    try:
        return rows()
    finally:
        rows.close()


def check(step: int, op: Op, actual: Any, wanted: Any) -> None:
    """One answer against the model's, with what is needed to read a failure."""
    assert same(actual, wanted), "step %d %r: got %r, the model says %r" % (step, op, actual, wanted)


# --------------------------------------------------------------------------- layer 1: PRTable

EXPORT_BATCHES = [1, 2, 3, 1000]


PACKAGE_SHAPES = [(256, 4096, 256), (0, 0, 2), (3, 5, 0)]
"""(complete_rows, grown_rows, value_index_from) of the SQLite cache: the defaults
(every package here kept whole), never whole (each checksum read on its own, the
maximum through the value index where a value leads with 2 or more, else by reading
the package), and whole only while tiny (packages switch while the test runs)."""


def set_package_shape(shape: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Set the cache's ``COMPLETE_ROWS``/``GROWN_ROWS`` and the value index's
    ``VALUE_INDEX_FROM`` (a file indexed before is indexed again when next opened for
    writing); returns the previous triple."""
    previous = (sqlite_cache.COMPLETE_ROWS, sqlite_cache.GROWN_ROWS, sqlite_schema.VALUE_INDEX_FROM)
    sqlite_cache.COMPLETE_ROWS, sqlite_cache.GROWN_ROWS, sqlite_schema.VALUE_INDEX_FROM = shape
    return previous


def set_export_batch(rows: Optional[int]) -> Optional[int]:
    """Make export read ``rows`` rows per query (the SQLite engine's
    ``EXPORT_BATCH_ROWS``), so that tiny tables cross page boundaries; returns the
    previous setting (``rows`` None: nothing changed)."""
    previous = sqlite_engine.EXPORT_BATCH_ROWS
    if rows is not None:
        sqlite_engine.EXPORT_BATCH_ROWS = rows
    return previous


class Tables:
    """Two writer connections and one read-only connection on one SQLite file.

    The second writer has a tiny cache budget (when asked), so its entries are
    evicted and read again while the others keep theirs and must follow its writes.
    """

    def __init__(self, path: str, cache_size: int) -> None:
        self.path = path
        self.cache_size = cache_size
        self.datas: List[PRData] = []
        self.tables: List[PRTable] = []

    def open(self) -> None:
        writer = PRData(self.path)
        reader = PRData(self.path, read_only=True)      # after a writer made the file (WAL)
        other = PRData(self.path, cache_size=self.cache_size)
        self.datas = [writer, other, reader]
        self.tables = [writer["PRMAIN"], other["PRMAIN"], reader["PRMAIN"]]

    def close(self) -> None:
        for data in self.datas:
            data.disconnect()
        self.datas, self.tables = [], []

    def apply(self, op: Op) -> Any:
        table = self.tables[op.via]
        try:
            if isinstance(op, GetPR):
                return table.get_value(op.version, op.pkgarch, op.checksum, op.history)
            if isinstance(op, ImportOne):
                return table.importone(op.version, op.pkgarch, op.checksum, op.value)
            if isinstance(op, TestPR):
                return table.find_value(op.version, op.pkgarch, op.checksum, op.history)
            if isinstance(op, TestPackage):
                return table.test_package(op.version, op.pkgarch)
            if isinstance(op, MaxPackagePR):
                return table.find_package_max_value(op.version, op.pkgarch)
            if isinstance(op, Export):
                _, datainfo = table.export(op.version, op.pkgarch, op.checksum, False, op.history)
                return export_rows(datainfo)
        except InvalidRevisionError as exc:
            return ModelError(str(exc))
        raise AssertionError("unexpected operation %r" % (op,))


class TableMachine(RuleBasedStateMachine):
    """Random operations on PRTable and on the model, answers compared step by step.

    Every write is committed at once here, so the file must equal the model after
    every step, not only after a close.
    """

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.directory.name, "pr.sqlite3")
        self.model = Model()
        self.tables: Optional[Tables] = None
        self.steps = 0
        self.export_batch: Optional[int] = None

    @initialize(cache_size=st.sampled_from([1, 1500, 64 << 20]),   # one entry, a few, all
                export_batch=st.sampled_from(EXPORT_BATCHES),
                shape=st.sampled_from(PACKAGE_SHAPES))
    def open(self, cache_size: int, export_batch: int, shape: Tuple[int, int, int]) -> None:
        self.export_batch = set_export_batch(export_batch)
        self.shape = set_package_shape(shape)
        self.tables = Tables(self.path, cache_size)
        self.tables.open()
        self.file_rows = FileRows(self.path)

    # The table takes an empty version (the server refuses it); export must skip it.
    @rule(op=operations([WRITER, WRITER, OTHER_WRITER, READER], VERSIONS + [""]))
    def step(self, op: Op) -> None:
        self.steps += 1
        if isinstance(op, Reopen):
            self.tables.close()
            self.tables.open()
            return
        check(self.steps, op, self.tables.apply(op), expected(self.model, op))

    @invariant()
    def file_matches_model(self) -> None:
        if self.tables is not None:
            assert self.file_rows() == self.model.rows, "after step %d" % self.steps

    def teardown(self) -> None:
        set_export_batch(self.export_batch)
        if self.tables is not None:
            set_package_shape(self.shape)
            self.tables.close()
            self.file_rows.close()
        self.directory.cleanup()


@pytest.mark.slow
def test_table_matches_model() -> None:
    """PRTable (caches, cross-connection sync, LRU eviction, reopen) equals the model."""
    run_state_machine_as_test(TableMachine, settings=settings(
        max_examples=200, stateful_step_count=50, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


# --------------------------------------------------------------------------- layer 2: the server

class Servers:
    """Real servers on 127.0.0.1 port 0 over one file, each with a connected client.

    ``immediate``: two writers and a read-only server share the file.  ``on-shutdown``
    holds the file exclusively, so a single server answers from uncommitted state.
    """

    def __init__(self, path: str, sync_mode: str) -> None:
        self.path = path
        self.sync_mode = sync_mode
        self.servers: List[PRServer] = []
        self.clients: List[PRAsyncClient] = []

    async def open(self) -> None:
        kinds = [False, False, True] if self.sync_mode == "immediate" else [False]
        for read_only in kinds:
            server = prserv.create_server("127.0.0.1:0", self.path, read_only=read_only,
                                          sync_mode=self.sync_mode)
            await server.start_serving()
            self.servers.append(server)
            self.clients.append(await prserv.create_async_client(server.address))

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for server in self.servers:
            await server.stop_serving()
        self.servers, self.clients = [], []

    async def apply(self, op: Op) -> Any:
        client = self.clients[op.via]
        try:
            if isinstance(op, GetPR):
                return await client.getPR(op.version, op.pkgarch, op.checksum, op.history)
            if isinstance(op, ImportOne):
                return await client.importone(op.version, op.pkgarch, op.checksum, op.value)
            if isinstance(op, TestPR):
                return await client.test_pr(op.version, op.pkgarch, op.checksum, op.history)
            if isinstance(op, TestPackage):
                return await client.test_package(op.version, op.pkgarch)
            if isinstance(op, MaxPackagePR):
                return await client.max_package_pr(op.version, op.pkgarch)
            if isinstance(op, Export):
                _, datainfo = await client.export(op.version, op.pkgarch, op.checksum, False,
                                                  op.history)
                return export_rows(datainfo)
        except InvokeError as exc:
            return ModelError(str(exc))
        raise AssertionError("unexpected operation %r" % (op,))


class ServerMachine(RuleBasedStateMachine):
    """Random requests to real servers and to the model, answers compared step by step.

    The servers and clients live on one event loop owned by the machine; each step
    runs it until the answer is in.  Subclasses choose the sync mode.
    """

    SYNC_MODE = "immediate"
    VIAS = [WRITER, WRITER, OTHER_WRITER, READER]

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.directory.name, "pr.sqlite3")
        self.model = Model()
        self.loop = asyncio.new_event_loop()
        self.servers = Servers(self.path, self.SYNC_MODE)
        self.loop.run_until_complete(self.servers.open())
        self.steps = 0
        self.export_batch: Optional[int] = None

    @initialize(export_batch=st.sampled_from(EXPORT_BATCHES), shape=st.sampled_from(PACKAGE_SHAPES))
    def small_export_batches(self, export_batch: int, shape: Tuple[int, int, int]) -> None:
        self.export_batch = set_export_batch(export_batch)
        self.shape = set_package_shape(shape)

    @rule(op=operations(VIAS))
    def step(self, op: Op) -> None:
        self.steps += 1
        if isinstance(op, Reopen):
            self.loop.run_until_complete(self.servers.close())
            # Closed cleanly: even a buffered mode has written everything by now.
            assert read_file_rows(self.path) == self.model.rows, "after step %d" % self.steps
            self.loop.run_until_complete(self.servers.open())
            return
        check(self.steps, op, self.loop.run_until_complete(self.servers.apply(op)),
              expected(self.model, op))

    def teardown(self) -> None:
        set_export_batch(self.export_batch)
        if self.export_batch is not None:
            set_package_shape(self.shape)
        try:
            self.loop.run_until_complete(self.servers.close())
        finally:
            self.loop.close()
            self.directory.cleanup()


class ImmediateServerMachine(ServerMachine):
    """Every answer is committed before it is sent: the file equals the model after
    each step, whichever of the three servers answered."""

    @invariant()
    def file_matches_model(self) -> None:
        assert read_file_rows(self.path) == self.model.rows, "after step %d" % self.steps


class OnShutdownServerMachine(ServerMachine):
    """Answers come from the uncommitted buffer; a clean shutdown writes them all."""

    SYNC_MODE = "on-shutdown"
    VIAS = [WRITER]

    # Redeclared: a rule's strategy is fixed when its class is created.
    @rule(op=operations(VIAS))
    def step(self, op: Op) -> None:
        super().step(op)


SERVER_SETTINGS = settings(max_examples=30, stateful_step_count=50, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])


def test_servers_immediate_match_model() -> None:
    """Over the wire, two writers and a read-only server on one file agree with the model."""
    run_state_machine_as_test(ImmediateServerMachine, settings=SERVER_SETTINGS)


def test_server_on_shutdown_matches_model() -> None:
    """One buffered (on-shutdown) server agrees with the model, restarts included."""
    run_state_machine_as_test(OnShutdownServerMachine, settings=SERVER_SETTINGS)


# --------------------------------------------------------------------------- the model itself

def test_model_follows_the_spec_examples() -> None:
    """The model reproduces docs/semantics.md's worked examples (so it is worth comparing to)."""
    v, a = "zlib", "x86"
    m = Model()
    assert [m.get_pr(v, a, c, False) for c in "aabc"] == ["0", "0", "1", "2"]
    assert m.get_pr(v, a, "b", False) == "3"
    assert m.test_pr(v, a, "b", False) == "3" and m.test_pr(v, a, "b", True) == "1"
    assert m.get_pr(v, a, "c", False) == "4"
    assert m.get_pr(v, "arm", "a", False) == "0" and m.get_pr("other", a, "a", False) == "0"
    assert m.get_pr(v, a, "a", False) == "5"

    h = Model()
    assert [h.get_pr(v, a, c, hist) for c, hist in
            [("h1", True), ("h2", True), ("h1", True), ("h3", True), ("h1", False),
             ("h1", True), ("h2", False), ("h4", True)]] == ["0", "1", "0", "2", "3", "0", "4", "5"]

    d = Model()                                   # D1: "9" < "10" numerically
    for n in range(11):
        assert d.get_pr(v, a, "d1-%d" % n, False) == str(n)
    assert d.get_pr(v, a, "d1-9", False) == "11"
    assert d.max_package_pr(v, a) == "11"

    k = Model()                                   # import-one: no ordering check
    assert k.import_one(v, a, "k1", 3) == 3 and k.import_one(v, a, "k1", "1") == "1"
    assert k.test_pr(v, a, "k1", False) == "3" and k.test_pr(v, a, "k1", True) == "1"
    assert k.import_one(v, a, "k2", "1.20") == "1.20" and k.import_one(v, a, "k3", "1.3") == "1.3"
    assert k.max_package_pr(v, a) == "3"
    assert k.import_one(v, a, "k4", "1.0") == "1.0"
    assert k.export(None, None, None, False) == [(v, a, "k1", "3")]
    assert k.import_one(v, a, "k5", "3") == "3"
    assert k.export(None, None, "k5", False) == [(v, a, "k5", "3")]
    assert k.export(None, None, "k4", False) == []

    o = Model()                                   # ordering: 1 < 1.0 < 1.3 < 1.20 < 2
    for c, value in [("p", "1.20"), ("q", "1.3"), ("r", "1"), ("s", "1.0")]:
        o.import_one(v, a, c, value)
    assert o.max_package_pr(v, a) == "1.20"
    assert o.get_pr(v, a, "q", False) == "1.21" and o.get_pr(v, a, "new", True) == "1.22"
    o.import_one(v, a, "r", "2")
    assert o.test_pr(v, a, "r", True) == "1" and o.max_package_pr(v, a) == "2"

    for bad in BAD_VALUES:
        try:
            Model().import_one(v, a, "x", bad)
        except ModelError:
            continue
        raise AssertionError("the model accepted %r" % (bad,))
    assert Model().import_one(v, a, "x", "1", read_only=True) is None
