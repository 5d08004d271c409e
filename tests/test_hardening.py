"""Hardening: no SQL built from request strings; read-only servers never write.

1. An ``ast`` audit of every ``.execute``/``.executemany``/``.executescript`` call in
   ``lib/prserv``: an SQL text may only be interpolated from module constants, the
   checked table identifier, and the few other sites listed (with the reason each is
   safe) in ``ALLOWED_DYNAMIC_SQL``.  Then the same property over the wire: strings
   full of SQL metacharacters and LIKE/GLOB wildcards are plain data everywhere.
2. A read-only server -- alone, and with an upstream that knows more than the file --
   answers every method per docs/semantics.md §3/§7/§8 and leaves the database file
   byte-for-byte unchanged.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from prserv.db import PRData
from prserv.storage.sqlite.schema import checked_identifier as _checked_identifier
from prserv.errors import DatabaseError

LIB = Path(__file__).resolve().parent.parent / "lib" / "prserv"
SQL_METHODS = {"execute", "executemany", "executescript", "fetch", "fetchrow", "fetchval", "_query",
               "write_statement", "write_repeated"}
"""sqlite3's and asyncpg's methods that take SQL text, and the PostgreSQL engine's
``_query``, ``write_statement`` and ``write_repeated``, which pass their text on to
one of asyncpg's."""

# --------------------------------------------------------------------------- 1a. audit

