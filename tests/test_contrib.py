"""Everything outside the package that uses it follows it when modules move:
the benchmarks' imports (also those inside code they run in a subprocess), the
container's health check and the systemd units' command lines."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prserv.cli import bitbake_prserv, tool

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib"
IMPORT = re.compile(r"^\s*(?:from\s+(prserv[\w.]*)\s+import\s+([\w, ]+)|import\s+(prserv[\w.]*))", re.M)


def prserv_imports():
    """(file, module, names) of every prserv import written in contrib, in code or strings."""
    for path in sorted(CONTRIB.rglob("*")):
        if path.is_file() and path.suffix in (".py", "") and path.name != "Dockerfile":
            for match in IMPORT.finditer(path.read_text(encoding="utf-8", errors="replace")):
                module = match.group(1) or match.group(3)
                names = [n.strip() for n in (match.group(2) or "").split(",") if n.strip()]
                yield path.relative_to(ROOT).as_posix(), module, names


def test_contrib_imports_of_prserv_resolve():
    found = list(prserv_imports())
    assert any(module == "prserv.runtime.priority" for _, module, _ in found)   # backupbench's spin
    for where, module, names in found:
        imported = importlib.import_module(module)
        for name in names:
            assert hasattr(imported, name), "%s: %s has no %s" % (where, module, name)


BENCH = CONTRIB / "bench"
BENCH_SCRIPTS = sorted(p.name for p in BENCH.iterdir()
                       if p.suffix in (".py", ".sh") and not p.name.startswith("_"))
BENCH_HELPERS = sorted(p.name for p in BENCH.glob("_*.py"))     # what the scripts share


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_bench_scripts_start(script):
    """Every script in contrib/bench, found there (a new one too), answers --help."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"), PYTHON=sys.executable)
    runner = ["sh"] if script.endswith(".sh") else [sys.executable]
    result = subprocess.run(runner + [str(BENCH / script), "--help"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_web_bench_smoke_run(tmp_path):
    """web.py end to end on a tiny database: generated, opened once, its routes measured
    (those not served reported as 404, not a crash) and one pair of hit rounds."""
    pytest.importorskip("h11", reason="the HTTP listener needs the web extra")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    result = subprocess.run([sys.executable, str(BENCH / "web.py"), "--db", str(tmp_path / "web.sqlite3"),
                             "--rows", "3000", "--requests", "5", "--walk-pages", "2", "--rounds", "1",
                             "--round-seconds", "0.2", "--hit-clients", "4",
                             "--routes", "status,api-history,api-packages,page-recent",
                             "--url", "nowhere=/no/such/page"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["rows"] == 3000 and report["first_open_s"] > 0
    routes = {route["route"]: route for route in report["routes"]}
    assert all(routes[name]["served"] and not routes[name]["errors"]
               for name in ("status", "api-history", "api-packages"))
    assert routes["nowhere"] == dict(routes["nowhere"], served=False, status=404)
    assert "404, not served" in result.stdout
    assert [r["browsing"] for r in report["mix"]["rounds"]] == ["none", "status", "pages"]
    assert report["mix"]["ratio"] > 0 and report["mix"]["control_ratio"] > 0


def test_bench_readme_names_every_script_and_helper():
    text = (BENCH / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^- `([\w.]+)`: ", text, re.M))
    assert set(BENCH_SCRIPTS) - {"targets.sh"} | set(BENCH_HELPERS) <= listed
    assert "`targets.sh`" in text


def top_level_names(path: Path) -> set:
    """The functions, classes and constants a module defines at its top level."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def test_bench_scripts_define_nothing_a_helper_module_holds():
    """One home for each: a script imports what _servers, _load, _measure, _client and
    _data define, never writes its own (a percentile, a /proc reader, a launcher)."""
    shared = {name: helper for helper in BENCH_HELPERS for name in top_level_names(BENCH / helper)}
    again = sorted("%s defines %s again (%s has it)" % (script, name, shared[name])
                   for script in BENCH_SCRIPTS if script.endswith(".py")
                   for name in top_level_names(BENCH / script) if name in shared)
    assert again == []


def test_container_health_check_is_a_valid_prserv_command():
    text = (CONTRIB / "Dockerfile").read_text(encoding="utf-8")
    command = re.search(r'HEALTHCHECK.*?CMD (\[.*?\])', text, re.S).group(1)
    argv = eval(command)                                   # a JSON/Python list literal
    assert argv[0] == "prserv"
    args = tool.build_parser().parse_args(argv[1:])
    assert args.command == "ping" and args.server == "127.0.0.1:8585"


@pytest.mark.parametrize("unit", sorted(p.name for p in CONTRIB.glob("*.service")))
def test_systemd_units_run_valid_bitbake_prserv_command_lines(unit):
    text = (CONTRIB / unit).read_text(encoding="utf-8")
    (line,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
    argv = shlex.split(line.replace("%i", "8586"))
    assert argv[0].endswith("/bitbake-prserv")
    args = bitbake_prserv.build_parser().parse_args(argv[1:])
    assert args.foreground


def test_example_config_names_every_setting_and_loads(tmp_path):
    from prserv.runtime.settings import SETTINGS, load_config

    text = (CONTRIB / "prserv.toml").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert re.search(r"^#? ?%s = " % setting.name, text, re.M), setting.name
        assert setting.env in text, setting.env
    config = load_config({}, {}, str(CONTRIB / "prserv.toml"), str(tmp_path))
    assert config.source("cache_size") == "file %s" % (CONTRIB / "prserv.toml")
