"""Server settings: flags > environment > file > defaults (prserv.config)."""

from __future__ import annotations

import json
import os
import re

import pytest

from prserv.runtime.settings import SETTINGS, Config, environment_host, load_config
from prserv.errors import ConfigError

try:
    import tomllib
except ImportError:  # Python < 3.11: prserv depends on tomli there
    import tomli as tomllib

NAMES = ["database", "bind", "read_only", "allow", "allow_write", "allow_write_unix", "record_clients",
         "trusted_proxies",
         "require_token",
         "tls_certificate", "tls_key", "tls_ca", "upstream",
         "upstream_timeout", "upstream_token", "mirror", "mirror_token", "mirror_timeout",
         "mirror_audit_interval", "db_pool_size", "db_connect_timeout", "db_lock_timeout", "db_outage_wait", "sync_mode",
         "cache_size", "event_loop", "metrics", "http", "http_process", "log_file",
         "log_level", "pidfile", "max_connections", "max_connections_per_address", "idle_timeout",
         "handshake_timeout",
         "max_message_size", "max_handshake_line", "shutdown_timeout"]
BASE_NAMES = [name for name in NAMES if not name.startswith(("mirror", "db_", "allow", "require_token", "tls_",
                                                               "trusted_", "metrics", "event_loop", "http", "record_"))
              and name != "upstream_token"]
"""The settings a server with an upstream can have (a mirror has none)."""


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def load(tmp_path, flags=None, environ=None, config_file=None):
    """load_config with an explicit, empty-by-default environment and cwd=tmp_path."""
    return load_config(flags or {}, {} if environ is None else environ, config_file, str(tmp_path))


def config_error(tmp_path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- defaults

def test_defaults(tmp_path):
    config = load(tmp_path)
    assert config.database == os.path.join(str(tmp_path), "prserv.sqlite3")
    assert config.bind == ["0.0.0.0:8585"]
    assert config.read_only is False
    assert config.upstream is None
    assert config.upstream_timeout == 10.0
    assert isinstance(config.upstream_timeout, float)
    assert config.log_file == os.path.join(str(tmp_path), "prserv.log")
    assert config.log_level == "INFO"
    assert config.pidfile is None
    assert (config.max_connections, config.idle_timeout, config.handshake_timeout) == (10000, 3600.0, 30.0)
    assert (config.max_message_size, config.max_handshake_line) == (16 * 2**20, 4096)
    assert config.shutdown_timeout == 10.0
    assert (config.mirror, config.mirror_timeout, config.mirror_audit_interval) == (None, 60.0, 3600.0)
    assert config.config_file is None
    assert list(config.values) == NAMES
    for name in NAMES:
        assert config.source(name) == "default", name
        assert config.is_default(name), name


def test_defaults_with_no_arguments_at_all(tmp_path, monkeypatch):
    # environ=None means os.environ and cwd=None means os.getcwd(): pin both.
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv("PRSERV_CONFIG", raising=False)
    monkeypatch.setenv("PRSERV_LOGLEVEL", "debug")
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.database == os.path.join(os.getcwd(), "prserv.sqlite3")
    assert config.log_level == "DEBUG"
    assert config.source("log_level") == "environment PRSERV_LOGLEVEL"
    assert config.source("database") == "default"


def test_unknown_attribute(tmp_path):
    config = load(tmp_path)
    with pytest.raises(AttributeError, match="^no_such$"):
        config.no_such


def test_flags_with_none_are_not_given(tmp_path):
    config = load(tmp_path, flags={"database": None, "read_only": None},
                  environ={"PRSERV_DATABASE": "env.db"})
    assert config.database == os.path.join(str(tmp_path), "env.db")
    assert config.source("database") == "environment PRSERV_DATABASE"
    assert config.read_only is False
    assert config.source("read_only") == "default"


def test_unknown_flag_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError) as info:
        load(tmp_path, flags={"database": "x", "colour": "red", "bogus": 1})
    assert not isinstance(info.value, ConfigError)
    assert str(info.value) == "not settings: bogus, colour"


# --------------------------------------------------------------------------- precedence

def test_precedence_flags_environment_file_default(tmp_path):
    conf = write(tmp_path / "prserv.toml", "\n".join([
        'database = "file.db"',
        'bind = "file:1"',
        'read_only = true',
        'upstream_timeout = 3',
        'log_level = "warning"',
    ]) + "\n")
    config = load(tmp_path,
                  flags={"database": "flag.db", "bind": ["flag:1"]},
                  environ={"PRSERV_DATABASE": "env.db", "PRSERV_BIND": "env:1",
                           "PRSERV_READ_ONLY": "no", "PRSERV_UPSTREAM": "up:9"},
                  config_file=conf)
    base = str(tmp_path)
    assert config.database == os.path.join(base, "flag.db")
    assert config.source("database") == "flag -f/--file"
    assert config.bind == ["flag:1"]
    assert config.source("bind") == "flag --bind/--host/--port"
    assert config.read_only is False
    assert config.source("read_only") == "environment PRSERV_READ_ONLY"
    assert config.upstream == "up:9"
    assert config.source("upstream") == "environment PRSERV_UPSTREAM"
    assert config.upstream_timeout == 3.0
    assert config.source("upstream_timeout") == "file %s" % conf
    assert config.log_level == "WARNING"
    assert config.source("log_level") == "file %s" % conf
    assert config.log_file == os.path.join(base, "prserv.log")
    assert config.source("log_file") == "default"
    assert config.pidfile is None
    assert config.source("pidfile") == "default"
    assert config.config_file == conf


def test_environment_beats_file(tmp_path):
    conf = write(tmp_path / "c.toml", 'database = "file.db"\nlog_level = "ERROR"\n')
    config = load(tmp_path, environ={"PRSERV_DATABASE": "env.db"}, config_file=conf)
    assert config.database == os.path.join(str(tmp_path), "env.db")
    assert config.source("database") == "environment PRSERV_DATABASE"
    assert config.log_level == "ERROR"
    assert config.source("log_level") == "file %s" % conf


