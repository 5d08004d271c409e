"""Users and tokens: what a token adds to what the network grants, the admin
requests, where a client's token comes from, and ``prserv user``."""

from __future__ import annotations

import json
import logging
import os
import re
import time

import pytest

import prserv
from prserv import tokens
from prserv.access import AccessRules
from prserv.asyncrpc import InvokeError
from prserv.client import PRAsyncClient
from prserv.errors import AuthenticationError, ConfigError
from prserv.runtime.credentials import credentials_for
from prserv.server import session

from conftest import ENGINES
from waiting import until
from wire import SETUP, RawConnection

V, A = "zlib-1.3-r0", "core2-64"


@pytest.fixture(params=ENGINES)
def engine_kind(request) -> str:
    return request.param


async def add_user(server, name, permissions, expires=None):
    record, token = tokens.make_user(name, permissions, time.time(), expires)
    await server.engine.put_user(record)
    return (name, token)


# --------------------------------------------------------------------------- the values alone

def test_tokens_are_random_stored_salted_and_expire():
    record, token = tokens.make_user("builder", ["write"], 1000.0, expires=2000.0)
    assert record.permissions == {"read", "write"} and len(token) == 43
    assert token not in record.token_hash and record.token_hash != tokens.hash_token(token)[0]   # salted
    assert tokens.token_matches(record, token, 1999.0)
    assert not tokens.token_matches(record, token, 2000.0)                   # expired
    assert not tokens.token_matches(record, token + "x", 1500.0)
    assert tokens.parse_permissions(["admin"]) == tokens.ALL
    assert tokens.make_user("b", ["read"], 0)[1] != tokens.make_user("b", ["read"], 0)[1]
    with pytest.raises(ValueError, match="unknown permission 'root'"):
        tokens.parse_permissions(["read,root"])
    with pytest.raises(ValueError, match="a user name is 1-64"):
        tokens.check_username("bad name")


# --------------------------------------------------------------------------- a real server

async def test_a_write_token_lets_a_client_write_where_its_network_may_not(start_server):
    server = await start_server(access=AccessRules(allow_write=["127.0.0.2"]))      # the client is 127.0.0.1
    writer = await add_user(server, "builder", ["write"])
    reader = await add_user(server, "reader", ["read"])
    async with await prserv.create_async_client(server.address) as anonymous:
        assert await anonymous.is_readonly() is True
        assert await anonymous.getPR(V, A, "anon") == "0"                    # answered, not stored
    client = PRAsyncClient(credentials=reader)
    await client.connect_address(server.address)
    async with client:
        assert await client.is_readonly() is True
        assert client.permissions == ["read"]
    client = PRAsyncClient(credentials=writer)
    await client.connect_address(server.address)
    async with client:
        assert await client.is_readonly() is False
        assert await client.getPR(V, A, "built") == "0"
        assert await client.getPR(V, A, "built-2") == "1"
        assert sorted(client.permissions) == ["read", "write"]
    async with await prserv.create_async_client(server.address) as anonymous:
        assert await anonymous.test_pr(V, A, "built-2") == "1"
        assert await anonymous.test_pr(V, A, "anon") is None


async def test_a_failed_auth_waits_then_refuses_and_the_connection_goes_on(start_server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="BitBake.PRserv")
    server = await start_server(access=AccessRules(allow_write=["127.0.0.2"]))
    name, token = await add_user(server, "builder", ["write"])
    conn = await RawConnection.open(server.address, SETUP)
    try:
        started = time.monotonic()
        answer = await conn.request({"auth": {"username": name, "token": _other(token)}})
        assert time.monotonic() - started >= session.AUTH_FAILURE_DELAY * 0.95
        assert answer == {"invoke-error": {"message": "auth: unknown user, wrong token or expired token"}}
        assert await conn.request({"is-readonly": {}}) == {"readonly": True}     # still anonymous, still open
        monkeypatch.setattr(session, "AUTH_FAILURE_DELAY", 0.01)
        for request in ({"username": "nobody", "token": token}, {"username": name}, {"token": token}, {}):
            assert await conn.request({"auth": request}) == answer               # nothing tells them apart
        assert await conn.request({"auth": {"username": name, "token": token}}) == {
            "username": "builder", "permissions": ["read", "write"]}
        assert await conn.request({"is-readonly": {}}) == {"readonly": False}
    finally:
        await conn.close()
    await _until_logged(caplog, "connection closed after 8 requests")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "authenticated as builder (read,write)" in logged
    assert re.search(r"\[Client 127\.0\.0\.1:\d+\] connection closed after 8 requests in [0-9.]+ s: "
                     r"closed by the client \(user builder\)", logged), logged
    assert '{"auth": "(not logged)"}' in logged
    assert token not in logged and _other(token) not in logged                  # never a token, right or wrong
    expired = await add_user(server, "old", ["write"], expires=time.time() + 0.05)
    client = PRAsyncClient(credentials=expired)
    await client.connect_address(server.address)
    await _until_past(time.time() + 0.06)
    with pytest.raises(AuthenticationError, match="refused the token of user old"):
        await client.ping()
    await client.close()