# Every execute call whose SQL text is not a constant, by (file, function), with the
# only non-constant pieces it may interpolate.  Anything else fails the audit.
ALLOWED_DYNAMIC_SQL: Dict[Tuple[str, str], Set[str]] = {
    # ``self.table`` is only ever assigned ``checked_identifier(...)`` (an identifier
    # matching [A-Za-z_][A-Za-z0-9_]*, checked by test_table_identifier_is_checked);
    # every request string in these queries is a bound ``?`` parameter.
    ("storage/sqlite/cache.py", "PackageCache._max_rowid"): {"self.table"},
    ("storage/sqlite/cache.py", "PackageCache.sync_now"): {"self.table"},
    ("storage/sqlite/cache.py", "PackageCache._checksum"): {"self.table"},
    ("storage/sqlite/cache.py", "PackageCache._read_package"): {"self.table"},
    # ``self._by_value()`` is ``self.table``, or that and INDEXED BY value_index_name
    # (a constant pattern around checked_identifier(self.table)); ``indexed_values()``
    # formats the integer constant VALUE_INDEX_FROM with %d.
    ("storage/sqlite/cache.py", "PackageCache.largest"): {"self.table", "self._by_value()", "indexed_values()"},
    ("storage/sqlite/cache.py", "PackageCache._read_maximum"):
        {"self.table", "self._by_value()", "indexed_values()"},
    ("storage/sqlite/cache.py", "PackageCache._largest_child"):
        {"self.table", "self._by_value()", "indexed_values()"},
    ("storage/sqlite/engine.py", "SQLiteEngine.has_row"): {"self.table"},
    ("storage/sqlite/engine.py", "SQLiteEngine.column_info"): {"self.table"},  # PRAGMA table_info
    ("storage/sqlite/engine.py", "SQLiteEngine.insert"): {"self.table"},
    ("storage/sqlite/engine.py", "SQLiteEngine._add_rows"): {"self.table"},
    # The change feed (storage/sqlite/feed.py): ``table`` is SQLiteEngine.table (checked);
    # ``self.table`` and ``self.positions`` / ``positions_table(table)`` /
    # ``positions`` ("prserv_%s_positions" % checked_identifier(table)) are checked again.
    ("storage/sqlite/feed.py", "first_row_identity"): {"table"},
    ("storage/sqlite/counting.py", "PackageCounter._add_new"): {"self.table"},
    ("storage/sqlite/counting.py", "PackageCounter._existed"): {"self.table"},
    ("storage/sqlite/record.py", "create"): {"record_table(table)", "OLD_TIME_INDEX % checked_identifier(table)"},
    ("storage/sqlite/record.py", "Record.row_range"): {"self.name"},
    ("storage/sqlite/record.py", "Record.first_since"): {"self.name"},
    ("storage/sqlite/record.py", "Record._record_at"): {"self.name"},
    ("storage/sqlite/record.py", "Record.flush"): {"self.name"},
    ("storage/sqlite/record.py", "Record.forget_clients"): {"self.name"},
    ("storage/sqlite/record.py", "Record.history"): {"self.name", "self.table"},
    ("storage/sqlite/record.py", "Record.first_given"): {"self.name", "self.table", "value_index_name(self.table)",
                                                         "indexed_values()"},
    ("storage/sqlite/record.py", "Record.recent"): {"self.name", "self.table"},
    ("storage/sqlite/record.py", "Record.given_since"): {"self.name"},
    # A copy's records (prserv copy): rows found by their primary key, every value bound.
    ("storage/sqlite/record.py", "Record.keep"): {"self.name", "self.table"},
    ("storage/sqlite/record.py", "Record.of_rows"): {"self.name", "self.table"},
    ("storage/sqlite/feed.py", "open_origin"): {"positions_table(table)"},
    ("storage/sqlite/feed.py", "open_mirror"): {"table", "positions_table(table)"},
    ("storage/sqlite/feed.py", "FeedReader.local_row"): {"self.positions"},
    ("storage/sqlite/feed.py", "FeedReader.changes"): {"self.table", "self.positions"},
    # ``self.record`` is record_table(table): "prserv_%s_given" % checked_identifier(table).
    ("storage/sqlite/feed.py", "FeedReader._timed_rows"): {"self.table", "self.positions", "self.record"},
    ("storage/sqlite/feed.py", "FeedReader.at"): {"self.table"},
    ("storage/sqlite/feed.py", "FeedReader.between"): {"self.table", "self.positions"},
    ("storage/sqlite/feed.py", "FeedReader.count_after"): {"self.table"},
    ("storage/sqlite/feed.py", "FeedReader.bound_after"): {"self.positions"},
    ("storage/sqlite/feed.py", "apply"): {"table", "positions"},
    ("storage/sqlite/feed.py", "reset"): {"table", "positions_table(table)"},
    ("storage/sqlite/feed.py", "_first_held"): {"table"},
    # PostgreSQL (storage/postgresql): ``statement`` runs through the constant DDL lists
    # CREATE and UPGRADES of schema.py; ``where`` and ``after`` join "<column> = $n" and
    # a row comparison of constant columns ($n numbered by %d, as is ``len(args)``; the
    # columns come from a literal list at
    # the call site); ``query`` is ``_query``'s argument (its call sites are audited as
    # SQL sites themselves).  Every value is a $n parameter.
    ("storage/postgresql/schema.py", "ensure"): {"statement"},
    ("storage/postgresql/engine.py", "PostgreSQLEngine._select"): {"where", "after", "len(args)"},
    ("storage/postgresql/engine.py", "PostgreSQLEngine._query"): {"query"},
    # CREATE TABLE IF NOT EXISTS <name>: the name passes checked_identifier right there.
    ("storage/sqlite/schema.py", "create_table"): {"checked_identifier(table)"},
    # DROP INDEX / CREATE INDEX prserv_<name>_high_values ON <name> WHERE <term>:
    # value_index_name(table) is "prserv_%s_high_values" % checked_identifier(table);
    # old_index is the constant pattern OLD_VALUE_INDEX % checked_identifier(table);
    # value_index_ddl(table) formats those
    # two and indexed_values() (an integer constant) into VALUE_INDEX_DDL.
    ("storage/sqlite/schema.py", "create_value_index"):
        {"old_index", "value_index_name(table)", "value_index_ddl(table)"},
    # ``where`` joins the constant "version != ''" and "<column> = ?" where every
    # column comes from a literal tuple at the call sites (checked by
    # test_export_where_clause_is_built_from_constant_columns); values are parameters.
    ("storage/sqlite/engine.py", "SQLiteEngine._select"): {"self.table", "where"},
    # A listing's query takes only flags (which filters apply) and the checked table:
    # test_listing_queries_are_built_from_flags_only holds both engines' builders to it.
    ("storage/sqlite/listing.py", "next_package"): {"table"},
    ("storage/sqlite/listing.py", "_of_pkgarch"): {"table"},
    ("storage/sqlite/listing.py", "_first_version"): {"table"},
    ("storage/sqlite/listing.py", "_next_version"): {"table"},
    # ``synchronous`` is compared with OFF/NORMAL/FULL/EXTRA first (a DatabaseError
    # otherwise; checked by test_synchronous_and_table_names_are_validated).
    # (``BUSY_TIMEOUT_SECONDS * 1000`` is a module constant, so not listed.)
    ("storage/sqlite/connection.py", "open_connection"): {"synchronous.upper()"},
    # An integer constant of the checkpoint module, formatted with %d.
    ("storage/sqlite/database.py", "SQLiteDatabase.__init__"): {"checkpoint.WAL_COPY_BYTES"},
    # ``name`` passes ``checked_identifier`` on the function's first line.
    ("storage/sqlite/database.py", "SQLiteDatabase.drop_table"): {"name"},
    # Backups (issue 7): row counts of the tables a database file lists in
    # sqlite_master, each name quoted as an identifier (embedded quotes doubled);
    # a restore executes the statements of an SQL dump file, as
    # ``sqlite3 NEW.db < dump.sql`` does -- an operator's file, never request data.
    ("storage/sqlite/backup.py", "verify_connection"): {"_quoted(name)"},
    ("storage/sqlite/backup.py", "apply_sql"): {"statement"},
    # The PostgreSQL engine's write_statement passes its caller's text on (audited
    # at each caller, since write_statement is one of SQL_METHODS).
    ("storage/postgresql/engine.py", "PostgreSQLEngine.write_statement"): {"query"},
}