def test_every_setting_from_environment(tmp_path):
    base = str(tmp_path)
    config = load(tmp_path, environ={
        "PRSERV_DATABASE": "d.db", "PRSERV_BIND": "h:1", "PRSERV_READ_ONLY": "1",
        "PRSERV_UPSTREAM": "u:2", "PRSERV_UPSTREAM_TIMEOUT": "2.5", "PRSERV_LOG": "l.log",
        "PRSERV_LOGLEVEL": "critical", "PRSERV_PIDFILE": "p.pid", "PRSERV_SYNC_MODE": "Periodic:2",
        "PRSERV_MAX_CONNECTIONS": "50", "PRSERV_IDLE_TIMEOUT": "60", "PRSERV_HANDSHAKE_TIMEOUT": "5",
        "PRSERV_MAX_MESSAGE_SIZE": "1M", "PRSERV_MAX_HANDSHAKE_LINE": "2048",
        "PRSERV_SHUTDOWN_TIMEOUT": "3", "PRSERV_CACHE_SIZE": "8M",
        "PRSERV_MAX_CONNECTIONS_PER_ADDRESS": "9"})
    assert [config.values[name].value for name in BASE_NAMES] == [
        os.path.join(base, "d.db"), ["h:1"], True, "u:2", 2.5, "periodic:2", 8 * 2**20, os.path.join(base, "l.log"),
        "CRITICAL", os.path.join(base, "p.pid"), 50, 9, 60.0, 5.0, 2**20, 2048, 3.0]
    assert [config.source(name) for name in BASE_NAMES] == [
        "environment PRSERV_DATABASE", "environment PRSERV_BIND", "environment PRSERV_READ_ONLY",
        "environment PRSERV_UPSTREAM", "environment PRSERV_UPSTREAM_TIMEOUT", "environment PRSERV_SYNC_MODE",
        "environment PRSERV_CACHE_SIZE", "environment PRSERV_LOG", "environment PRSERV_LOGLEVEL", "environment PRSERV_PIDFILE",
        "environment PRSERV_MAX_CONNECTIONS", "environment PRSERV_MAX_CONNECTIONS_PER_ADDRESS",
        "environment PRSERV_IDLE_TIMEOUT",
        "environment PRSERV_HANDSHAKE_TIMEOUT", "environment PRSERV_MAX_MESSAGE_SIZE",
        "environment PRSERV_MAX_HANDSHAKE_LINE", "environment PRSERV_SHUTDOWN_TIMEOUT"]


def test_every_setting_from_flags(tmp_path):
    base = str(tmp_path)
    config = load(tmp_path, flags={
        "database": "d.db", "bind": "h:1 h:2", "read_only": True, "upstream": "u:2",
        "upstream_timeout": "7", "log_file": "-", "log_level": "Debug", "pidfile": "p.pid",
        "sync_mode": "on-shutdown", "max_connections": "0", "idle_timeout": "0", "handshake_timeout": "0",
        "max_message_size": "4K", "max_handshake_line": "1K", "shutdown_timeout": "0.5",
        "cache_size": "1G", "max_connections_per_address": "0"})
    assert [config.values[name].value for name in BASE_NAMES] == [
        os.path.join(base, "d.db"), ["h:1", "h:2"], True, "u:2", 7.0, "on-shutdown", 2**30, "-", "DEBUG",
        os.path.join(base, "p.pid"), 0, 0, 0.0, 0.0, 4096, 1024, 0.5]
    assert [config.source(name) for name in BASE_NAMES] == [
        "flag -f/--file", "flag --bind/--host/--port", "flag -r/--read-only", "flag -u/--upstream",
        "flag --upstream-timeout", "flag --sync-mode", "flag --cache-size", "flag -l/--log", "flag --loglevel", "flag --pidfile",
        "flag --max-connections", "flag --max-connections-per-address", "flag --idle-timeout",
        "flag --handshake-timeout",
        "flag --max-message-size", "flag --max-handshake-line", "flag --shutdown-timeout"]


def test_every_setting_from_file(tmp_path):
    sub = tmp_path / "etc"
    sub.mkdir()
    conf = write(sub / "prserv.toml", "\n".join([
        'database = "d.db"', 'bind = ["h:1", "unix://s.sock"]', "read_only = true",
        'upstream = "u:2"', "upstream_timeout = 0.5", 'log_file = "-"', 'log_level = "error"',
        'pidfile = "run/p.pid"', 'sync_mode = "periodic:0.5"', "max_connections = 3000",
        "idle_timeout = 7200", "handshake_timeout = 10.5", 'max_message_size = "32M"',
        "max_handshake_line = 8192", "shutdown_timeout = 30", "cache_size = 1048576",
        "max_connections_per_address = 16"]) + "\n")
    config = load(tmp_path, config_file=conf)
    base = str(sub)
    assert [config.values[name].value for name in BASE_NAMES] == [
        os.path.join(base, "d.db"), ["h:1", "unix://" + os.path.join(base, "s.sock")], True, "u:2",
        0.5, "periodic:0.5", 2**20, "-", "ERROR", os.path.join(base, "run", "p.pid"), 3000, 16, 7200.0, 10.5,
        32 * 2**20, 8192, 30.0]
    assert all(config.source(name) == "file " + conf for name in BASE_NAMES)


# --------------------------------------------------------------------------- relative paths

def test_relative_paths_from_file_resolve_against_file_directory(tmp_path):
    etc = tmp_path / "etc" / "prserv"
    etc.mkdir(parents=True)
    conf = write(etc / "prserv.toml", 'database = "../../var/pr.db"\nlog_file = "logs/p.log"\n'
                 'pidfile = "/abs/p.pid"\nbind = "unix://sock"\n')
    work = tmp_path / "work"
    work.mkdir()
    config = load_config({}, {}, conf, str(work))
    assert config.database == os.path.join(str(tmp_path), "var", "pr.db")
    assert config.log_file == os.path.join(str(etc), "logs", "p.log")
    assert config.pidfile == "/abs/p.pid"
    assert config.bind == ["unix://" + os.path.join(str(etc), "sock")]


