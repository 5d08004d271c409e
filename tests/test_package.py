"""The package as bitbake and OpenEmbedded see it: imports, names, bin/bitbake-prserv."""

from __future__ import annotations

import os
import subprocess
import sys

import prserv
import prserv.serv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ISOLATED_IMPORT = r"""
import builtins, sys
sys.path[:0] = [sys.argv[1]]
real_import = builtins.__import__
BLOCKED = ("websockets", "daemon", "bb", "lockfile")
def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] in BLOCKED:
        raise ImportError("blocked: " + name)
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = guarded
import prserv, prserv.serv, prserv.client, prserv.db, prserv.server.allocator, prserv.cli.bitbake_prserv
import prserv.runtime.settings, prserv.runtime.daemon, prserv.cli.tool, prserv.oefile, prserv.storage.sqlite.database
import prserv.asyncrpc, prserv.asyncrpc.lifecycle, prserv.asyncrpc.client, prserv.runtime.reload
outside = sorted(name for name, module in list(sys.modules.items())
                 if "-packages" in (getattr(module, "__file__", None) or ""))
print(outside)
"""


def test_imports_need_nothing_outside_the_standard_library():
    result = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED_IMPORT, os.path.join(ROOT, "lib")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bitbake_api_names():
    for name in ("__version__", "logger", "create_server", "create_client", "create_async_client",
                 "increase_revision", "revision_greater", "revision_smaller", "_revision_greater_or_equal"):
        assert hasattr(prserv, name), name
    assert prserv.logger.name == "BitBake.PRserv"
    for name in ("PRServer", "PRServiceConfigError", "connect", "ping", "is_local_special"):
        assert hasattr(prserv.serv, name), name
    assert prserv.serv.is_local_special("localhost", 0) and prserv.serv.is_local_special("127.0.0.1", 0)
    assert not prserv.serv.is_local_special("localhost", 8585)
    assert not prserv.serv.is_local_special("10.0.0.1", 0)


def test_connect_and_ping_as_openembedded_does(tmp_path, process_servers):
    server = process_servers("127.0.0.1:0", str(tmp_path / "oe.sqlite3"))
    host, port = server.address.rsplit(":", 1)
    assert prserv.serv.ping(host, int(port)) == {"alive": True}
    conn = prserv.serv.connect(host, int(port))
    try:
        assert conn.getPR("AUTOINC-zlib-1.3", "cortexa53", "0123abcd") == "0"
        assert conn.importone("zlib-1.3.1-r0", "cortexa53", "abc", 3) == 3
        metainfo, datainfo = conn.export(None, None, None, True)
        assert metainfo["tbl_name"] == "PRMAIN" and len(datainfo) == 2
    finally:
        conn.close()


def test_bin_script_help_and_version_check(tmp_path):
    script = os.path.join(ROOT, "bin", "bitbake-prserv")
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=60)
    assert result.returncode == 0
    for flag in ("--file", "--log", "--loglevel", "--start", "--stop", "--host", "--port",
                 "--read-only", "--upstream"):
        assert flag in result.stdout
    assert "Version=%s" % prserv.__version__ in result.stdout
