"""The ``prserv`` command-line client, every subcommand against real servers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import pytest

import prserv
from prserv.cli import output as exits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(tmp_path, process_servers):
    return process_servers("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))


def fill(address: str, rows) -> None:
    with prserv.create_client(address) as client:
        for version, pkgarch, checksum, value in rows:
            assert client.importone(version, pkgarch, checksum, value) == value


def test_get_pr_text_json_history_and_prserv_host(server, cli, monkeypatch):
    assert cli("--server", server.address, "get-pr", "1.0-r0", "x86", "aaa") == (0, "0\n", "")
    assert cli("get-pr", "1.0-r0", "x86", "bbb", "--server", server.address, "--json") == \
        (0, '{"value": "1"}\n', "")
    monkeypatch.setenv("PRSERV_HOST", server.address)
    assert cli("get-pr", "1.0-r0", "x86", "aaa") == (0, "2\n", "")          # no history: back on top
    assert cli("get-pr", "2.0-r0", "x86", "aaa", "--history") == (0, "0\n", "")


def test_lookups_and_not_found_exit_code(server, cli):
    fill(server.address, [("1.0-r0", "x86", "aaa", "3"), ("1.0-r0", "x86", "bbb", "1.20")])
    s = ("--server", server.address)
    assert cli(*s, "test-pr", "1.0-r0", "x86", "bbb") == (0, "1.20\n", "")
    code, out, err = cli(*s, "test-pr", "1.0-r0", "x86", "zzz")
    assert (code, out) == (exits.EXIT_NOT_FOUND, "") and "no value for 1.0-r0 x86 zzz" in err
    assert cli(*s, "--json", "test-pr", "1.0-r0", "x86", "zzz")[:2] == (1, '{"value": null}\n')
    assert cli(*s, "test-package", "1.0-r0", "x86") == (0, "true\n", "")
    assert cli(*s, "test-package", "1.0-r0", "arm")[:2] == (1, "false\n")
    assert cli(*s, "max-package-pr", "1.0-r0", "x86") == (0, "3\n", "")        # 3 > 1.20 numerically
    assert cli(*s, "max-package-pr", "9.9", "x86")[:2] == (1, "")
    assert cli(*s, "ping") == (0, "alive\n", "")
    assert cli(*s, "--json", "ping") == (0, '{"alive": true}\n', "")
    assert cli(*s, "is-readonly") == (0, "false\n", "")


def test_import_one_and_export(server, cli):
    s = ("--server", server.address)
    assert cli(*s, "import-one", "1.0-r0", "x86", "aaa", "1.0.3") == (0, "1.0.3\n", "")
    assert cli(*s, "import-one", "1.0-r0", "x86", "bbb", "2") == (0, "2\n", "")
    assert cli(*s, "import-one", "1.0-r0", "arm", "aaa", "5") == (0, "5\n", "")
    code, out, err = cli(*s, "import-one", "1.0-r0", "x86", "ccc", "1.x")
    assert (code, out) == (exits.EXIT_USAGE, "")
    assert "argument value: '1.x' is not a revision (dotted non-negative integers)" in err
    assert cli(*s, "export") == (0, "1.0-r0\tarm\taaa\t5\n1.0-r0\tx86\tbbb\t2\n", "")
    assert cli(*s, "export", "--history", "--pkgarch", "x86") == \
        (0, "1.0-r0\tx86\taaa\t1.0.3\n1.0-r0\tx86\tbbb\t2\n", "")
    code, out, _ = cli(*s, "export", "--colinfo", "--checksum", "aaa", "--json")
    document = json.loads(out)
    assert document["datainfo"] == [{"version": "1.0-r0", "pkgarch": "arm", "checksum": "aaa", "value": "5"}]
    assert [c["name"] for c in document["metainfo"]["col_info"]] == ["version", "pkgarch", "checksum", "value"]
    assert cli(*s, "export", "--colinfo", "--version", "none")[1] == \
        "# table PRMAIN, core_ver %s, columns: version, pkgarch, checksum, value\n" % prserv.__version__


def test_read_only_server_refuses_imports(tmp_path, process_servers, cli):
    fill(process_servers("127.0.0.1:0", str(tmp_path / "pr.sqlite3")).address, [("v", "a", "c", "1")])
    reader = process_servers("127.0.0.1:0", str(tmp_path / "pr.sqlite3"), read_only=True)
    s = ("--server", reader.address)
    assert cli(*s, "is-readonly") == (0, "true\n", "")
    code, _, err = cli(*s, "import-one", "v", "a", "d", "2")
    assert code == exits.EXIT_REFUSED and "read-only" in err
    (tmp_path / "in.txt").write_text('PRAUTO$v$a$d = "2"\n')
    code, _, err = cli(*s, "import-file", str(tmp_path / "in.txt"))
    assert code == exits.EXIT_REFUSED and "read-only: nothing imported" in err
    assert cli(*s, "test-pr", "v", "a", "d")[0] == exits.EXIT_NOT_FOUND


def test_unreachable_and_bad_address_exit_codes(tmp_path, cli):
    code, out, err = cli("--server", "unix://%s" % (tmp_path / "none.sock"), "ping")
    assert (code, out) == (exits.EXIT_UNREACHABLE, "")
    assert "cannot reach the PR server at unix://%s" % (tmp_path / "none.sock") in err
    code, _, err = cli("--server", "no-port-here", "ping")
    assert code == exits.EXIT_USAGE and "expected HOST:PORT" in err


ROWS = [("1.0-r0", "core2-64", "c%02d" % i, str(i)) for i in range(12)] + [
    ("1.0-r0", "core2-64", "local", "11.0.3"),          # dotted values survive
    ("1.0-r0", "armv8a", "c01", "1.20"),
    ("1.0-r0", "armv8a", "c02", "1.3"),
    ("AUTOINC-zlib-1.3", "core2-64", "f00d", "0"),
]


def test_export_file_then_import_file_into_a_fresh_server(tmp_path, process_servers, cli):
    source = process_servers("127.0.0.1:0", str(tmp_path / "a.sqlite3"))
    fill(source.address, ROWS)
    out = tmp_path / "export.txt"
    code, text, _ = cli("--server", source.address, "export-file", str(out), "--history", "--colinfo")
    assert (code, text) == (0, "exported %d rows to %s\n" % (len(ROWS), out))
    lines = out.read_text().splitlines()
    assert 'PRAUTO$1.0-r0$core2-64$local = "11.0.3"' in lines
    assert 'PRAUTO_1.0-r0_core2-64 = "11.0.3"' in lines          # numeric max per (version, pkgarch)
    assert 'PRAUTO_1.0-r0_armv8a = "1.20"' in lines

    target = process_servers("127.0.0.1:0", str(tmp_path / "b.sqlite3"))
    code, text, err = cli("--server", target.address, "import-file", str(out))
    assert code == 0, err
    assert text.startswith("imported %d of %d rows from %s in " % (len(ROWS), len(ROWS), out))
    with prserv.create_client(source.address) as a, prserv.create_client(target.address) as b:
        assert b.export(None, None, None, False, True) == a.export(None, None, None, False, True)
        assert b.export(None, None, None, True) == a.export(None, None, None, True)
        assert b.getPR("1.0-r0", "core2-64", "new") == a.getPR("1.0-r0", "core2-64", "new") == "11.0.4"


def test_import_file_reports_skipped_lines(tmp_path, server, cli):
    text = "\n".join([
        "# comment",
        'PRAUTO$v$a$c1 = "1"',
        'PRAUTO$v$a$c2 = "one"',
        "garbage line",
        'PRAUTO_v_a = "1"',
        'PRAUTO$v$a = "2"',
        'PRAUTO$v$a$c3 = "2.1"',
    ]) + "\n"
    (tmp_path / "in.txt").write_text(text)
    code, out, _ = cli("--server", server.address, "import-file", str(tmp_path / "in.txt"))
    assert code == exits.EXIT_INCOMPLETE
    assert out.splitlines()[1:] == [
        "skipped 3 lines:",
        "  line 3: value 'one' is not a revision (dotted non-negative integers)",
        '  line 4: not a NAME = "VALUE" assignment: garbage line',
        "  line 6: expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got PRAUTO$v$a",
    ]
    assert out.startswith("imported 2 of 2 rows")
    code, out, _ = cli("--server", server.address, "--json", "export", "--history")
    assert [(r["checksum"], r["value"]) for r in json.loads(out)["datainfo"]] == [("c1", "1"), ("c3", "2.1")]


def test_export_file_history_writes_each_checksum_highest_value_last(tmp_path, server, cli):
    # OE's importer reads the file as bitbake configuration: the last assignment wins
    s = ("--server", server.address)
    for i in range(12):
        assert cli(*s, "get-pr", "1.0-r0", "x86", "c%d" % i) == (0, "%d\n" % i, "")
    assert cli(*s, "get-pr", "1.0-r0", "x86", "c9") == (0, "12\n", "")     # no history: 9 -> 12
    assert cli(*s, "get-pr", "1.0-r0", "x86", "c8") == (0, "13\n", "")     # 8 -> 13
    code, out, _ = cli(*s, "--json", "export", "--history", "--checksum", "c9")
    assert [r["value"] for r in json.loads(out)["datainfo"]] == ["12", "9"]  # wire order: as text

    path = tmp_path / "export.txt"
    code, out, err = cli(*s, "export-file", str(path), "--history")
    assert (code, out, err) == (0, "exported 14 rows to %s\n" % path, "")
    lines = path.read_text().splitlines()
    assert [line for line in lines if "$c9 " in line or "$c8 " in line] == [
        'PRAUTO$1.0-r0$x86$c8 = "8"', 'PRAUTO$1.0-r0$x86$c8 = "13"',
        'PRAUTO$1.0-r0$x86$c9 = "9"', 'PRAUTO$1.0-r0$x86$c9 = "12"']
    last = {}
    for line in lines:
        name, value = line.split(" = ")
        last[name] = value.strip('"')
    expected = {"PRAUTO$1.0-r0$x86$c%d" % i: str(i) for i in range(12)}
    expected.update({"PRAUTO$1.0-r0$x86$c9": "12", "PRAUTO$1.0-r0$x86$c8": "13", "PRAUTO_1.0-r0_x86": "13"})
    assert last == expected


def test_import_file_collapses_duplicated_variables(tmp_path, server, cli):
    (tmp_path / "in.txt").write_text("\n".join([
        'PRAUTO$v$a$c1 = "1"',
        'PRAUTO$v$a$c2 = "5"',
        'PRAUTO$v$a$c1 = "12"',
        'PRAUTO$v$a$c2 = "3"',            # lower, but the last: bitbake keeps this one
        'PRAUTO$v$a$c3 = "2"',
        'PRAUTO$v$a$c1 = "12"',           # the same value again
    ]) + "\n")
    code, out, err = cli("--server", server.address, "import-file", str(tmp_path / "in.txt"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("imported 3 of 3 rows from %s in " % (tmp_path / "in.txt"))
    assert lines[1:] == ["collapsed 3 duplicate assignment(s) (the last one of each counts, as in bitbake)"]
    code, out, _ = cli("--server", server.address, "--json", "export", "--history", "--version", "v")
    assert [(r["checksum"], r["value"]) for r in json.loads(out)["datainfo"]] == \
        [("c1", "12"), ("c2", "3"), ("c3", "2")]

    (tmp_path / "in2.txt").write_text('PRAUTO$w$a$c1 = "4"\nPRAUTO$w$a$c1 = "1.0"\nnonsense\n')
    code, out, err = cli("--server", server.address, "--json", "import-file", str(tmp_path / "in2.txt"))
    assert code == exits.EXIT_INCOMPLETE, err
    assert json.loads(out) == {"imported": 1, "rows": 1, "duplicates": 1,
                               "skipped": [{"line": 3, "reason": 'not a NAME = "VALUE" assignment: nonsense'}]}
    code, out, _ = cli("--server", server.address, "--json", "export", "--history", "--version", "w")
    assert [(r["checksum"], r["value"]) for r in json.loads(out)["datainfo"]] == [("c1", "1.0")]


def test_import_file_is_pipelined(tmp_path, server, cli):
    count = 5000
    (tmp_path / "big.txt").write_text("".join('PRAUTO$big$a$c%05d = "%d"\n' % (i, i) for i in range(count)))
    code, out, err = cli("--server", server.address, "--json", "import-file", str(tmp_path / "big.txt"),
                         "--window", "64")
    assert code == 0, err
    assert json.loads(out) == {"imported": count, "rows": count, "skipped": [], "duplicates": 0}
    assert cli("--server", server.address, "max-package-pr", "big", "a")[1] == "%d\n" % (count - 1)


def test_config_show_names_sources(tmp_path, cli, monkeypatch):
    (tmp_path / "prserv.toml").write_text('read_only = true\nupstream = "up:8585"\n')
    monkeypatch.setenv("PRSERV_UPSTREAM", "env:8585")
    code, out, _ = cli("config", "--show", "--config", str(tmp_path / "prserv.toml"), "--port", "9000")
    assert code == 0
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if not line.startswith("#")}
    assert lines["bind"].split("#")[1].strip() == "flag --bind/--host/--port"
    assert '["0.0.0.0:9000"]' in lines["bind"]
    assert lines["read_only"].split("#")[1].strip() == "file %s" % (tmp_path / "prserv.toml")
    assert '"env:8585"' in lines["upstream"] and "environment PRSERV_UPSTREAM" in lines["upstream"]
    code, out, _ = cli("--json", "config", "--show")
    assert json.loads(out)["upstream"] == {"value": "env:8585", "source": "environment PRSERV_UPSTREAM"}
    monkeypatch.setenv("PRSERV_READ_ONLY", "perhaps")
    code, _, err = cli("config", "--show")
    assert code == exits.EXIT_USAGE
    assert "invalid read_only 'perhaps' (from environment PRSERV_READ_ONLY)" in err


def test_module_entry_point_exit_codes(tmp_path, server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    env["PRSERV_HOST"] = server.address
    env["PYTHONPATH"] = os.path.join(ROOT, "lib")

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "prserv", *argv], capture_output=True, text=True,
                              env=env, timeout=60)

    assert run("get-pr", "v", "a", "c").stdout == "0\n"
    assert run("test-pr", "v", "a", "other").returncode == exits.EXIT_NOT_FOUND
    assert run("--server", "127.0.0.1:1", "ping").returncode == exits.EXIT_UNREACHABLE
    assert run("get-pr", "v", "a").returncode == exits.EXIT_USAGE


def test_module_runs_under_python_OO():
    # -OO strips docstrings: the help text (exit codes included) must not depend on them
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    env["PYTHONPATH"] = os.path.join(ROOT, "lib")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["COLUMNS"] = "100"

    def run(*argv):
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=60)

    optimized = run("-OO", "-m", "prserv", "--help")
    assert optimized.returncode == 0, optimized.stderr
    assert "  0 success, 1 not found, 2 bad arguments or settings, 3 server unreachable, 4 refused\n" \
        in optimized.stdout
    assert "141\n  standard output closed by its reader (as in | head; nothing printed).\n" in optimized.stdout
    normal = run("-m", "prserv", "--help")
    assert normal.returncode == 0, normal.stderr
    assert normal.stdout == optimized.stdout
    version = run("-OO", "-m", "prserv", "--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, "prserv %s\n" % prserv.__version__, "")


def _command_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    env["PYTHONPATH"] = os.path.join(ROOT, "lib")
    return env


def _closed_reader(argv, lines_read):
    """Run ``argv`` with stdout a pipe whose reader takes ``lines_read`` lines, then
    closes it (``| head -1``); (what was read, exit status, stderr)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_command_env())
    try:
        read = [process.stdout.readline() for _ in range(lines_read)]
        process.stdout.close()
        err = process.stderr.read()
        return read, process.wait(60), err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_closed_stdout_ends_a_command_quietly_with_141(tmp_path, process_servers):
    """`prserv export --history | head -1` said "cannot reach the PR server at ...:
    [Errno 32] Broken pipe" and exited 3: the broken pipe was its own stdout."""
    import sqlite3

    db = tmp_path / "pr.sqlite3"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                 "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                     [("1.0-r0", "core2-64", "c%05d" % i, str(i)) for i in range(20000)])
    conn.commit()
    conn.close()
    server = process_servers("127.0.0.1:0", str(db))
    # 20,000 rows (~600 kB) do not fit in a pipe: the writer meets the closed pipe.
    prserv_cmd = [sys.executable, "-m", "prserv", "--server", server.address]
    read, code, err = _closed_reader(prserv_cmd + ["export", "--history"], 1)
    assert (read, code, err) == ([b"1.0-r0\tcore2-64\tc00000\t0\n"], exits.EXIT_CLOSED_OUTPUT, b"")
    assert exits.EXIT_CLOSED_OUTPUT == 141
    # Closed before anything is written: the first write (or the last flush) meets it.
    for argv in (prserv_cmd + ["export-file", "-", "--history"], prserv_cmd + ["--help"],
                 [sys.executable, os.path.join(ROOT, "bin", "bitbake-prserv"), "--help"]):
        assert _closed_reader(argv, 0) == ([], 141, b""), argv