def test_relative_paths_from_flags_and_environment_resolve_against_cwd(tmp_path):
    conf = write(tmp_path / "c.toml", "")
    cwd = str(tmp_path / "here")
    config = load_config({"database": "sub/./x.db", "bind": "unix://a/../s.sock"},
                         {"PRSERV_LOG": "../l.log", "PRSERV_PIDFILE": "p.pid"}, conf, cwd)
    assert config.database == cwd + "/sub/x.db"
    assert config.bind == ["unix://" + cwd + "/s.sock"]
    assert config.log_file == str(tmp_path) + "/l.log"
    assert config.pidfile == cwd + "/p.pid"


def test_absolute_unix_bind_is_kept_and_normalised(tmp_path):
    config = load(tmp_path, environ={"PRSERV_BIND": "unix:///run//prserv/./s.sock"})
    assert config.bind == ["unix:///run/prserv/s.sock"]


def test_stderr_log_file_stays_dash(tmp_path):
    conf = write(tmp_path / "c.toml", 'log_file = "-"\n')
    assert load(tmp_path, config_file=conf).log_file == "-"
    assert load(tmp_path, environ={"PRSERV_LOG": "-"}).log_file == "-"
    assert load(tmp_path, flags={"log_file": "-"}).log_file == "-"
    # only exactly "-" means stderr
    assert load(tmp_path, flags={"log_file": "-x"}).log_file == os.path.join(str(tmp_path), "-x")


def test_values_are_stripped(tmp_path):
    config = load(tmp_path, environ={"PRSERV_DATABASE": "  pr.db\n", "PRSERV_LOGLEVEL": " info ",
                                     "PRSERV_UPSTREAM": " up:1 "})
    assert config.database == os.path.join(str(tmp_path), "pr.db")
    assert config.log_level == "INFO"
    assert config.upstream == "up:1"


# --------------------------------------------------------------------------- access rules

def test_allow_and_allow_write_from_each_source(tmp_path):
    conf = write(tmp_path / "p.toml", 'allow = ["10.0.0.0/8", "2001:db8::/32"]\nallow_write = "192.0.2.7"\n'
                 "allow_write_unix = false\n")
    config = load(tmp_path, config_file=conf)
    assert (config.allow, config.allow_write, config.allow_write_unix) == (
        ["10.0.0.0/8", "2001:db8::/32"], ["192.0.2.7/32"], False)
    config = load(tmp_path, environ={"PRSERV_ALLOW": "10.1.0.0/16, 127.0.0.1 ::1", "PRSERV_ALLOW_WRITE": "",
                                     "PRSERV_ALLOW_WRITE_UNIX": "yes"}, config_file=conf)
    assert (config.allow, config.allow_write, config.allow_write_unix) == (
        ["10.1.0.0/16", "127.0.0.1/32", "::1/128"], [], True)
    assert config.source("allow") == "environment PRSERV_ALLOW"
    config = load(tmp_path, flags={"allow": ["10.2.0.0/16,10.3.0.0/16", "::ffff:10.4.0.0/112"]})
    assert config.allow == ["10.2.0.0/16", "10.3.0.0/16", "10.4.0.0/16"]     # IPv4-mapped made IPv4
    assert config.source("allow") == "flag --allow"
    assert load(tmp_path).allow == [] and load(tmp_path).allow_write_unix is True


@pytest.mark.parametrize("flags,environ,expected", [
    ({"allow": ["10.0.0.0/8", "10.0.0.300/32"]}, {},
     "invalid allow ['10.0.0.0/8', '10.0.0.300/32'] (from flag --allow): '10.0.0.300/32' is not an IP "
     "address or network (CIDR such as 10.0.0.0/8 or 2001:db8::/32)"),
    ({}, {"PRSERV_ALLOW_WRITE": "build-host-1"},
     "invalid allow_write 'build-host-1' (from environment PRSERV_ALLOW_WRITE): 'build-host-1' is not an IP "
     "address or network (CIDR such as 10.0.0.0/8 or 2001:db8::/32)"),
])
def test_a_bad_network_names_the_setting_and_its_source(tmp_path, flags, environ, expected):
    assert config_error(tmp_path, flags=flags, environ=environ) == expected


def test_reloaded_reads_the_config_file_again_with_the_same_flags(tmp_path):
    conf = write(tmp_path / "p.toml", 'allow_write = ["10.0.0.0/8"]\n')
    config = load(tmp_path, flags={"allow": ["10.0.0.0/8"]}, config_file=conf)
    write(tmp_path / "p.toml", 'allow_write = ["10.9.0.0/16"]\nallow = ["192.0.2.0/24"]\n')
    again = config.reloaded()
    assert (again.allow, again.allow_write) == (["10.0.0.0/8"], ["10.9.0.0/16"])    # the flag still wins
    write(tmp_path / "p.toml", 'allow_write = ["10.9.0.0/33"]\n')
    with pytest.raises(ConfigError, match=r"invalid allow_write \['10.9.0.0/33'\] \(from file "):
        config.reloaded()


# --------------------------------------------------------------------------- bind parsing

@pytest.mark.parametrize("text", ["a:1, b:2", "a:1 b:2", "a:1,b:2", "  a:1 ,\tb:2  ", "a:1,,b:2"])
def test_bind_environment_list(tmp_path, text):
    assert load(tmp_path, environ={"PRSERV_BIND": text}).bind == ["a:1", "b:2"]


def test_bind_forms(tmp_path):
    config = load(tmp_path, environ={"PRSERV_BIND": "[::1]:8585 ws://h:9/path 127.0.0.1:0"})
    assert config.bind == ["[::1]:8585", "ws://h:9/path", "127.0.0.1:0"]


def test_bind_from_toml_list_and_string(tmp_path):
    as_list = write(tmp_path / "list.toml", 'bind = ["a:1", "[::]:2"]\n')
    as_string = write(tmp_path / "string.toml", 'bind = "a:1, b:2"\n')
    assert load(tmp_path, config_file=as_list).bind == ["a:1", "[::]:2"]
    assert load(tmp_path, config_file=as_string).bind == ["a:1", "b:2"]


