"""``get-stats``: every answered request counted in hashserv's shape, and the
server's own figures; ``prserv stats`` shows them."""

from __future__ import annotations

import json
import math

import pytest

import prserv
from prserv.asyncrpc.stats import DURATION_BUCKETS, RequestStats
from prserv.server.metrics import checked_figures

from conftest import ENGINES
from wire import SETUP, RawConnection

V, A = "zlib-1.3-r0", "core2-64"


def test_mean_and_stdev_are_exact_and_buckets_hold_every_request():
    stats = RequestStats()
    times = [0.00005, 0.0001, 0.0003, 0.002, 0.002, 12.0]
    for n, seconds in enumerate(times):
        stats.record("get-pr" if n % 2 else "test-pr", seconds, ok=n != 3)
    req = stats.requests()
    mean = sum(times) / len(times)
    assert req["num"] == 6 and req["max_time"] == 12.0
    assert req["total_time"] == pytest.approx(sum(times))
    assert req["average"] == pytest.approx(mean)
    assert req["stdev"] == pytest.approx(math.sqrt(sum((t - mean) ** 2 for t in times) / 5))
    assert stats.by_command() == {"get-pr": {"ok": 2, "error": 1}, "test-pr": {"ok": 3, "error": 0}}
    get_pr = stats.commands["get-pr"].buckets
    assert sum(get_pr) == 3 and get_pr[DURATION_BUCKETS.index(0.0001)] == 1      # 100 µs: its own bucket
    assert get_pr[-1] == 1                                                         # 12 s: +Inf
    stats.reset()
    assert stats.requests() == {"num": 0, "total_time": 0.0, "max_time": 0.0, "average": 0.0, "stdev": 0.0}


async def test_get_stats_counts_every_answered_request_by_command_and_outcome(start_server):
    server = await start_server()
    first = await RawConnection.open(server.address, SETUP)
    for checksum in ("a", "b", "a"):
        await first.request({"get-pr": {"version": V, "pkgarch": A, "checksum": checksum}})
    await first.request({"test-pr": {"version": V, "pkgarch": A, "checksum": "zzz"}})
    refused = await first.request({"get-pr": {"version": V, "pkgarch": A}})        # an invoke-error
    assert "invoke-error" in refused
    await first.expect_closed()
    await first.close()
    async with await prserv.create_async_client(server.address) as client:
        stats = await client.get_stats()
        again = await client.get_stats()
    assert stats["requests"]["num"] == 5
    assert stats["commands"] == {"get-pr": {"ok": 3, "error": 1}, "test-pr": {"ok": 1, "error": 0}}
    # a, b, then a again: no history, so a is bumped past b (0, 1, 2): three values stored
    assert (stats["connections"], stats["allocations"], stats["upstream"], stats["mirror"]) == (1, 3, None, None)
    assert 0 < stats["requests"]["max_time"] <= stats["requests"]["total_time"]
    assert stats["requests"]["average"] == pytest.approx(stats["requests"]["total_time"] / 5)
    assert again["requests"]["num"] == 6 and again["commands"]["get-stats"] == {"ok": 1, "error": 0}


async def test_upstream_requests_are_counted_by_outcome(start_server):
    upstream = await start_server(db="up.sqlite3")
    local = await start_server(db="local.sqlite3", upstream=upstream.address, upstream_timeout=2)
    async with await prserv.create_async_client(local.address) as client:
        assert await client.getPR(V, A, "c1") == "0"
        ok = (await client.get_stats())["upstream"]
        assert ok["address"] == upstream.address and ok["ok"] >= 1 and ok["error"] == 0 and ok["down"] is False
        await upstream.stop_serving()
        with pytest.raises(Exception):
            await client.getPR("other-1.0-r0", A, "c2")          # unknown locally: the error is the answer
        failed = (await client.get_stats())["upstream"]
    assert failed["ok"] == ok["ok"] and failed["error"] >= 1 and failed["down"] is True


async def test_get_stats_with_figures_carries_what_metrics_show(start_server):
    server = await start_server()
    async with await prserv.create_async_client(server.address) as client:
        for checksum in ("a", "b", "a"):
            await client.getPR(V, A, checksum)
        plain = await client.get_stats()
        answer = await client.get_stats(figures=True)
    assert "figures" not in plain
    figures = checked_figures(answer["figures"])
    get_pr = figures["commands"]["get-pr"]
    assert (get_pr["ok"], get_pr["error"], sum(get_pr["buckets"])) == (3, 0, 3)
    assert len(get_pr["buckets"]) == len(DURATION_BUCKETS) + 1 and 0 < get_pr["sum"] < 3
    assert figures["commands"]["get-stats"]["ok"] == 1
    assert (figures["connections"], figures["allocations"], figures["upstream"], figures["mirror"]) == (1, 3, None, None)
    assert sum(figures["commits"]["buckets"]) == server.engine.commit_durations.count >= 3
    assert isinstance(figures["wal_bytes"], int)
    assert json.loads(json.dumps(figures)) == figures


@pytest.mark.parametrize("figures", [None, [], {"commands": {}}, {"commands": {"get-pr": {"ok": 1}}},
                                     {"commands": {}, "connections": True, "allocations": 0}])
def test_figures_from_elsewhere_are_checked(figures):
    with pytest.raises(ValueError, match="malformed figures"):
        checked_figures(figures)


def test_prserv_stats_text_and_json(tmp_path, process_servers, cli):
    server = process_servers("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    assert cli("--server", server.address, "get-pr", V, A, "x")[0] == 0
    code, out, err = cli("--server", server.address, "stats")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("requests: 1, ")
    assert lines[1].split() == ["get-pr", "1", "ok,", "0", "error"]
    assert lines[2:] == ["connections open: 1", "values allocated: 1"]
    code, out, _ = cli("--server", server.address, "stats", "--json")
    document = json.loads(out)
    assert code == 0 and document["requests"]["num"] == 2 and document["allocations"] == 1
    assert document["commands"]["get-stats"] == {"ok": 1, "error": 0}


@pytest.mark.parametrize("engine_kind", ENGINES)
async def test_each_value_stored_counts_one_commit_on_either_engine(start_server, engine_kind):
    """What ``prserv_commit_duration_seconds`` counts: one commit per stored value when
    the values are asked for one after the other (SQLite's COMMIT; PostgreSQL's
    one-statement write)."""
    server = await start_server()
    durations = server.engine.commit_durations
    before, total_before = durations.count, durations.total
    async with await prserv.create_async_client(server.address) as client:
        for checksum in ("a", "b", "c"):
            await client.getPR("zlib-1.3-r0", "core2-64", checksum)
        assert await client.getPR("zlib-1.3-r0", "core2-64", "a") == "3"        # a bump: stored too
    assert durations.count - before == 4
    assert durations.total > total_before and sum(durations.buckets) == durations.count