# --------------------------------------------------------------------------- help texts and exit statuses

def _parsers():
    """(command line, parser) of ``prserv``, each subcommand (and ``user``'s actions),
    and ``bitbake-prserv``."""
    import argparse

    from prserv.cli import bitbake_prserv, tool

    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    yield from walk(subparser, "%s %s" % (name, sub))

    yield from walk(tool.build_parser(), "prserv")
    yield "bitbake-prserv", bitbake_prserv.build_parser()


def test_help_texts_are_plain_text_with_each_default_once(monkeypatch):
    """Help comes from settings.py, the cli modules' strings and docstring-like
    constants: RST markup (``this``) showed as it is written."""
    monkeypatch.setenv("COLUMNS", "100")
    helps = dict((name, parser.format_help()) for name, parser in _parsers())
    assert len(helps) == 28, sorted(helps)
    assert [name for name, text in helps.items() if "``" in text] == []
    # one "(default: ...)" per option; options are the lines starting with "  -"
    for name, text in helps.items():
        options = re.split(r"\n(?=  -)", text)
        assert [option for option in options if option.count("(default") > 1] == [], name


def _listed_statuses(help_text):
    epilog = " ".join(help_text.split("exit status: ", 1)[1].split())
    return [int(code) for code in re.findall(r"(?:^|, )(\d+) ", epilog)]