class _Function:
    """Name bindings of one function body (nested functions and classes excluded)."""

    UNKNOWN = object()     # bound to something we do not follow: a parameter, a loop target...

    def __init__(self, node: Optional[ast.AST]) -> None:
        self.bindings: Dict[str, List[object]] = {}
        if node is None:
            return
        args = node.args
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None:
                self._bind(arg.arg, self.UNKNOWN)
        for child in _walk_body(node):
            if isinstance(child, ast.Assign):
                for target in child.targets:
                    self._bind_target(target, child.value)
            elif isinstance(child, (ast.AnnAssign, ast.NamedExpr)) and child.value is not None:
                self._bind_target(child.target, child.value)
            elif isinstance(child, ast.AugAssign):
                if isinstance(child.op, ast.Add) and isinstance(child.target, ast.Name):
                    self._bind(child.target.id, child.value)
                else:
                    self._bind_target(child.target, None)
            elif isinstance(child, (ast.For, ast.AsyncFor, ast.comprehension)):
                self._bind_target(child.target, None)
            elif isinstance(child, ast.withitem) and child.optional_vars is not None:
                self._bind_target(child.optional_vars, None)
            elif isinstance(child, ast.ExceptHandler) and child.name:
                self._bind(child.name, self.UNKNOWN)

    def _bind_target(self, target: ast.AST, value: Optional[ast.AST]) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, value if value is not None else self.UNKNOWN)
        elif isinstance(target, (ast.Tuple, ast.List)):
            paired = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) \
                and not any(isinstance(e, ast.Starred) for e in target.elts + value.elts)
            for n, element in enumerate(target.elts):
                self._bind_target(element, value.elts[n] if paired else None)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, None)

    def _bind(self, name: str, value: object) -> None:
        self.bindings.setdefault(name, []).append(value)


def _walk_body(node: ast.AST) -> Iterator[ast.AST]:
    """All nodes inside a function, not descending into nested scopes."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        yield child
        yield from _walk_body(child)


class _Evaluator:
    """Which non-constant pieces an SQL expression is built from."""

    def __init__(self, constants: Dict[str, ast.AST], function: _Function) -> None:
        self.constants = constants
        self.function = function

    def _values_of(self, name: str) -> Optional[List[object]]:
        if name in self.function.bindings:
            return self.function.bindings[name]
        if name in self.constants:
            return [self.constants[name]]
        return None

    def is_constant(self, node: ast.AST, seen: frozenset = frozenset()) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            values = self._values_of(node.id)
            if values is None or node.id in seen:
                return False
            return all(value is not _Function.UNKNOWN and self.is_constant(value, seen | {node.id})
                       for value in values)
        if isinstance(node, ast.BinOp):
            return self.is_constant(node.left, seen) and self.is_constant(node.right, seen)
        if isinstance(node, ast.UnaryOp):
            return self.is_constant(node.operand, seen)
        if _dotted(node) in self.constants:
            return self.is_constant(self.constants[_dotted(node)], seen)
        if isinstance(node, ast.Tuple):
            return all(self.is_constant(element, seen) for element in node.elts)
        return False

    def _piece(self, node: ast.AST, seen: frozenset) -> Set[str]:
        return set() if self.is_constant(node, seen) else {ast.unparse(node)}

    def ingredients(self, node: ast.AST, seen: frozenset = frozenset()) -> Set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            return set()
        if isinstance(node, ast.JoinedStr):                       # f-string
            return set().union(*(self._piece(value.value, seen) for value in node.values
                                 if isinstance(value, ast.FormattedValue)))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.ingredients(node.left, seen) | self.ingredients(node.right, seen)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            parts = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            return self.ingredients(node.left, seen).union(*(self._piece(p, seen) for p in parts))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "format":
            parts = list(node.args) + [keyword.value for keyword in node.keywords]
            return self.ingredients(node.func.value, seen).union(*(self._piece(p, seen) for p in parts))
        if _dotted(node) in self.constants:                       # module.CONSTANT
            return self.ingredients(self.constants[_dotted(node)], seen)
        if isinstance(node, ast.Name) and node.id not in seen:
            values = self._values_of(node.id)
            if values is not None:
                found: Set[str] = set()
                for value in values:
                    if value is _Function.UNKNOWN:
                        found.add(node.id)
                    else:
                        found |= self.ingredients(value, seen | {node.id})
                return found
        return {ast.unparse(node)}


def _module_constants(tree: ast.Module) -> Dict[str, ast.AST]:
    constants: Dict[str, ast.AST] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name):
            constants[statement.targets[0].id] = statement.value
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) \
                and statement.value is not None:
            constants[statement.target.id] = statement.value
    return constants


def _dotted(node: ast.AST) -> str:
    """``module.NAME`` for an attribute of a name, else ''."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return "%s.%s" % (node.value.id, node.attr)
    return ""