@pytest.mark.parametrize("text", ["", "   ", " , ,"])
def test_bind_empty_environment_is_an_error(tmp_path, text):
    message = config_error(tmp_path, environ={"PRSERV_BIND": text})
    assert message == "invalid bind %r (from environment PRSERV_BIND): expected at least one address" % text


def test_bind_empty_toml_list_is_an_error(tmp_path):
    conf = write(tmp_path / "c.toml", "bind = []\n")
    message = config_error(tmp_path, config_file=conf)
    assert message == "invalid bind [] (from file %s): expected at least one address" % conf


def test_bind_wrong_toml_type(tmp_path):
    conf = write(tmp_path / "c.toml", "bind = 8585\n")
    message = config_error(tmp_path, config_file=conf)
    assert message == ("invalid bind 8585 (from file %s): expected an address or a list of addresses"
                       % conf)


def test_bind_list_with_non_string_item(tmp_path):
    conf = write(tmp_path / "c.toml", 'bind = ["a:1", 2]\n')
    message = config_error(tmp_path, config_file=conf)
    assert message == "invalid bind ['a:1', 2] (from file %s): expected a non-empty string" % conf


def test_bind_one_bad_address_in_list(tmp_path):
    message = config_error(tmp_path, environ={"PRSERV_BIND": "a:1 nonsense"})
    assert message.startswith("invalid bind 'a:1 nonsense' (from environment PRSERV_BIND): ")
    assert "'nonsense'" in message
    assert "expected HOST:PORT" in message


def test_bind_port_out_of_range(tmp_path):
    message = config_error(tmp_path, flags={"bind": "h:65536"})
    assert message == ("invalid bind 'h:65536' (from flag --bind/--host/--port): "
                       "port out of range in 'h:65536'")


# --------------------------------------------------------------------------- booleans

@pytest.mark.parametrize("text, expected", [
    ("true", True), ("false", False), ("yes", True), ("no", False), ("on", True), ("off", False),
    ("1", True), ("0", False), ("TRUE", True), ("False", False), ("YeS", True), ("No", False),
    ("ON", True), ("oFF", False), (" true ", True), ("", False),
])
def test_boolean_from_environment(tmp_path, text, expected):
    config = load(tmp_path, environ={"PRSERV_READ_ONLY": text})
    assert config.read_only is expected
    assert config.source("read_only") == "environment PRSERV_READ_ONLY"


@pytest.mark.parametrize("toml, expected", [("true", True), ("false", False), ("1", True),
                                            ("0", False), ('"yes"', True), ('"off"', False)])
def test_boolean_from_file(tmp_path, toml, expected):
    conf = write(tmp_path / "c.toml", "read_only = %s\n" % toml)
    assert load(tmp_path, config_file=conf).read_only is expected


@pytest.mark.parametrize("text", ["maybe", "2", "y", "truee", "-1"])
def test_boolean_bad_value(tmp_path, text):
    message = config_error(tmp_path, environ={"PRSERV_READ_ONLY": text})
    assert message == ("invalid read_only %r (from environment PRSERV_READ_ONLY): "
                       "expected a boolean (true/false, yes/no, on/off, 1/0)" % text)


def test_boolean_bad_value_mentions_name_value_and_source(tmp_path):
    message = config_error(tmp_path, environ={"PRSERV_READ_ONLY": "maybe"})
    assert "read_only" in message
    assert "maybe" in message
    assert "environment PRSERV_READ_ONLY" in message


def test_boolean_bad_toml_types(tmp_path):
    conf = write(tmp_path / "c.toml", "read_only = 1.0\n")
    assert config_error(tmp_path, config_file=conf) == (
        "invalid read_only 1.0 (from file %s): expected a boolean (true/false, yes/no, on/off, 1/0)"
        % conf)


# --------------------------------------------------------------------------- wrong values

TIMEOUT_ERROR = "expected a positive number of seconds"


@pytest.mark.parametrize("text", ["abc", "0", "-1", "inf", "nan", "-inf", "", "1e400"])
def test_upstream_timeout_bad_from_environment(tmp_path, text):
    message = config_error(tmp_path, environ={"PRSERV_UPSTREAM_TIMEOUT": text})
    assert message == "invalid upstream_timeout %r (from environment PRSERV_UPSTREAM_TIMEOUT): %s" % (
        text, TIMEOUT_ERROR)


@pytest.mark.parametrize("toml, shown", [('"abc"', "'abc'"), ("0", "0"), ("-1", "-1"), ("inf", "inf"),
                                          ("true", "True"), ("0.0", "0.0")])
def test_upstream_timeout_bad_from_file(tmp_path, toml, shown):
    conf = write(tmp_path / "c.toml", "upstream_timeout = %s\n" % toml)
    message = config_error(tmp_path, config_file=conf)
    assert message == "invalid upstream_timeout %s (from file %s): %s" % (shown, conf, TIMEOUT_ERROR)
    assert "file " + conf in message


@pytest.mark.parametrize("text", ["abc", "0", "-1", "inf"])
def test_upstream_timeout_bad_from_flag(tmp_path, text):
    message = config_error(tmp_path, flags={"upstream_timeout": text})
    assert message == "invalid upstream_timeout %r (from flag --upstream-timeout): %s" % (
        text, TIMEOUT_ERROR)
    assert "flag --upstream-timeout" in message


@pytest.mark.parametrize("text, expected", [("0.001", 0.001), ("1e3", 1000.0), (" 5 ", 5.0), ("30", 30.0)])
def test_upstream_timeout_good(tmp_path, text, expected):
    assert load(tmp_path, environ={"PRSERV_UPSTREAM_TIMEOUT": text}).upstream_timeout == expected


def test_upstream_timeout_flag_as_float(tmp_path):
    config = load(tmp_path, flags={"upstream_timeout": 2.25})
    assert config.upstream_timeout == 2.25
    assert config.source("upstream_timeout") == "flag --upstream-timeout"


LEVEL_ERROR = "expected one of CRITICAL, ERROR, WARNING, INFO, DEBUG"