def _codes_used(function, seen):
    """The exit codes ``function``'s body names (``EXIT_*``, or an int it returns) and
    whether it talks to a server, following the ``prserv.cli`` functions it calls."""
    import ast
    import inspect
    import textwrap

    from prserv.client import PRAsyncClient
    from prserv.cli.requests import connect_client
    from prserv.runtime.mirroring import copy_once

    if function in seen:
        return set(), False
    seen.add(function)
    definition = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    namespace = function.__globals__
    codes, talks = set(), False
    for node in (node for statement in definition.body for node in ast.walk(statement)):  # not decorators
        target = None
        if isinstance(node, ast.Name):
            target = namespace.get(node.id)
            if node.id.startswith("EXIT_") and type(target) is int:
                codes.add(target)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = namespace.get(node.value.id)
            target = getattr(owner, node.attr, None) if inspect.ismodule(owner) else None
            if node.attr.startswith("EXIT_") and type(target) is int:
                codes.add(target)
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) \
                and type(node.value.value) is int:
            codes.add(node.value.value)
        if target in (connect_client, PRAsyncClient, copy_once):
            talks = True
        if inspect.isfunction(target) and target.__module__.startswith("prserv.cli."):
            more, more_talks = _codes_used(target, seen)
            codes |= more
            talks = talks or more_talks
    return codes, talks