def _imported_constants(tree: ast.Module, path: Path) -> Dict[str, ast.AST]:
    """The constants a module takes from its package's modules (``from .m import C``
    as ``C``, ``from . import m`` as ``m.C``), each one that is constant text in its
    own module standing as a constant here (anything else as it is, to be flagged)."""
    found: Dict[str, ast.AST] = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.ImportFrom) and statement.level):
            continue
        base = path.parent
        for _ in range(statement.level - 1):
            base = base.parent
        if statement.module:
            base = base.joinpath(*statement.module.split("."))
        for alias in statement.names:
            name = alias.asname or alias.name
            module_file = base / (alias.name + ".py")
            if module_file.exists():                                   # from . import module
                for constant, value in _checked_constants(module_file).items():
                    found["%s.%s" % (name, constant)] = value
            elif base.with_suffix(".py").exists():                     # from .module import NAME
                constants = _checked_constants(base.with_suffix(".py"))
                if alias.name in constants:
                    found[name] = constants[alias.name]
    return found


def _checked_constants(path: Path) -> Dict[str, ast.AST]:
    """A module's constants, those built only of constant text replaced by ''."""
    constants = _module_constants(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    evaluator = _Evaluator(constants, _Function(None))
    return {name: ast.Constant("") if not evaluator.ingredients(value) else value
            for name, value in constants.items()}


def sql_sites(root: Path = LIB) -> List[Tuple[str, str, int, Set[str]]]:
    """(file, function, line, non-constant pieces) of every execute call under ``root``."""
    sites = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        constants = {**_imported_constants(tree, path), **_module_constants(tree)}
        relative = path.relative_to(root).as_posix()

        def visit(node: ast.AST, qualname: List[str], function: _Function) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, qualname + [child.name], _Function(None))
                    continue
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(child, qualname + [child.name], _Function(child))
                    continue
                if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) \
                        and child.func.attr in SQL_METHODS:
                    sql = child.args[0] if child.args else next(
                        (k.value for k in child.keywords if k.arg in ("sql", "sql_script")), None)
                    if sql is None or isinstance(sql, ast.Starred):
                        pieces = {ast.unparse(child)}
                    else:
                        pieces = _Evaluator(constants, function).ingredients(sql)
                    sites.append((relative, ".".join(qualname) or "<module>", child.lineno, pieces))
                visit(child, qualname, function)

        visit(tree, [], _Function(None))
    return sites


def test_no_sql_text_built_from_anything_but_checked_identifiers():
    sites = sql_sites()
    assert len(sites) >= 15, "the audit found too few execute calls: %r" % sites
    assert any(site[:2] == ("storage/sqlite/engine.py", "SQLiteEngine.insert") and site[3] == {"self.table"}
               for site in sites)
    violations = []
    for relative, function, line, pieces in sites:
        if not pieces:
            continue                                    # a constant SQL text
        allowed = ALLOWED_DYNAMIC_SQL.get((relative, function))
        if allowed is None or not pieces <= allowed:
            violations.append("%s:%d in %s interpolates %s into SQL" % (
                relative, line, function, sorted(pieces - (allowed or set()))))
    assert not violations, "\n".join(violations)


def test_the_audit_catches_sql_built_from_request_strings():
    """The evaluator itself: each way of building SQL text from a variable is seen."""
    source = '''
TABLE = "PRMAIN"
COLS = "version, pkgarch"
def f(conn, version, table):
    conn.execute("SELECT 1 FROM %s WHERE version = '%s'" % (TABLE, version))
    conn.execute(f"SELECT {COLS} FROM PRMAIN WHERE checksum = '{version}'")
    conn.execute("SELECT * FROM {} WHERE x = ?".format(table), (1,))
    sql = "SELECT * FROM PRMAIN WHERE version = '" + version + "'"
    conn.executemany(sql, [])
    query = "SELECT 1"
    query += " WHERE pkgarch = " + version
    conn.executescript(query)
    conn.execute("SELECT %s FROM " % COLS + TABLE, ())
    conn.execute("PRAGMA busy_timeout = %d" % (30 * 1000))
'''
    tree = ast.parse(source)
    constants = _module_constants(tree)
    function = _Function(tree.body[2])
    calls = [node for node in ast.walk(tree.body[2]) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS]
    found = [_Evaluator(constants, function).ingredients(call.args[0]) for call in calls]
    assert found == [{"version"}, {"version"}, {"table"}, {"version"}, {"version"}, set(), set()]