async def _until_logged(caplog, text: str) -> None:
    """Until a log record holds ``text`` (the server logs a close after the client's)."""
    await until(lambda: any(text in record.getMessage() for record in caplog.records),
                seen=lambda: [record.getMessage() for record in caplog.records])


def _other(token: str) -> str:
    """A token one character away from ``token``."""
    return token[:-1] + ("B" if token[-1] == "A" else "A")


async def _until_past(moment: float) -> None:
    import asyncio
    while time.time() < moment:
        await asyncio.sleep(moment - time.time())


async def test_a_token_can_be_required_for_the_mirror_feed_and_dump_db(start_server, tmp_path):
    source = await start_server(require_token=["mirror", "dump-db"])
    mirror_user = await add_user(source, "mirror", ["mirror"])
    admin = await add_user(source, "root", ["admin"])
    async with await prserv.create_async_client(source.address) as client:
        assert await client.getPR(V, A, "a") == "0"
    async with await prserv.create_async_client(source.address) as anonymous:
        with pytest.raises(InvokeError, match="mirror-pull needs a token with the mirror permission"):
            await anonymous.mirror_pull(None, 10, 0)
    client = PRAsyncClient(credentials=mirror_user)
    await client.connect_address(source.address)
    async with client:
        page = await client.mirror_pull(None, 10, 0)
        assert [row[1:] for row in page["rows"]] == [[V, A, "a", "0"]]
        with pytest.raises(InvokeError, match="dump-db needs a token with the admin permission"), \
                open(os.devnull, "w") as nowhere:
            await client.dump_db(nowhere)
    client = PRAsyncClient(credentials=admin)
    await client.connect_address(source.address)
    dump = tmp_path / "dump.sql"
    async with client:
        with open(dump, "w") as out:
            await client.dump_db(out)
    text = dump.read_text()
    assert "INSERT INTO \"PRMAIN\"" in text and "prserv_users" not in text and admin[1] not in text
    mirror = prserv.create_server("127.0.0.1:0", str(tmp_path / "mirror.sqlite3"), mirror=source.address,
                                  mirror_credentials=mirror_user)       # a mirror's copy is a SQLite file
    await mirror.start_serving()
    try:
        assert await _mirror_value(mirror) == "0"
    finally:
        await mirror.stop_serving()


async def _mirror_value(mirror, timeout: float = 10.0) -> str:
    """The mirror's answer for the source's row once its first copy is complete."""
    import asyncio
    deadline = time.monotonic() + timeout
    while True:
        status = mirror.mirror_status()
        if status["complete"]:
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)
    async with await prserv.create_async_client(mirror.address) as client:
        return await client.test_pr(V, A, "a")


async def test_admin_requests_manage_users_and_reset_stats(start_server):
    server = await start_server()
    admin_credentials = await add_user(server, "root", ["admin"])
    async with await prserv.create_async_client(server.address) as anonymous:
        with pytest.raises(InvokeError, match="reset-stats needs a token with the admin permission"):
            await anonymous.reset_stats()
    admin = PRAsyncClient(credentials=admin_credentials)
    await admin.connect_address(server.address)
    async with admin:
        made = await admin.new_user("ci", ["write"], expires=time.time() + 3600)
        assert made["username"] == "ci" and made["permissions"] == ["read", "write"] and made["token"]
        users = await admin.get_all_users()
        assert [u["username"] for u in users] == ["ci", "root"]
        assert all(set(u) == {"username", "permissions", "created", "expires"} for u in users)
        renewed = await admin.refresh_token("ci")
        assert renewed["token"] != made["token"] and renewed["expires"] is None
        before = await admin.reset_stats()
        assert before["requests"]["num"] >= 4
        after = await admin.get_stats()
        assert after["requests"]["num"] == 1 and after["commands"] == {"reset-stats": {"ok": 1, "error": 0}}
    old = PRAsyncClient(credentials=("ci", made["token"]))
    await old.connect_address(server.address)
    with pytest.raises(AuthenticationError):
        await old.ping()
    await old.close()
    new = PRAsyncClient(credentials=("ci", renewed["token"]))
    await new.connect_address(server.address)
    async with new:
        assert await new.getPR(V, A, "x") == "0"
        with pytest.raises(InvokeError, match="delete-user needs a token with the admin permission"):
            await new.delete_user("root")
    admin = PRAsyncClient(credentials=admin_credentials)
    await admin.connect_address(server.address)
    async with admin:
        assert await admin.delete_user("ci") == {"username": "ci", "deleted": True}
        assert await admin.delete_user("ci") == {"username": "ci", "deleted": False}