def test_each_commands_help_lists_the_exit_statuses_its_code_can_return(monkeypatch):
    """A command's exit statuses are declared once (output.exit_statuses on its
    handler); its help lists exactly those, and they are exactly what its handler and
    the functions it calls name, plus what every command can return (2 from argparse
    and settings, 141 for a closed stdout) and, for one that talks to a server, what
    tool.main returns for a server's errors (3, 4).  mirror-status's help listed 1
    and 4, and it returns 3 too."""
    from prserv.cli import bitbake_prserv, tool

    monkeypatch.setenv("COLUMNS", "100")
    checked = {}
    for name, parser in _parsers():
        handler = parser.get_default("handler")
        if name == "bitbake-prserv":
            declared = bitbake_prserv.EXIT_STATUSES
            used, talks = _codes_used(bitbake_prserv._run, set())
        elif handler is None:
            continue                                        # prserv itself, and the user group
        else:
            declared = handler.exit_statuses
            used, talks = _codes_used(handler, set())
        assert (talks, declared.server) == (talks, talks), name
        expected = used | set(exits.EVERY_COMMAND) | (set(exits.SERVER_ERRORS) if talks else set())
        assert set(declared.codes) == expected, name
        assert _listed_statuses(parser.format_help()) == sorted(expected), name
        checked[name] = sorted(expected)
    assert len(checked) == 26
    assert checked["prserv forget-clients"] == [0, 2, 141]
    assert checked["prserv mirror-status"] == [0, 1, 2, 3, 4, 141]
    assert checked["prserv backup"] == [0, 2, 4, 6, 141]
    assert checked["bitbake-prserv"] == [0, 1, 2, 141]
    # what tool.main adds to any handler's: only every command's and a server's codes
    assert _codes_used(tool._run, set())[0] <= set(exits.EVERY_COMMAND) | set(exits.SERVER_ERRORS)
    listed = _listed_statuses(tool.build_parser().format_help().replace("\n\n  0 success", "\nexit status: 0 success"))
    assert listed == sorted(exits.EXIT_MEANINGS)