def test_table_identifier_is_checked():
    """``self.table`` (interpolated by the allowed sites) is only a checked identifier."""
    tree = ast.Module(body=[ast.parse(path.read_text(encoding="utf-8"))
                            for path in (LIB / "storage").rglob("*.py")], type_ignores=[])
    assignments = [node for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                   for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                   if isinstance(target, ast.Attribute) and target.attr == "table"
                   and isinstance(target.value, ast.Name) and target.value.id == "self"]
    assert assignments
    for node in assignments:
        assert isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name) \
            and node.value.func.id == "checked_identifier", ast.unparse(node)
    assert _checked_identifier("PRMAIN") == "PRMAIN"
    for bad in ["PRMAIN; DROP TABLE x", "PRMAIN --", "a'b", 'a"b', "a b", "", "1abc", "PRMAIN\n",
                "x) --", "é", None]:
        with pytest.raises(DatabaseError):
            _checked_identifier(bad)


def test_synchronous_and_table_names_are_validated(tmp_path):
    path = str(tmp_path / "v.sqlite3")
    for bad in ("OFF; DROP TABLE PRMAIN", "bogus", "NORMAL --", "(1)"):
        with pytest.raises(DatabaseError):
            PRData(path, synchronous=bad)
    data = PRData(path)
    try:
        data["PRMAIN"].store_value("v", "a", "c", "0")
        with pytest.raises(DatabaseError):
            data["PRMAIN (x); DROP TABLE PRMAIN; --"]
        with pytest.raises(DatabaseError):
            del data["PRMAIN; --"]
        assert data["PRMAIN"].find_value("v", "a", "c") == "0"
    finally:
        data.disconnect()
    # drop_table checks the name before anything else (the allowed site above).
    tree = ast.parse((LIB / "storage" / "sqlite" / "database.py").read_text(encoding="utf-8"))
    drop = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                and node.name == "drop_table")
    first = next(statement for statement in drop.body if not (   # after the docstring
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)))
    assert isinstance(first, ast.Expr) and ast.unparse(first) == "checked_identifier(name)"


@pytest.mark.parametrize("module, selector, filters_at, where, clause", [
    ("sqlite/engine.py", "_select", 0, "' AND '.join(clauses)", "'%s = ?' % column"),
    ("postgresql/export.py", "select_batches", 1, "' AND '.join(clauses) or 'TRUE'",
     "'%s = $%d' % (column, len(params))")])
def test_export_where_clause_is_built_from_constant_columns(module, selector, filters_at, where, clause):
    """``where`` in each engine's export selection: constant clauses and ``"%s = ?" %
    column`` (``$n`` numbered on PostgreSQL) only, ``column`` from the ``filters``
    pairs, which every caller writes as literals."""
    tree = ast.parse((LIB / "storage" / module).read_text(encoding="utf-8"))
    select = next(node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.name == selector)
    bindings = _Function(select).bindings
    assert [ast.unparse(v) if v is not _Function.UNKNOWN else None for v in bindings["where"]] == [where]
    appends = [node for node in ast.walk(select) if isinstance(node, ast.Call)
               and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
               and ast.unparse(node.func.value) == "clauses"]
    assert [ast.unparse(node.args[0]) for node in appends] == [clause]
    loops = [node for node in ast.walk(select) if isinstance(node, ast.For)
             and ast.unparse(node.target) == "(column, value)"]
    assert len(loops) == 1 and ast.unparse(loops[0].iter) == "filters"
    assert bindings["column"] == [_Function.UNKNOWN]       # bound by that loop only
    for value in bindings["clauses"]:                      # the initial list: constants only
        assert isinstance(value, ast.List) and all(isinstance(e, ast.Constant) for e in value.elts)
    callers = [node for path in LIB.rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Call) and (ast.unparse(node.func).rpartition(".")[2] == selector)]
    assert callers
    for call in callers:
        assert len(call.args) == filters_at + 1, ast.unparse(call)
        filters = call.args[filters_at]
        assert isinstance(filters, ast.List), ast.unparse(call)
        for pair in filters.elts:
            assert isinstance(pair, ast.Tuple) and isinstance(pair.elts[0], ast.Constant) \
                and pair.elts[0].value in ("version", "pkgarch", "checksum"), ast.unparse(call)