@pytest.mark.parametrize("text", ["LOUD", "NOTSET", "notset", "basicConfig", "getLogger", "5"])
def test_log_level_bad(tmp_path, text):
    message = config_error(tmp_path, environ={"PRSERV_LOGLEVEL": text})
    assert message == "invalid log_level %r (from environment PRSERV_LOGLEVEL): %s" % (text, LEVEL_ERROR)


@pytest.mark.parametrize("text, expected", [("debug", "DEBUG"), ("Info", "INFO"), ("warning", "WARNING"),
                                            ("ERROR", "ERROR"), ("critical", "CRITICAL"),
                                            ("warn", "WARN"), ("fatal", "FATAL")])
def test_log_level_good(tmp_path, text, expected):
    assert load(tmp_path, flags={"log_level": text}).log_level == expected


def test_log_level_bad_from_file_and_flag(tmp_path):
    conf = write(tmp_path / "c.toml", 'log_level = "LOUD"\n')
    assert config_error(tmp_path, config_file=conf) == (
        "invalid log_level 'LOUD' (from file %s): %s" % (conf, LEVEL_ERROR))
    assert config_error(tmp_path, flags={"log_level": "LOUD"}) == (
        "invalid log_level 'LOUD' (from flag --loglevel): %s" % LEVEL_ERROR)


def test_bind_nonsense(tmp_path):
    conf = write(tmp_path / "c.toml", 'bind = "nonsense"\n')
    expected = "expected HOST:PORT, [V6ADDR]:PORT, unix://PATH or ws://HOST:PORT, got 'nonsense'"
    assert config_error(tmp_path, environ={"PRSERV_BIND": "nonsense"}) == (
        "invalid bind 'nonsense' (from environment PRSERV_BIND): " + expected)
    assert config_error(tmp_path, config_file=conf) == (
        "invalid bind 'nonsense' (from file %s): %s" % (conf, expected))
    assert config_error(tmp_path, flags={"bind": "nonsense"}) == (
        "invalid bind 'nonsense' (from flag --bind/--host/--port): " + expected)


def test_upstream_without_port(tmp_path):
    conf = write(tmp_path / "c.toml", 'upstream = "host"\n')
    expected = "expected HOST:PORT, [V6ADDR]:PORT, unix://PATH or ws://HOST:PORT, got 'host'"
    assert config_error(tmp_path, environ={"PRSERV_UPSTREAM": "host"}) == (
        "invalid upstream 'host' (from environment PRSERV_UPSTREAM): " + expected)
    assert config_error(tmp_path, config_file=conf) == (
        "invalid upstream 'host' (from file %s): %s" % (conf, expected))
    assert config_error(tmp_path, flags={"upstream": "host"}) == (
        "invalid upstream 'host' (from flag -u/--upstream): " + expected)


def test_empty_path_is_an_error(tmp_path):
    assert config_error(tmp_path, environ={"PRSERV_DATABASE": "  "}) == (
        "invalid database '  ' (from environment PRSERV_DATABASE): expected a non-empty string")
    conf = write(tmp_path / "c.toml", "database = 3\n")
    assert config_error(tmp_path, config_file=conf) == (
        "invalid database 3 (from file %s): expected a non-empty string" % conf)


def test_long_bad_value_is_shortened(tmp_path):
    text = "x" * 200
    message = config_error(tmp_path, environ={"PRSERV_LOGLEVEL": text})
    shown = repr(text)[:77] + "..."
    assert message == "invalid log_level %s (from environment PRSERV_LOGLEVEL): %s" % (shown, LEVEL_ERROR)


def test_first_bad_setting_is_reported(tmp_path):
    # settings are checked in declaration order: bind before log_level
    message = config_error(tmp_path, environ={"PRSERV_LOGLEVEL": "LOUD", "PRSERV_BIND": "x"})
    assert message.startswith("invalid bind 'x' (from environment PRSERV_BIND): ")


def test_good_flag_hides_bad_environment(tmp_path):
    config = load(tmp_path, flags={"log_level": "error"}, environ={"PRSERV_LOGLEVEL": "LOUD"})
    assert config.log_level == "ERROR"
    assert config.source("log_level") == "flag --loglevel"


# --------------------------------------------------------------------------- optional values

def test_empty_upstream_environment_means_none(tmp_path):
    conf = write(tmp_path / "c.toml", 'upstream = "file:1"\n')
    for text in ("", "   "):
        config = load(tmp_path, environ={"PRSERV_UPSTREAM": text}, config_file=conf)
        assert config.upstream is None
        assert config.source("upstream") == "environment PRSERV_UPSTREAM"


def test_empty_upstream_and_pidfile_in_file_mean_none(tmp_path):
    conf = write(tmp_path / "c.toml", 'upstream = ""\npidfile = ""\n')
    config = load(tmp_path, config_file=conf)
    assert config.upstream is None
    assert config.pidfile is None
    assert config.source("upstream") == "file " + conf
    assert config.source("pidfile") == "file " + conf


def test_upstream_unix_made_absolute(tmp_path):
    config = load(tmp_path, environ={"PRSERV_UPSTREAM": "unix://up.sock"})
    assert config.upstream == "unix://" + os.path.join(str(tmp_path), "up.sock")


# --------------------------------------------------------------------------- the file

def test_unknown_key_in_file(tmp_path):
    conf = write(tmp_path / "c.toml", 'database = "x"\ncolour = "red"\n')
    message = config_error(tmp_path, config_file=conf)
    assert message == ("config file %s (from flag --config): unknown setting colour; known: "
                       "database, bind, read_only, allow, allow_write, allow_write_unix, record_clients, trusted_proxies, "
                       "require_token, "
                       "tls_certificate, "
                       "tls_key, tls_ca, upstream, upstream_timeout, "
                       "upstream_token, mirror, mirror_token, mirror_timeout, "
                       "mirror_audit_interval, db_pool_size, db_connect_timeout, db_lock_timeout, "
                       "db_outage_wait, sync_mode, cache_size, event_loop, metrics, http, http_process, log_file, "
                       "log_level, pidfile, max_connections, max_connections_per_address, idle_timeout, "
                       "handshake_timeout, "
                       "max_message_size, max_handshake_line, shutdown_timeout" % conf)