SERVER_COMMANDS = {
    "get-pr": ["v", "a", "c"], "test-pr": ["v", "a", "c"], "test-package": ["v", "a"],
    "max-package-pr": ["v", "a"], "import-one": ["v", "a", "c", "1"], "export": [], "ping": [],
    "is-readonly": [], "stats": [], "export-file": ["OUT"], "import-file": ["IN"], "dump": ["OUT"],
    "mirror": ["127.0.0.1:0", "DB"], "mirror-status": [], "user add": ["u", "--permissions", "read"],
    "user new-token": ["u"], "user remove": ["u"], "user list": [],
}


def test_every_command_that_talks_to_a_server_exits_3_when_it_is_unreachable(tmp_path, cli):
    """What a command declares as talking to a server (its help lists 3) is what it does."""
    talking = [name[len("prserv "):] for name, parser in _parsers()
               if parser.get_default("handler") is not None and parser.get_default("handler").exit_statuses.server]
    assert sorted(talking) == sorted(SERVER_COMMANDS)
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "gone.sqlite3"))
    asyncio.run(server.start_serving())
    closed = server.address
    asyncio.run(server.stop_serving())                  # nothing listens there now
    (tmp_path / "IN").write_text('PRAUTO$v$a$c = "1"\n')
    for name, argv in SERVER_COMMANDS.items():
        argv = [str(tmp_path / word) if word in ("IN", "OUT", "DB") else word for word in argv]
        if name == "mirror":
            argv[0] = closed
        code, out, err = cli("--server", closed, "--timeout", "5", *name.split(), *argv)
        assert (code, out) == (exits.EXIT_UNREACHABLE, ""), (name, err)
        assert ("cannot reach the PR server at %s: " % closed) in err, (name, err)