@pytest.mark.parametrize("module, builder", [("postgresql/listing.py", "packages_query")])
def test_listing_queries_are_built_from_flags_only(module, builder):
    """PostgreSQL's package listing's SQL (``Engine.packages``) is chosen by flags --
    which filters apply: every call passes ``<name> is not None`` comparisons, and the
    builder formats only constants and ``%d`` numbers.  (SQLite's listing queries are
    constants around the checked table name, held by the audit above.)"""
    from prserv.storage.postgresql.listing import packages_query

    calls = [node for path in LIB.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == builder]
    assert len(calls) == 1
    flags = calls[0].args
    assert len(flags) == 3 and all(isinstance(flag, ast.Compare) and ast.unparse(flag).endswith(" is not None")
                                   for flag in flags), ast.unparse(calls[0])
    texts = set()
    for bounded in (False, True):
        for by_pkgarch in (False, True):
            for after in (False, True):
                text = packages_query(bounded, by_pkgarch, after)
                assert "%" not in text and "'" not in text
                texts.add(text)
    assert len(texts) == 8


# --------------------------------------------------------------------------- 1b. over the wire

V, A = "curl-8.6.0-r0", "cortexa72"

NASTY = [
    "a", "A", "ab", "a%", "a_", "a'", 'a"', "a\\", "a\\%", "a;--", "a' OR '1'='1", "' OR '1'='1",
    "a*", "a?", "a[b]", "%", "_", "*", "?", "a ", "a%'); DROP TABLE PRMAIN;--", "é€😀 \u2028",
]
# Absent strings that a LIKE (case-insensitive, % and _), a GLOB (*, ?, [..]) or a
# broken quote/escape handling would match against one of NASTY.
PROBES = [
    "aX", "abc", "ac", "AB", "b", "x", "a%%", "a''", "a\\\\", "aXb", "é", "a' OR '2'='2", "a%b"]
assert not set(NASTY) & set(PROBES)

SENTINEL = [("zlib-1.3.1-r0", "x86_64", "s0", "0"), ("zlib-1.3.1-r0", "x86_64", "s1", "1"),
            ("zlib-1.3.1-r0", "x86_64", "s1", "2.0")]


async def aclient(address):
    return await prserv.create_async_client(address)


def rows_in_file(path: str) -> Set[Tuple[str, str, str, str]]:
    conn = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True)
    try:
        return set(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))
    finally:
        conn.close()


def schema_of(path: str) -> List[tuple]:
    conn = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True)
    try:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def as_rows(datainfo: List[dict]) -> Set[Tuple[str, str, str, str]]:
    return {(r["version"], r["pkgarch"], r["checksum"], r["value"]) for r in datainfo}


@pytest.fixture
async def seeded(start_server, tmp_path):
    server = await start_server()
    async with await aclient(server.address) as c:
        for row in SENTINEL:
            assert await c.importone(*row) == row[3]
    return server, str(tmp_path / "pr.sqlite3")


async def test_metacharacter_checksums_are_plain_data(seeded):
    server, path = seeded
    schema = schema_of(path)
    expected = set(SENTINEL)
    async with await aclient(server.address) as c:
        for n, checksum in enumerate(NASTY):                 # a new checksum: max + 1
            assert await c.getPR(V, A, checksum) == str(n), checksum
            expected.add((V, A, checksum, str(n)))
        for n, checksum in enumerate(NASTY):
            assert await c.getPR(V, A, checksum, True) == str(n), checksum
            assert await c.test_pr(V, A, checksum) == str(n), checksum
            assert await c.test_pr(V, A, checksum, True) == str(n), checksum
            for history in (True, False):
                assert as_rows((await c.export(V, A, checksum, False, history))[1]) == \
                    ({(V, A, checksum, str(n))} if history or n == len(NASTY) - 1 else set()), checksum
            assert as_rows((await c.export(None, None, checksum, False, True))[1]) == \
                {(V, A, checksum, str(n))}, checksum
        for probe in PROBES:
            assert await c.test_pr(V, A, probe) is None, probe
            assert await c.test_pr(V, A, probe, True) is None, probe
            assert (await c.export(None, None, probe, False, True))[1] == [], probe
        assert await c.max_package_pr(V, A) == str(len(NASTY) - 1)
        assert as_rows((await c.export(None, None, None, False, True))[1]) == expected
    assert rows_in_file(path) == expected
    assert schema_of(path) == schema


