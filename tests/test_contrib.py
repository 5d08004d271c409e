"""Everything outside the package that uses it follows it when modules move:
the benchmarks' imports (also those inside code they run in a subprocess), the
container's health check and the systemd units' command lines."""

from __future__ import annotations

import importlib
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


@pytest.mark.parametrize("script", sorted(p.name for p in (CONTRIB / "bench").glob("*.py")
                                           if not p.name.startswith("_")))     # _x.py: shared helpers
def test_bench_scripts_start(script):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    result = subprocess.run([sys.executable, str(CONTRIB / "bench" / script), "--help"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


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