# --------------------------------------------------------------------------- forget-clients

def clients_recorded(path):
    """checksum -> (time, address, user) of every record."""
    import sqlite3

    conn = sqlite3.connect(str(path))
    try:
        return {checksum: (given, address, user) for checksum, given, address, user in conn.execute(
            "SELECT t.checksum, g.given, g.address, g.user FROM PRMAIN AS t "
            "JOIN prserv_PRMAIN_given AS g ON g.row = t.rowid")}
    finally:
        conn.close()


def test_forget_clients_erases_old_addresses_and_users_while_the_server_runs(tmp_path, process_servers, cli):
    import time

    from prserv.timestamps import rfc3339

    db = tmp_path / "pr.sqlite3"
    server = process_servers("127.0.0.1:0", str(db))
    with prserv.create_client(server.address) as client:
        client.getPR("v", "a", "old")
        client.importone("v", "a", "imported", "7")
        time.sleep(0.01)
        cut = int(time.time() * 1e6)
        time.sleep(0.01)
        client.getPR("v", "a", "new")
    before = clients_recorded(db)
    assert before["old"][1] == before["new"][1] == "127.0.0.1" and before["imported"][1:] == (None, None)
    code, out, err = cli("forget-clients", "--before", rfc3339(cut), str(db))
    assert (code, err) == (0, "")
    assert out == "%s: erased the address and user of 1 record of values given before %s\n" % (db, rfc3339(cut))
    after = clients_recorded(db)
    assert after == dict(before, old=(before["old"][0], None, None))        # the time stays
    assert cli("forget-clients", "--before", rfc3339(cut), str(db))[1].count(" 0 records ") == 1
    with prserv.create_client(server.address) as client:                   # the server goes on
        assert client.getPR("v", "a", "later") == "9"
    code, out, err = cli("--json", "forget-clients", "--before", "2999-01-01", str(db))
    assert (code, err) == (0, "")
    assert json.loads(out) == {"database": str(db), "before": "2999-01-01T00:00:00.000000Z", "changed": 2}
    final = clients_recorded(db)
    assert {record[1:] for record in final.values()} == {(None, None)}
    assert {checksum: final[checksum][0] for checksum in after} == {checksum: after[checksum][0] for checksum in after}