@pytest.mark.parametrize("field", ["version", "pkgarch"])
async def test_metacharacter_packages_are_independent(field, seeded):
    server, path = seeded
    schema = schema_of(path)
    expected = set(SENTINEL)

    def package(text):
        return (text, A) if field == "version" else (V, text)

    def export_filter(text):
        return (text, None, None) if field == "version" else (None, text, None)

    async with await aclient(server.address) as c:
        for n, text in enumerate(NASTY):
            assert await c.importone(*package(text), "seed", str(10 * n)) == str(10 * n)
            assert await c.getPR(*package(text), "new") == str(10 * n + 1), text
            expected |= {(*package(text), "seed", str(10 * n)), (*package(text), "new", str(10 * n + 1))}
        for n, text in enumerate(NASTY):
            assert await c.test_package(*package(text)) is True, text
            assert await c.max_package_pr(*package(text)) == str(10 * n + 1), text
            assert await c.test_pr(*package(text), "seed") == str(10 * n), text
            assert as_rows((await c.export(*export_filter(text), False, True))[1]) == \
                {(*package(text), "seed", str(10 * n)), (*package(text), "new", str(10 * n + 1))}, text
            assert as_rows((await c.export(*export_filter(text), False, False))[1]) == \
                {(*package(text), "new", str(10 * n + 1))}, text
        for probe in PROBES:
            assert await c.test_package(*package(probe)) is False, probe
            assert await c.max_package_pr(*package(probe)) is None, probe
            assert await c.test_pr(*package(probe), "seed") is None, probe
            assert (await c.export(*export_filter(probe), False, True))[1] == [], probe
        for probe in PROBES:                                 # a fresh package starts at 0
            assert await c.getPR(*package(probe), "seed") == "0", probe
            expected.add((*package(probe), "seed", "0"))
        # All three fields at once.
        everything = "' OR '1'='1"
        assert await c.getPR(everything, everything, everything) == "0"
        assert await c.getPR(everything, everything, "%") == "1"
        expected |= {(everything, everything, everything, "0"), (everything, everything, "%", "1")}
        assert as_rows((await c.export(everything, everything, everything, False, True))[1]) == \
            {(everything, everything, everything, "0")}
        assert as_rows((await c.export(None, None, None, False, True))[1]) == expected
    assert rows_in_file(path) == expected
    assert schema_of(path) == schema


# --------------------------------------------------------------------------- 2. read-only

P = ("glibc-2.39-r0", "armv8a")               # in the file and upstream (upstream max higher)
LOCAL_ONLY = ("local-only-1.0-r0", "armv8a")  # unknown upstream
UP_ONLY = ("upstream-only-1.0-r0", "armv8a")  # unknown to the file


def file_state(path: str) -> Dict[str, Optional[Tuple[int, str]]]:
    """(size, sha256) of the database file and its -wal / -shm, None if absent."""
    state = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            with open(path + suffix, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            state[suffix or "db"] = None
        else:
            state[suffix or "db"] = (len(data), hashlib.sha256(data).hexdigest())
    return state


def full_dump(path: str, copy_dir: Path) -> Tuple[List[str], Set[Tuple[str, str, str, str]]]:
    """(SQL dump, PRMAIN rows) read from a copy: the original is opened by no one else."""
    copy_dir.mkdir()
    copy = copy_dir / "copy.sqlite3"
    shutil.copyfile(path, copy)
    if os.path.exists(path + "-wal"):
        shutil.copyfile(path + "-wal", str(copy) + "-wal")
    conn = sqlite3.connect(str(copy))
    try:
        rows = set(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))
        return list(conn.iterdump()), rows
    finally:
        conn.close()