async def test_an_upstream_token_is_proved_on_every_upstream_connection(start_server):
    upstream = await start_server(db="up.sqlite3")
    good = await add_user(upstream, "chain", ["read"])
    local = await start_server(db="local.sqlite3", upstream=upstream.address, upstream_credentials=good)
    bad = await start_server(db="bad.sqlite3", upstream=upstream.address, upstream_timeout=3,
                             upstream_credentials=("chain", "not-the-token"))
    async with await prserv.create_async_client(local.address) as client:
        assert await client.getPR(V, A, "c") == "0"
        assert (await client.get_stats())["upstream"]["ok"] >= 1
    async with await prserv.create_async_client(bad.address) as client:
        with pytest.raises(InvokeError, match="refused the token of user chain"):
            await client.getPR(V, A, "c")


# --------------------------------------------------------------------------- where tokens come from

def test_credentials_come_from_the_setting_the_environment_or_netrc(tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine pr.example.com login builder password s3cret-token\n")
    os.chmod(netrc, 0o600)
    env = {"HOME": str(tmp_path)}
    assert credentials_for("pr.example.com:8585", environ=env) == ("builder", "s3cret-token")
    assert credentials_for("ws://pr.example.com:8586", environ=env) == ("builder", "s3cret-token")
    assert credentials_for("other.example.com:8585", environ=env) is None
    assert credentials_for("unix:///run/prserv.sock", environ=env) is None
    env["PRSERV_TOKEN"] = "ci:from-env"
    assert credentials_for("pr.example.com:8585", environ=env) == ("ci", "from-env")
    assert credentials_for("pr.example.com:8585", "admin:explicit", environ=env) == ("admin", "explicit")
    with pytest.raises(ConfigError) as info:
        credentials_for("pr.example.com:8585", "no-colon-secret", "flag --upstream-token", environ=env)
    assert "expected USER:TOKEN" in str(info.value) and "secret" not in str(info.value)


def test_a_token_setting_is_never_shown(tmp_path, cli):
    from prserv.runtime.settings import load_config

    config = load_config({"upstream": "up:1", "upstream_token": "chain:t0ps3cret"}, {}, None, str(tmp_path))
    assert config.upstream_token == "chain:t0ps3cret"
    assert "t0ps3cret" not in config.show() and "chain:***" in config.show()
    assert "t0ps3cret" not in config.as_json()
    with pytest.raises(ConfigError) as info:
        load_config({"mirror_token": "t0ps3cret"}, {}, None, str(tmp_path))
    assert "t0ps3cret" not in str(info.value) and "expected USER:TOKEN" in str(info.value)


# --------------------------------------------------------------------------- prserv user

def test_prserv_user_on_the_database_then_through_the_server(tmp_path, process_servers, cli, monkeypatch):
    db = str(tmp_path / "pr.sqlite3")
    code, out, err = cli("user", "add", "root", "--permissions", "admin", "-f", db, "--json")
    assert code == 0 and err == ""
    root = json.loads(out)
    assert root["username"] == "root" and root["permissions"] == ["admin", "mirror", "read", "write"]
    code, out, _ = cli("user", "list", "-f", db)
    assert code == 0 and out.split()[:2] == ["root", "read,write,mirror,admin"]
    server = process_servers("127.0.0.1:0", db)
    monkeypatch.setenv("PRSERV_TOKEN", "root:" + root["token"])
    code, out, _ = cli("--server", server.address, "user", "add", "ci", "--permissions", "write",
                       "--expires", "30d")
    assert code == 0 and out.startswith("ci:") and "read,write" in out
    ci_token = out.split()[0].split(":", 1)[1]
    code, out, _ = cli("--server", server.address, "user", "list", "--json")
    assert [u["username"] for u in json.loads(out)["users"]] == ["ci", "root"]
    assert cli("--server", server.address, "user", "new-token", "ci")[0] == 0
    monkeypatch.setenv("PRSERV_TOKEN", "ci:" + ci_token)                # the old token is gone
    code, _, err = cli("--server", server.address, "ping")
    assert code == 4 and "refused the token of user ci" in err
    monkeypatch.setenv("PRSERV_TOKEN", "root:" + root["token"])
    assert cli("--server", server.address, "user", "remove", "ci")[:2] == (0, "removed ci\n")
    assert cli("--server", server.address, "user", "remove", "ci")[0] == 1
    monkeypatch.delenv("PRSERV_TOKEN")
    code, _, err = cli("--server", server.address, "user", "list")
    assert code == 4 and "get-all-users needs a token with the admin permission" in err
    assert cli("user", "remove", "root", "-f", db)[0] == 0
    assert cli("user", "list", "-f", db)[1] == "no users\n"
