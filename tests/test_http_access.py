"""The HTTP listener's access (``--http``): HTTPS with the server's certificate, who
sees what (``allow_write``, tokens by HTTP Basic, ``/metrics`` to writers only),
``X-Forwarded-For`` and PROXY headers from trusted proxies, the answer a refused
client gets, and HTTP requests in the server's figures -- real servers on 127.0.0.1
port 0, real sockets, a real TLS client."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from typing import Dict, List, Optional, Tuple

import pytest

from test_http import (CLOSE, STATUS, assert_json_answer, error, exchange, get, host_port, parse_answers,
                       request, run_server, status_document)
from test_tls import certificates  # noqa: F401  (a fixture)

pytest.importorskip("h11")


def https_get(address: str, ca_file: Optional[str], target: str = STATUS,
              headers: Optional[Dict[str, str]] = None) -> Tuple[int, List[Tuple[str, str]], bytes]:
    """One GET with the standard library's HTTPS client (blocking: run in a thread),
    checking the server's certificate against ``ca_file`` (None: the system's CAs)."""
    host, port = address[len("https://"):].rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


# --------------------------------------------------------------------------- HTTPS

async def https_server(start_server, certificates, **options):
    _, chain, key = certificates
    return await start_server(http="https://127.0.0.1:0", tls_certificate=chain, tls_key=key, **options)


async def test_https_serves_with_the_servers_certificate(start_server, certificates):
    ca_file = certificates[0]
    server = await https_server(start_server, certificates)
    address = server.http_addresses[0]
    assert address.startswith("https://127.0.0.1:")
    status, headers, body = await in_thread(https_get, address, ca_file)
    document = json.dumps(status_document("read-write")).encode("utf-8")
    assert (status, body) == (200, document)
    assert headers == [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                       ("Content-Length", str(len(document)))]
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await in_thread(https_get, address, None)             # the system's CAs: not ours


async def test_plain_http_to_an_https_listener_is_not_served(start_server, certificates):
    server = await https_server(start_server, certificates)
    host, port = server.http_addresses[0][len("https://"):].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request("GET", STATUS, close=True))
        assert not (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1")
    finally:
        writer.close()
    assert not server.sessions


def test_https_without_a_certificate_exits_2(tmp_path):
    result = run_server(tmp_path, "--http", "https://127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "http https://127.0.0.1:0 (from flag --http) needs tls_certificate (and tls_key, unless the key is "
        "in the certificate file)")
    assert not (tmp_path / "pr.sqlite3").exists()