def test_unknown_keys_in_file_plural_sorted(tmp_path):
    conf = write(tmp_path / "c.toml", 'zeta = 1\nalpha = 2\n[server]\nport = 1\n')
    message = config_error(tmp_path, config_file=conf)
    assert message.startswith("config file %s (from flag --config): unknown settings alpha, server, "
                              "zeta; known: database, " % conf)


def test_unknown_key_in_file_from_environment(tmp_path):
    write(tmp_path / "c.toml", "port = 1\n")
    message = config_error(tmp_path, environ={"PRSERV_CONFIG": "c.toml"})
    conf = os.path.join(str(tmp_path), "c.toml")
    assert message.startswith("config file %s (from environment PRSERV_CONFIG): unknown setting port;"
                              % conf)


def test_invalid_toml(tmp_path):
    conf = write(tmp_path / "c.toml", 'database = "unterminated\n')
    message = config_error(tmp_path, config_file=conf)
    assert message.startswith("config file %s is not valid TOML: " % conf)
    assert "not valid TOML" in message


def test_missing_file(tmp_path):
    conf = str(tmp_path / "missing.toml")
    message = config_error(tmp_path, config_file=conf)
    assert message == "cannot read config file %s: No such file or directory" % conf


def test_directory_as_file(tmp_path):
    message = config_error(tmp_path, config_file=str(tmp_path))
    assert message == "cannot read config file %s: Is a directory" % tmp_path


def test_empty_file_gives_defaults(tmp_path):
    conf = write(tmp_path / "c.toml", "# nothing\n")
    config = load(tmp_path, config_file=conf)
    assert config.config_file == conf
    assert all(config.is_default(name) for name in NAMES)