def test_forget_clients_refuses_bad_dates_and_missing_files_and_leaves_a_mirror_a_mirror(
        tmp_path, process_servers, cli):
    import sqlite3

    db, mirror = tmp_path / "pr.sqlite3", tmp_path / "mirror.sqlite3"
    for date in ("yesterday", "2026-02-30", "2026-02-03T10:00:00"):
        code, out, err = cli("forget-clients", "--before", date, str(db))
        assert (code, out) == (exits.EXIT_USAGE, "") and err.startswith("prserv: --before: "), err
    assert "expected a date (2026-12-06, midnight UTC) or an RFC 3339 time" in cli(
        "forget-clients", "--before", "yesterday", str(db))[2]
    code, out, err = cli("forget-clients", "--before", "2026-01-01", str(db))
    assert (code, out, err) == (exits.EXIT_USAGE, "", "prserv: no database file %s\n" % db)
    server = process_servers("127.0.0.1:0", str(db))
    with prserv.create_client(server.address) as client:
        client.getPR("v", "a", "c")
    assert cli("mirror", server.address, str(mirror))[0] == 0
    code, out, err = cli("--json", "forget-clients", "--before", "2999-01-01", str(mirror))
    assert (code, json.loads(out)["changed"]) == (0, 0)
    conn = sqlite3.connect(str(mirror))
    try:
        assert conn.execute("SELECT value FROM prserv_meta WHERE name = 'PRMAIN.role'").fetchone() == ("mirror",)
        assert conn.execute("SELECT count(*) FROM prserv_PRMAIN_given WHERE address IS NULL").fetchone() == (1,)
    finally:
        conn.close()


@pytest.mark.slow
def test_forget_clients_on_a_postgresql_url_masks_its_password(pg_cluster, cli):
    url = pg_cluster.new_database()
    code, out, err = cli("--json", "forget-clients", "--before", "2026-01-01", url)
    summary = json.loads(out)
    assert (code, err) == (0, "") and isinstance(summary["changed"], int)
    assert summary["database"] == prserv.storage.postgresql.url.masked(url)
