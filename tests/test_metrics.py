"""Prometheus metrics: real HTTP GETs of ``/metrics`` from in-process servers and a
server process, and the flag without its library."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import pytest

import prserv
from prserv.asyncrpc.stats import DURATION_BUCKETS
from prserv.version import __version__

from processes import run_without_extras, start_process

pytest.importorskip("prometheus_client")

V, A = "zlib-1.3-r0", "core2-64"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return answer.read().decode("utf-8")


async def metrics_of(server) -> dict:
    """``{"name{labels}": value}`` of one scrape (``asyncio.to_thread``: the GET blocks)."""
    text = await asyncio.get_running_loop().run_in_executor(None, scrape, server.exporter.url)
    return parse(text)


def parse(text: str) -> dict:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_count_requests_allocations_connections_and_commits(start_server):
    server = await start_server(metrics="127.0.0.1:0")
    async with await prserv.create_async_client(server.address) as client:
        for checksum in ("a", "b", "a"):
            await client.getPR(V, A, checksum)
        await client.test_pr(V, A, "a")
        m = await metrics_of(server)
    assert m['prserv_requests_total{command="get-pr",outcome="ok"}'] == 3
    assert m['prserv_requests_total{command="get-pr",outcome="error"}'] == 0
    assert m['prserv_requests_total{command="test-pr",outcome="ok"}'] == 1
    assert m['prserv_request_duration_seconds_count{command="get-pr"}'] == 3
    buckets = [m['prserv_request_duration_seconds_bucket{command="get-pr",le="%s"}' % bound]
               for bound in [repr(b) for b in DURATION_BUCKETS] + ["+Inf"]]
    assert buckets == sorted(buckets) and buckets[-1] == 3          # cumulative, every bound present
    assert m["prserv_allocations_total"] == 3                # a, b, a bumped past b
    assert m["prserv_connections_active"] == 1
    assert m["prserv_commit_duration_seconds_count"] >= 1   # the values were committed before their answers
    assert m["prserv_wal_bytes"] > 0
    assert m['prserv_build_info{package_version="%s",version="%s"}' % (
        _package_version(), __version__)] == 1
    assert not any(name.startswith(("prserv_upstream", "prserv_mirror")) for name in m)
    async with await prserv.create_async_client(server.address) as client:
        with pytest.raises(Exception):
            await client.invoke({"get-pr": {"version": V}})                 # an invoke-error
    m = await metrics_of(server)
    assert m['prserv_requests_total{command="get-pr",outcome="error"}'] == 1
    assert m["prserv_connections_active"] == 0


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("prserv")
    except PackageNotFoundError:
        return "unknown"


async def test_upstream_and_mirror_metrics(start_server, tmp_path):
    upstream = await start_server(db="up.sqlite3")
    local = await start_server(db="local.sqlite3", upstream=upstream.address, metrics="127.0.0.1:0")
    async with await prserv.create_async_client(local.address) as client:
        assert await client.getPR(V, A, "c") == "0"
    m = await metrics_of(local)
    assert m['prserv_upstream_requests_total{outcome="ok"}'] >= 1
    assert m['prserv_upstream_requests_total{outcome="error"}'] == 0
    mirror = prserv.create_server("127.0.0.1:0", str(tmp_path / "mirror.sqlite3"), mirror=local.address,
                                  metrics="127.0.0.1:0")
    await mirror.start_serving()
    try:
        deadline = time.monotonic() + 10
        while not mirror.mirror_status()["complete"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        m = await metrics_of(mirror)
        assert m["prserv_mirror_lag_rows"] == 0 and m["prserv_mirror_diverged"] == 0
        assert 0 <= m["prserv_mirror_lag_seconds"] < 10
    finally:
        await mirror.stop_serving()


def test_a_server_process_serves_metrics_before_it_reports_ready(tmp_path):
    process, address, lines = start_process(tmp_path, "--metrics", "127.0.0.1:0")
    try:
        url = re.search(r"Prometheus metrics on (http://\S+)", "".join(lines)).group(1)
        first = parse(scrape(url))                  # at once: bound before the "serving" line
        assert first["prserv_connections_active"] == 0 and first["prserv_allocations_total"] == 0
    finally:
        process.terminate()
        process.wait(15)


def test_the_metrics_flag_without_its_library_exits_2_naming_the_extra(tmp_path):
    result = run_without_extras(tmp_path, "-F", "-f", str(tmp_path / "pr.sqlite3"), "--metrics", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "invalid metrics '127.0.0.1:0' (from flag --metrics): metrics need prometheus_client: "
        "pip install 'prserv[metrics]'")


def test_a_metrics_address_that_is_not_host_port_is_refused_before_anything_is_opened(tmp_path):
    """Checked as the server is made (it was once parsed only after the listeners
    were open, and the error left them open)."""
    from prserv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"metrics 'unix:///tmp/m.sock': expected HOST:PORT"):
        prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"), metrics="unix:///tmp/m.sock")
    assert not (tmp_path / "pr.sqlite3").exists()
