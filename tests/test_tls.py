"""``wss://``: a server presenting a certificate the test makes, checked by clients,
by a server's upstream pool and by a mirror, and refused without the CA."""

from __future__ import annotations

import time

import pytest

import prserv
from prserv.asyncrpc import tls
from prserv.client import PRAsyncClient
from prserv.errors import ConfigError
from prserv.runtime.settings import load_config

from certificates import issue

pytest.importorskip("trustme")

V, A = "zlib-1.3-r0", "core2-64"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """(CA bundle, server certificate chain, key): a CA of the test's own."""
    return issue(tmp_path_factory.mktemp("tls"))


async def tls_server(start_server, certificates, **options):
    _, chain, key = certificates
    return await start_server("wss://127.0.0.1:0", tls_certificate=chain, tls_key=key, **options)


async def test_a_wss_server_is_reached_by_a_client_that_trusts_its_ca(start_server, certificates):
    ca_file = certificates[0]
    server = await tls_server(start_server, certificates)
    assert server.address.startswith("wss://127.0.0.1:")
    client = PRAsyncClient(tls_context=tls.client_context(ca_file))
    await client.connect_address(server.address)
    async with client:
        assert await client.getPR(V, A, "a") == "0"
        assert await client.getPR(V, A, "a") == "0"
    untrusting = PRAsyncClient(timeout=5)                          # the system's CAs: not ours
    await untrusting.connect_address(server.address)
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await untrusting.getPR(V, A, "b")
    await untrusting.close()


async def test_an_upstream_and_a_mirror_over_wss(start_server, certificates, tmp_path):
    ca_file = certificates[0]
    source = await tls_server(start_server, certificates)
    async with _client(source.address, ca_file) as client:
        assert await client.getPR(V, A, "a") == "0"
    local = await start_server(db="local.sqlite3", upstream=source.address, tls_ca=ca_file)
    async with await prserv.create_async_client(local.address) as client:
        assert await client.getPR(V, A, "a") == "0"          # the upstream's value, asked over TLS
        assert await client.getPR(V, A, "new") == "0.0"      # a local change of the upstream's package
    mirror = prserv.create_server("127.0.0.1:0", str(tmp_path / "mirror.sqlite3"), mirror=source.address,
                                  tls_ca=ca_file)
    await mirror.start_serving()
    try:
        deadline = time.monotonic() + 10
        while not mirror.mirror_status()["complete"]:
            assert time.monotonic() < deadline, mirror.mirror_status()
            await _tick()
        async with await prserv.create_async_client(mirror.address) as client:
            assert await client.test_pr(V, A, "a") == "0"
    finally:
        await mirror.stop_serving()
    blind = await start_server(db="blind.sqlite3", upstream=source.address, upstream_timeout=3)
    async with await prserv.create_async_client(blind.address) as client:
        with pytest.raises(Exception, match="upstream .* unavailable"):
            await client.getPR(V, A, "other")


def _client(address, ca_file):
    client = PRAsyncClient(tls_context=tls.client_context(ca_file))

    class Opened:
        async def __aenter__(self):
            await client.connect_address(address)
            return client

        async def __aexit__(self, *exc):
            await client.close()

    return Opened()


async def _tick():
    import asyncio
    await asyncio.sleep(0.02)


def test_the_prserv_command_trusts_prserv_tls_ca(process_servers, certificates, tmp_path, cli, monkeypatch):
    ca_file, chain, key = certificates
    server = process_servers("wss://127.0.0.1:0", str(tmp_path / "pr.sqlite3"), tls_certificate=chain,
                             tls_key=key)
    code, _, err = cli("--server", server.address, "--timeout", "5", "get-pr", V, A, "x")
    assert code == 3 and "certificate verify failed" in err.lower()
    monkeypatch.setenv("PRSERV_TLS_CA", ca_file)
    assert cli("--server", server.address, "get-pr", V, A, "x") == (0, "0\n", "")


def test_tls_settings_are_checked_before_serving(tmp_path):
    with pytest.raises(ConfigError, match=r"bind wss://0.0.0.0:8586 \(from flag --bind/--host/--port\) needs "
                                          r"tls_certificate"):
        load_config({"bind": ["wss://0.0.0.0:8586"]}, {}, None, str(tmp_path))
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="cannot use TLS certificate %s" % missing):
        prserv.create_server("wss://127.0.0.1:0", str(tmp_path / "pr.sqlite3"), tls_certificate=missing)
    with pytest.raises(ConfigError, match="cannot use CA file"):
        prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"), tls_ca=str(tmp_path / "none.pem"))


def test_a_server_without_upstream_or_mirror_makes_no_client_tls_context(tmp_path, certificates):
    """Loading the system's CAs costs every start ~25 ms (bitbake starts a server per
    build): only a server that connects out, or is given a CA bundle, makes one."""
    db = str(tmp_path / "pr.sqlite3")
    assert prserv.create_server("127.0.0.1:0", db).client_tls is None
    assert prserv.create_server("127.0.0.1:0", db, upstream="127.0.0.1:1").client_tls is not None
    ca_file, _, _ = certificates
    assert prserv.create_server("127.0.0.1:0", db, tls_ca=ca_file).client_tls is not None