def test_relative_config_file_against_cwd(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    write(sub / "p.toml", 'database = "d.db"\n')
    config = load(tmp_path, config_file="conf/p.toml")
    assert config.config_file == os.path.join(str(tmp_path), "conf/p.toml")
    assert config.database == os.path.join(str(sub), "d.db")
    assert config.source("database") == "file " + os.path.join(str(tmp_path), "conf/p.toml")


def test_prserv_config_selects_file(tmp_path):
    conf = write(tmp_path / "env.toml", 'log_level = "debug"\n')
    config = load(tmp_path, environ={"PRSERV_CONFIG": conf})
    assert config.config_file == conf
    assert config.log_level == "DEBUG"
    assert config.source("log_level") == "file " + conf


def test_empty_prserv_config_means_no_file(tmp_path):
    config = load(tmp_path, environ={"PRSERV_CONFIG": ""})
    assert config.config_file is None


def test_config_file_argument_beats_prserv_config(tmp_path):
    from_env = write(tmp_path / "env.toml", 'log_level = "debug"\n')
    from_arg = write(tmp_path / "arg.toml", 'log_level = "error"\n')
    config = load(tmp_path, environ={"PRSERV_CONFIG": from_env}, config_file=from_arg)
    assert config.config_file == from_arg
    assert config.log_level == "ERROR"
    assert config.source("log_level") == "file " + from_arg


def test_prserv_config_missing_file(tmp_path):
    message = config_error(tmp_path, environ={"PRSERV_CONFIG": "nope.toml"})
    assert message == "cannot read config file %s: No such file or directory" % os.path.join(
        str(tmp_path), "nope.toml")


# --------------------------------------------------------------------------- show / json

def strip_comments(text: str) -> str:
    return "\n".join(re.sub(r"\s*#.*$", "", line) for line in text.splitlines()) + "\n"


def show_config(tmp_path) -> Config:
    conf = write(tmp_path / "c.toml", 'log_level = "warning"\nbind = ["a:1", "b:2"]\n')
    return load(tmp_path, flags={"read_only": True, "upstream_timeout": "2.5"},
                environ={"PRSERV_UPSTREAM": "up:1"}, config_file=conf)


def test_show_exact_lines(tmp_path):
    config = show_config(tmp_path)
    conf = os.path.join(str(tmp_path), "c.toml")
    lines = config.show().splitlines()
    assert lines[0] == "# effective prserv configuration (config file %s)" % conf
    assert len(lines) == 1 + len(NAMES)
    width = max(len(name) for name in NAMES)             # names aligned on the longest

    def line(name: str, value: str, source: str) -> str:
        return "%-60s # %s" % ("%-*s = %s" % (width, name, value), source)

    expected = {
        "read_only": line("read_only", "true", "flag -r/--read-only"),
        "upstream_timeout": line("upstream_timeout", "2.5", "flag --upstream-timeout"),
        "upstream": line("upstream", '"up:1"', "environment PRSERV_UPSTREAM"),
        "bind": line("bind", '["a:1", "b:2"]', "file " + conf),
        "log_level": line("log_level", '"WARNING"', "file " + conf),
        "pidfile": line("pidfile", '""', "default"),
        "max_message_size": line("max_message_size", "16777216", "default"),
    }
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert list(by_name) == NAMES
    for name, text in expected.items():
        assert by_name[name] == text
        assert len(text.split(" # ")[0]) == 60
    assert config.show().endswith("# default\n")


def test_show_without_file_header(tmp_path):
    config = load(tmp_path)
    text = config.show()
    assert text.splitlines()[0] == "# effective prserv configuration"
    assert text.splitlines()[1] == "%-60s # default" % (
        '%-27s = "%s"' % ("database", os.path.join(str(tmp_path), "prserv.sqlite3")))


def test_show_long_value_is_not_truncated(tmp_path):
    long = "d" * 80 + ".db"
    config = load(tmp_path, flags={"database": long})
    line = config.show().splitlines()[1]
    assert line == '%-27s = "%s" # flag -f/--file' % ("database", os.path.join(str(tmp_path), long))


def test_show_is_toml_with_same_values(tmp_path):
    config = show_config(tmp_path)
    parsed = tomllib.loads(strip_comments(config.show()))
    expected = {name: ("" if value.value is None else value.value)
                for name, value in config.values.items()}
    assert parsed == expected
    assert parsed["read_only"] is True
    assert parsed["upstream_timeout"] == 2.5
    assert parsed["pidfile"] == ""


def test_show_is_toml_without_stripping_comments(tmp_path):
    # the comments are TOML comments: the text loads as it is
    config = show_config(tmp_path)
    parsed = tomllib.loads(config.show())
    assert parsed["bind"] == ["a:1", "b:2"]
    assert parsed["upstream"] == "up:1"


def test_show_output_loads_back_as_config_file(tmp_path):
    config = show_config(tmp_path)
    saved = write(tmp_path / "shown.toml", config.show())
    again = load(tmp_path, config_file=saved)
    assert {name: value.value for name, value in again.values.items()} == {
        name: value.value for name, value in config.values.items()}
    assert all(again.source(name) == "file " + saved for name in NAMES)


def test_show_quotes_awkward_paths(tmp_path):
    config = load(tmp_path, flags={"database": 'we"ird\\name #1.db', "log_file": "-"})
    parsed = tomllib.loads(config.show())
    assert parsed["database"] == os.path.join(str(tmp_path), 'we"ird\\name #1.db')
    assert parsed["log_file"] == "-"


def test_as_json(tmp_path):
    config = show_config(tmp_path)
    conf = os.path.join(str(tmp_path), "c.toml")
    data = json.loads(config.as_json())
    assert data == {
        "database": {"value": os.path.join(str(tmp_path), "prserv.sqlite3"), "source": "default"},
        "bind": {"value": ["a:1", "b:2"], "source": "file " + conf},
        "read_only": {"value": True, "source": "flag -r/--read-only"},
        "allow": {"value": [], "source": "default"},
        "allow_write": {"value": [], "source": "default"},
        "allow_write_unix": {"value": True, "source": "default"},
        "record_clients": {"value": True, "source": "default"},
        "trusted_proxies": {"value": [], "source": "default"},
        "require_token": {"value": [], "source": "default"},
        "tls_certificate": {"value": None, "source": "default"},
        "tls_key": {"value": None, "source": "default"},
        "tls_ca": {"value": None, "source": "default"},
        "upstream": {"value": "up:1", "source": "environment PRSERV_UPSTREAM"},
        "upstream_timeout": {"value": 2.5, "source": "flag --upstream-timeout"},
        "upstream_token": {"value": None, "source": "default"},
        "mirror": {"value": None, "source": "default"},
        "mirror_token": {"value": None, "source": "default"},
        "mirror_timeout": {"value": 60.0, "source": "default"},
        "mirror_audit_interval": {"value": 3600.0, "source": "default"},
        "db_pool_size": {"value": 10, "source": "default"},
        "db_connect_timeout": {"value": 30.0, "source": "default"},
        "db_lock_timeout": {"value": 20.0, "source": "default"},
        "db_outage_wait": {"value": 20.0, "source": "default"},
        "sync_mode": {"value": "immediate", "source": "default"},
        "cache_size": {"value": 64 * 2**20, "source": "default"},
        "event_loop": {"value": "auto", "source": "default"},
        "metrics": {"value": None, "source": "default"},
        "http": {"value": None, "source": "default"},
        "http_process": {"value": True, "source": "default"},
        "log_file": {"value": os.path.join(str(tmp_path), "prserv.log"), "source": "default"},
        "log_level": {"value": "WARNING", "source": "file " + conf},
        "pidfile": {"value": None, "source": "default"},
        "max_connections": {"value": 10000, "source": "default"},
        "max_connections_per_address": {"value": 256, "source": "default"},
        "idle_timeout": {"value": 3600.0, "source": "default"},
        "handshake_timeout": {"value": 30.0, "source": "default"},
        "max_message_size": {"value": 16777216, "source": "default"},
        "max_handshake_line": {"value": 4096, "source": "default"},
        "shutdown_timeout": {"value": 10.0, "source": "default"},
    }
    assert list(data) == NAMES


# --------------------------------------------------------------------------- client host

def test_environment_host():
    assert environment_host({}) == "localhost:8585"
    assert environment_host({"PRSERV_HOST": "h:1"}) == "h:1"
    assert environment_host({"PRSERV_HOST": "  h:2 \n"}) == "h:2"
    assert environment_host({"PRSERV_HOST": ""}) == "localhost:8585"
    assert environment_host({"PRSERV_HOST": "   "}) == "localhost:8585"


def test_environment_host_default_environ(monkeypatch):
    monkeypatch.setenv("PRSERV_HOST", "from-os:7")
    assert environment_host() == "from-os:7"
    monkeypatch.delenv("PRSERV_HOST")
    assert environment_host() == "localhost:8585"


def test_show_is_toml_for_non_bmp_path(tmp_path):
    config = load(tmp_path, flags={"database": "emoji\U0001F600.db"})
    assert tomllib.loads(config.show())["database"] == os.path.join(str(tmp_path), "emoji\U0001F600.db")


@pytest.mark.parametrize("text", ["sometimes", "periodic", "periodic:0", "periodic:-1", "periodic:x", ""])
def test_bad_sync_mode_is_named_with_its_source(tmp_path, text):
    message = config_error(tmp_path, environ={"PRSERV_SYNC_MODE": text})
    assert message.startswith("invalid sync_mode %r (from environment PRSERV_SYNC_MODE): " % text)



@pytest.mark.parametrize("name, raw, value", [
    ("max_connections", "0", 0), ("max_connections", "2000", 2000), ("max_connections", 5, 5),
    ("idle_timeout", "0", 0.0), ("idle_timeout", "1.5", 1.5), ("handshake_timeout", 2, 2.0),
    ("max_message_size", "1024", 1024), ("max_message_size", "64K", 65536),
    ("max_message_size", "2m", 2 * 2**20), ("max_message_size", "1G", 2**30),
    ("max_handshake_line", "8K", 8192), ("shutdown_timeout", "0", 0.0),
])
def test_limit_settings_parse(tmp_path, name, raw, value):
    config = load(tmp_path, flags={name: raw})
    assert getattr(config, name) == value


@pytest.mark.parametrize("name, raw, expected", [
    ("max_connections", "-1", "expected a whole number >= 0"),
    ("max_connections", "lots", "expected a whole number >= 0"),
    ("idle_timeout", "-5", "expected a number of seconds >= 0 (0: no limit)"),
    ("handshake_timeout", "soon", "expected a number of seconds >= 0 (0: no limit)"),
    ("max_message_size", "512", "expected a size in bytes of at least 1024 (suffix K, M or G allowed)"),
    ("max_message_size", "1T", "expected a size in bytes of at least 1024 (suffix K, M or G allowed)"),
    ("max_handshake_line", "", "expected a size in bytes of at least 1024 (suffix K, M or G allowed)"),
])
def test_limit_settings_reject_bad_values_naming_the_source(tmp_path, name, raw, expected):
    env = {"PRSERV_" + name.upper(): raw}
    message = config_error(tmp_path, environ=env)
    assert message == "invalid %s %r (from environment PRSERV_%s): %s" % (name, raw, name.upper(), expected)


# --------------------------------------------------------------------------- one table

def test_readme_settings_table_is_the_settings_table():
    """README's table is made from SETTINGS (``markdown_table``): a setting added,
    renamed or given another default shows here first."""
    from prserv.runtime.settings import markdown_table

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md"), encoding="utf-8").read()
    start = readme.index("| setting (TOML key) |")
    assert readme[start:readme.index("\n\n", start) + 1] == markdown_table()


def test_every_setting_has_an_option_and_the_limits_come_from_the_table(tmp_path):
    from prserv.asyncrpc.limits import Limits
    from prserv.cli.bitbake_prserv import build_parser
    from prserv.cli.options import config_from_args
    from prserv.runtime.settings import limits_of

    parser = build_parser()
    options = {option for action in parser._actions for option in action.option_strings}
    for setting in SETTINGS:
        assert set(setting.options) <= options, setting.name
    args = parser.parse_args(["--max-connections", "7", "--idle-timeout", "2", "--handshake-timeout", "3",
                              "--max-message-size", "2K", "--max-handshake-line", "1K",
                              "--shutdown-timeout", "4", "-f", str(tmp_path / "x.db")])
    limits = limits_of(config_from_args(args))
    assert limits == Limits(max_connections=7, idle_timeout=2.0, handshake_timeout=3.0, max_message=2048,
                            max_handshake_line=1024, shutdown_timeout=4.0)
    assert limits_of(load_config({}, {}, None, str(tmp_path))) == Limits()   # the defaults are Limits'


# --------------------------------------------------------------------------- mirrors

def test_mirror_settings_from_file_environment_and_flags(tmp_path):
    conf = write(tmp_path / "c.toml", 'mirror = "src.example.com:8585"\nmirror_timeout = 20\n'
                 'mirror_audit_interval = 0\n')
    config = load(tmp_path, config_file=conf)
    assert (config.mirror, config.mirror_timeout, config.mirror_audit_interval) == ("src.example.com:8585", 20.0, 0.0)
    config = load(tmp_path, environ={"PRSERV_MIRROR": "unix://s.sock"}, config_file=conf)
    assert config.mirror == "unix://" + os.path.join(str(tmp_path), "s.sock")
    assert config.source("mirror") == "environment PRSERV_MIRROR"
    config = load(tmp_path, flags={"mirror": "ws://[::1]:9"}, config_file=conf)
    assert (config.mirror, config.source("mirror")) == ("ws://[::1]:9", "flag --mirror")


def test_a_mirror_has_no_upstream(tmp_path):
    conf = write(tmp_path / "c.toml", 'upstream = "u:1"\n')
    message = config_error(tmp_path, flags={"mirror": "m:2"}, config_file=conf)
    assert message == ("mirror (from flag --mirror) and upstream (from file %s) cannot be combined: "
                       "a mirror copies its source's values" % conf)
    assert config_error(tmp_path, flags={"mirror_timeout": "0"}) == (
        "invalid mirror_timeout '0' (from flag --mirror-timeout): expected a positive number of seconds")


# --------------------------------------------------------------------------- PostgreSQL URLs

URL = "postgresql://prserv:s3cret@db.example.com:5433/prs?sslmode=require"


def test_a_database_url_is_never_made_a_path_and_its_password_is_never_shown(tmp_path):
    config = load(tmp_path, flags={"database": URL})
    assert config.database == URL
    shown = "postgresql://prserv:***@db.example.com:5433/prs?sslmode=require"
    assert re.search(r'^database *= "%s"' % re.escape(shown), config.show(), re.M) and "s3cret" not in config.show()
    assert json.loads(config.as_json())["database"]["value"] == shown
    for url in ("postgres://h/db", "postgresql:///db?host=/run/postgresql"):
        assert load(tmp_path, environ={"PRSERV_DATABASE": url}).database == url


def test_a_buffered_sync_mode_or_a_mirror_cannot_share_a_database(tmp_path):
    assert config_error(tmp_path, flags={"database": URL, "sync_mode": "periodic:5"}) == (
        "sync_mode periodic:5 (from flag --sync-mode) holds values in one process and cannot be shared: "
        "with a PostgreSQL database (from flag -f/--file) PostgreSQL's own durability applies "
        "(synchronous_commit)")
    assert config_error(tmp_path, flags={"database": URL, "mirror": "m:1"}) == (
        "a mirror (from flag --mirror) keeps its copy in a SQLite file, not in a PostgreSQL database "
        "(from flag -f/--file)")


def test_a_url_without_the_driver_installed_exits_2_naming_the_extra(tmp_path):
    from processes import run_without_extras
    result = run_without_extras(tmp_path, "-F", "-f", URL)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "invalid database 'postgresql://prserv:***@db.example.com:5433/prs?sslmode=require' (from flag "
        "-f/--file): a PostgreSQL URL needs its driver: pip install 'prserv[postgresql]'")
    assert "s3cret" not in result.stderr