# The buffered sync modes make a writer hold the file exclusively: a read-only server
# must ignore them (it has nothing to buffer).
@pytest.mark.parametrize("mode", ["immediate", "on-shutdown", "periodic:0.01"])
async def test_read_only_session_leaves_the_file_byte_for_byte_unchanged(mode, start_server, tmp_path):
    path = str(tmp_path / "pr.sqlite3")
    writer = await start_server()
    async with await aclient(writer.address) as w:
        assert [await w.getPR(*P, c) for c in ("l0", "l1", "l2", "l1")] == ["0", "1", "2", "3"]
        assert await w.importone(*P, "l4", "1.5") == "1.5"
        assert [await w.getPR(*LOCAL_ONLY, c) for c in ("x0", "x1")] == ["0", "1"]
    await writer.stop_serving()
    before = file_state(path)
    # Observed: closing the last connection checkpoints the WAL and removes -wal/-shm.
    assert before["-wal"] is None and before["-shm"] is None
    mtime = os.stat(path).st_mtime_ns
    dump, file_rows = full_dump(path, tmp_path / "before")
    assert len(file_rows) == 7

    upstream = await start_server(db="up.sqlite3")
    async with await aclient(upstream.address) as u:
        for row in [(*P, "l0", "0"), (*P, "u5", "5"), (*P, "u7", "7"), (*UP_ONLY, "uq", "4")]:
            assert await u.importone(*row) == row[3]
        upstream_rows = as_rows((await u.export(None, None, None, False, True))[1])

    plain = await start_server(read_only=True, sync_mode=mode)
    opened = file_state(path)
    assert opened["db"] == before["db"] and opened["-wal"] == (0, hashlib.sha256(b"").hexdigest())
    assert opened["-shm"] is not None            # created by the read-only open (see below)
    chained = await start_server(db="pr.sqlite3", upstream=upstream.address, read_only=True,
                                 sync_mode=mode)
    async with await aclient(plain.address) as r, await aclient(chained.address) as rc:
        for c in (r, rc):
            assert await c.ping() == {"alive": True}
            assert await c.is_readonly() is True
        for _ in range(2):                       # nothing stored: the same answers again
            # §3 on the file alone.
            assert await r.getPR(*P, "new") == "4"
            assert await r.getPR(*P, "other-new", True) == "4"
            assert await r.getPR(*P, "l0") == "4"              # 0 < max 3
            assert await r.getPR(*P, "l1") == "3"
            assert await r.getPR(*P, "l1", True) == "1"
            assert await r.getPR(*P, "l4") == "4"              # 1.5 < 3
            assert await r.getPR(*UP_ONLY, "uq") == "0"
            # §7 with an upstream whose max for P is 7.
            assert await rc.getPR(*P, "l1", True) == "1"        # known, history: local
            assert await rc.getPR(*P, "l0") == "7"              # below Umax, known upstream
            assert await rc.getPR(*P, "l1") == "7.0"            # below Umax, unknown upstream
            assert await rc.getPR(*P, "u5") == "5"              # upstream's value, copied
            assert await rc.getPR(*P, "u5", True) == "5"
            assert await rc.getPR(*P, "fresh") == "7.0"         # child(Umax)
            assert await rc.getPR(*P, "fresh2", True) == "7.0"
            assert await rc.getPR(*LOCAL_ONLY, "x0") == "2"     # Umax null: local only
            assert await rc.getPR(*LOCAL_ONLY, "x9", True) == "2"
            assert await rc.getPR(*UP_ONLY, "uq") == "4"
            assert await rc.getPR(*UP_ONLY, "uq", True) == "4"
            assert await rc.getPR(*UP_ONLY, "new") == "4.0"
            for c in (r, rc):
                assert await c.importone(*P, "imp", "9") is None
                assert await c.importone(*P, "l0", "0") is None      # an existing row
                assert await c.importone(*P, "imp", 12) is None
                assert await c.importone(*UP_ONLY, "imp", "1.0") is None
                # Queries answer from the file only (never the upstream).
                assert await c.test_pr(*P, "l1") == "3"
                assert await c.test_pr(*P, "l1", True) == "1"
                for checksum in ("new", "l0x", "u5", "fresh", "imp"):
                    assert await c.test_pr(*P, checksum) is None
                assert await c.test_pr(*UP_ONLY, "uq") is None
                assert await c.test_package(*P) is True
                assert await c.test_package(*UP_ONLY) is False
                assert await c.max_package_pr(*P) == "3"
                assert await c.max_package_pr(*LOCAL_ONLY) == "1"
                assert await c.max_package_pr(*UP_ONLY) is None
                metainfo, rows = await c.export(None, None, None, True, True)
                assert metainfo["tbl_name"] == "PRMAIN" and as_rows(rows) == file_rows
                assert as_rows((await c.export(None, None, None, False, False))[1]) == \
                    {(*P, "l1", "3"), (*LOCAL_ONLY, "x1", "1")}
                assert as_rows((await c.export(*P, "l1", False, True))[1]) == \
                    {(*P, "l1", "1"), (*P, "l1", "3")}
    for server in (plain, chained):
        for bad in ("1'", "01", "", "+7", -1, "1.x"):        # invalid imports: refused
            async with await aclient(server.address) as c:
                with pytest.raises(InvokeError):
                    await c.importone(*P, "bad", bad)
    async with await aclient(upstream.address) as u:      # only ever queried
        assert as_rows((await u.export(None, None, None, False, True))[1]) == upstream_rows
    await plain.stop_serving()
    await chained.stop_serving()

    after = file_state(path)
    assert after["db"] == before["db"]                    # byte-for-byte (sha256, size)
    assert os.stat(path).st_mtime_ns == mtime
    # Observed (SQLite 3.40): a read-only open of a WAL file creates an empty -wal and
    # the 32 KiB -shm wal-index, and leaves both (a read-only connection may not
    # delete them).  An empty -wal holds no frame: nothing was written.
    assert after["-wal"] == (0, hashlib.sha256(b"").hexdigest())
    assert after["-shm"] is not None and after["-shm"][0] == 32768
    assert full_dump(path, tmp_path / "after") == (dump, file_rows)
