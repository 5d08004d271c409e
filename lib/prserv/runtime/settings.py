"""Server settings: declared once, read from flags, ``PRSERV_*`` variables and TOML.

``SETTINGS`` is the one table of every server setting (name = TOML key, type,
default, command-line options, environment variable, help).  From it come the
command line's options (``prserv.cli.options``), the environment and file parsing
here, ``prserv config --show``, README's settings table (``markdown_table``, checked
by a test) and the server's connection limits (``limits_of``).

Precedence: flags > environment > file > defaults.  Every value remembers where it
came from, so a wrong value can be named with its origin.  This module knows
nothing of sockets or databases; it only turns text into checked values.

Relative paths are made absolute at load time -- against the current directory for
flags, environment and defaults, against the file's directory for the config file --
because the daemon changes its working directory to ``/``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..access import parse_networks
from ..server import metrics, web
from ..server.session import TOKEN_FOR_DUMP, TOKEN_FOR_MIRROR
from ..tokens import parse_credentials
from ..asyncrpc import loops
from ..asyncrpc.address import ADDR_TYPE_UNIX, UNIX_PREFIX, AddressError, parse_address
from ..asyncrpc.limits import Limits
from ..errors import ConfigError
from ..server.mirror import DEFAULT_AUDIT_INTERVAL
from ..server.prserver import check_mirror_and_upstream
from ..server.mirror import DEFAULT_TIMEOUT as DEFAULT_MIRROR_TIMEOUT
from ..server.upstream import DEFAULT_TIMEOUT as DEFAULT_UPSTREAM_TIMEOUT
from ..storage import check_database_options
from ..storage.postgresql.engine import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_TIMEOUT, DEFAULT_OUTAGE_WAIT,
                                        DEFAULT_POOL_SIZE)
from ..storage.postgresql.url import is_url, masked
from ..storage.sqlite.cache import DEFAULT_BUDGET as DEFAULT_CACHE_SIZE
from ..storage.syncmode import IMMEDIATE, parse_sync_mode

DEFAULT_HOST = "0.0.0.0"
TOKEN_REQUIREMENTS = (TOKEN_FOR_MIRROR, TOKEN_FOR_DUMP)
DEFAULT_PORT = 8585
CONFIG_ENV = "PRSERV_CONFIG"
STDERR_LOG = "-"
"""``log_file`` value meaning "log to standard error"."""


class _Invalid(ValueError):
    """A value that cannot be parsed; the message says what was expected."""


# --------------------------------------------------------------------------- value parsers
# Each takes the raw value (text from flags and environment, native TOML types from
# the file) and the directory relative paths are resolved against.

def _text(raw: Any, base: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _Invalid("expected a non-empty string")
    return raw.strip()


def _path(raw: Any, base: str) -> str:
    return os.path.normpath(os.path.join(base, _text(raw, base)))


def _database(raw: Any, base: str) -> str:
    """A SQLite file (made absolute) or a PostgreSQL URL (kept as it is; its driver must
    be installed)."""
    text = _text(raw, base)
    if not is_url(text):
        return _path(text, base)
    if importlib.util.find_spec("asyncpg") is None:
        raise _Invalid("a PostgreSQL URL needs its driver: pip install 'prserv[postgresql]'")
    return text


def _log_file(raw: Any, base: str) -> str:
    return STDERR_LOG if raw == STDERR_LOG else _path(raw, base)


def _optional_path(raw: Any, base: str) -> Optional[str]:
    if raw is None or raw == "":
        return None
    return _path(raw, base)


def _boolean(raw: Any, base: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower() if isinstance(raw, (str, int)) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise _Invalid("expected a boolean (true/false, yes/no, on/off, 1/0)")


def _positive_number(raw: Any, base: str) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise _Invalid("expected a positive number of seconds")
    return value


def _seconds_or_zero(raw: Any, base: str) -> float:
    """Seconds, 0 meaning "no limit"."""
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not value >= 0 or value == float("inf"):
        raise _Invalid("expected a number of seconds >= 0 (0: no limit)")
    return value


def _positive_count(raw: Any, base: str) -> int:
    value = _count(raw, base)
    if value < 1:
        raise _Invalid("expected a whole number >= 1")
    return value


def _count(raw: Any, base: str) -> int:
    """A whole number >= 0 (0 meaning "no limit" where the setting says so)."""
    text = str(raw).strip() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    if not text.isdigit() or not text.isascii():
        raise _Invalid("expected a whole number >= 0")
    return int(text)


def _size(raw: Any, base: str) -> int:
    """Bytes, optionally with a K/M/G suffix (powers of 1024); at least 1 KiB."""
    text = str(raw).strip().upper() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    factor = 1
    if text[-1:] in ("K", "M", "G"):
        factor = 1024 ** ("KMG".index(text[-1]) + 1)
        text = text[:-1].strip()
    if not text.isdigit() or not text.isascii() or int(text) * factor < 1024:
        raise _Invalid("expected a size in bytes of at least 1024 (suffix K, M or G allowed)")
    return int(text) * factor


def _address(raw: Any, base: str) -> str:
    text = _text(raw, base)
    try:
        kind, args = parse_address(text)
    except AddressError as exc:
        raise _Invalid(str(exc)) from None
    if kind == ADDR_TYPE_UNIX:
        return UNIX_PREFIX + os.path.normpath(os.path.join(base, str(args[0])))
    return text


def _optional_address(raw: Any, base: str) -> Optional[str]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _address(raw, base)


def _addresses(raw: Any, base: str) -> List[str]:
    """A list of listen addresses: a TOML list, or text separated by commas/blanks."""
    if isinstance(raw, str):
        items = raw.replace(",", " ").split()
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise _Invalid("expected an address or a list of addresses")
    if not items:
        raise _Invalid("expected at least one address")
    return [_address(item, base) for item in items]


def _words(raw: Any, expected: str) -> List[str]:
    """The words of a TOML list of strings, or of text separated by commas or blanks
    (a repeated flag gives a list, each item of which may hold several)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(item, str) for item in raw):
        raise _Invalid(expected)
    return [part for item in raw for part in item.replace(",", " ").split()]


def _networks(raw: Any, base: str) -> List[str]:
    """IP networks (CIDR) or single addresses; empty: no restriction."""
    items = _words(raw, "expected IP networks such as 10.0.0.0/8, as a list or separated by commas")
    try:
        return [str(network) for network in parse_networks(items)]
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _optional_credentials(raw: Any, base: str) -> Optional[str]:
    """``USER:TOKEN`` (checked, kept as text), or None."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        parse_credentials(_text(raw, base))
    except ValueError:
        raise _Invalid("expected USER:TOKEN") from None
    return raw.strip()


def _token_requirements(raw: Any, base: str) -> List[str]:
    """What anonymous clients may not do: ``mirror``, ``dump-db``."""
    items = _words(raw, "expected a list of: %s" % ", ".join(TOKEN_REQUIREMENTS))
    unknown = [item for item in items if item not in TOKEN_REQUIREMENTS]
    if unknown:
        raise _Invalid("unknown %s (known: %s)" % (", ".join(repr(u) for u in unknown), ", ".join(TOKEN_REQUIREMENTS)))
    return sorted(set(items))


def _endpoint(check: Callable[[str], Any]) -> Callable[[Any, str], Optional[str]]:
    """A parser of an optional listening address that ``check(text)`` accepts (its
    ``ValueError`` says why not): the address as given, or None."""
    def parse(raw: Any, base: str) -> Optional[str]:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        text = _text(raw, base)
        try:
            check(text)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        return text
    return parse


_metrics_address = _endpoint(metrics.endpoint)
"""HOST:PORT for /metrics (its library must be installed), or None."""
_http_address = _endpoint(web.endpoint)
"""HOST:PORT, [V6]:PORT, http://HOST:PORT or https://HOST:PORT for the HTTP
listener (h11 must be installed), or None."""


def _event_loop(raw: Any, base: str) -> str:
    """``auto``, ``asyncio`` or ``uvloop`` (which must then be installed)."""
    text = _text(raw, base).lower()
    if text not in loops.CHOICES:
        raise _Invalid("expected one of %s" % ", ".join(loops.CHOICES))
    try:
        loops.resolve(text)
    except loops.LoopUnavailable as exc:
        raise _Invalid(str(exc)) from None
    return text


def _sync_mode(raw: Any, base: str) -> str:
    try:
        return str(parse_sync_mode(_text(raw, base)))
    except ConfigError as exc:
        raise _Invalid(str(exc)) from None


def _log_level(raw: Any, base: str) -> str:
    text = _text(raw, base).upper()
    if not isinstance(getattr(logging, text, None), int) or text == "NOTSET":
        raise _Invalid("expected one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
    return text


# --------------------------------------------------------------------------- the settings

VALUE, SWITCH, REPEATED = "value", "switch", "repeated"
"""How a setting's option takes its value on the command line: one argument; none
(given means true); or one argument per repetition."""


@dataclass(frozen=True)
class Setting:
    name: str                     # TOML key and attribute name
    env: str                      # environment variable
    options: Tuple[str, ...]      # command-line option strings
    default: Any                  # raw default (parsed like any other value)
    parse: Callable[[Any, str], Any]
    help: str                     # the option's help; README's description
    metavar: Optional[str] = None
    kind: str = VALUE
    limit: Optional[str] = None   # the ``Limits`` field it sets
    shown_default: Optional[str] = None     # how help and README show the default
    flag_label: Optional[str] = None        # how messages name the flags, if not the options
    secret: bool = False                    # USER:TOKEN: shown as USER:*** everywhere

    @property
    def flag(self) -> str:
        """The command-line spelling used in messages (``flag -f/--file``)."""
        return self.flag_label or "/".join(self.options)


DEFAULT_LIMITS = Limits()

SETTINGS: Tuple[Setting, ...] = (
    Setting("database", "PRSERV_DATABASE", ("-f", "--file"), "prserv.sqlite3", _database,
            "database filename, or a PostgreSQL URL postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?...] "
            "shared by several servers (pip install 'prserv[postgresql]')", metavar="FILE|URL"),
    Setting("bind", "PRSERV_BIND", ("--bind", "--address"), "%s:%d" % (DEFAULT_HOST, DEFAULT_PORT),
            _addresses, "listen address, repeatable: HOST:PORT, [V6]:PORT, unix:///PATH, ws://HOST:PORT "
            "(environment: comma or space separated; TOML: a list)", metavar="ADDR", kind=REPEATED,
            flag_label="--bind/--host/--port"),
    Setting("read_only", "PRSERV_READ_ONLY", ("-r", "--read-only"), False, _boolean,
            "open database in read-only mode (environment: true/false, yes/no, on/off, 1/0)",
            kind=SWITCH),
    Setting("allow", "PRSERV_ALLOW", ("--allow",), [], _networks,
            "who may connect: IP networks (CIDR) or addresses, repeatable or comma separated; others "
            "are closed at once (unix-socket clients always may)", metavar="CIDR", kind=REPEATED,
            shown_default="everyone"),
    Setting("allow_write", "PRSERV_ALLOW_WRITE", ("--allow-write",), [], _networks,
            "who of those may store values (CIDR, as --allow); the others are served as by a "
            "read-only server", metavar="CIDR", kind=REPEATED, shown_default="everyone"),
    Setting("allow_write_unix", "PRSERV_ALLOW_WRITE_UNIX", ("--allow-write-unix",), True, _boolean,
            "unix-socket clients may store values (true/false)", metavar="BOOL"),
    Setting("record_clients", "PRSERV_RECORD_CLIENTS", ("--record-clients",), True, _boolean,
            "record the address and user each new value is given to, beside its time (true/false; "
            "times are always recorded; prserv forget-clients erases older ones)", metavar="BOOL"),
    Setting("trusted_proxies", "PRSERV_TRUSTED_PROXIES", ("--trusted-proxy",), [], _networks,
            "proxies whose connections carry the real client's address, which the rules then apply "
            "to: the PROXY protocol (v1 or v2) on TCP, X-Forwarded-For on websockets and HTTP; CIDR, "
            "repeatable",
            metavar="CIDR", kind=REPEATED, shown_default="none"),
    Setting("require_token", "PRSERV_REQUIRE_TOKEN", ("--require-token",), [], _token_requirements,
            "what anonymous clients may not do: mirror (pull the change feed; a token with the mirror "
            "permission may), dump-db (an admin token may); repeatable or comma separated",
            metavar="WHAT", kind=REPEATED, shown_default="nothing"),
    Setting("tls_certificate", "PRSERV_TLS_CERTIFICATE", ("--tls-certificate",), None, _optional_path,
            "PEM certificate chain that wss:// and https:// listeners present", metavar="FILE", shown_default="none"),
    Setting("tls_key", "PRSERV_TLS_KEY", ("--tls-key",), None, _optional_path,
            "PEM private key of tls_certificate", metavar="FILE",
            shown_default="in the certificate file"),
    Setting("tls_ca", "PRSERV_TLS_CA", ("--tls-ca",), None, _optional_path,
            "PEM CA bundle a wss:// upstream or mirror source is checked against (also read by the "
            "prserv command)", metavar="FILE", shown_default="the system's CAs"),
    Setting("upstream", "PRSERV_UPSTREAM", ("-u", "--upstream"), None, _optional_address,
            "Upstream PR service (host:port)", metavar="ADDR", shown_default="none"),
    Setting("upstream_timeout", "PRSERV_UPSTREAM_TIMEOUT", ("--upstream-timeout",),
            DEFAULT_UPSTREAM_TIMEOUT, _positive_number,
            "seconds to wait for the upstream before answering with an error", metavar="SECONDS",
            shown_default="%g s" % DEFAULT_UPSTREAM_TIMEOUT),
    Setting("upstream_token", "PRSERV_UPSTREAM_TOKEN", ("--upstream-token",), None, _optional_credentials,
            "USER:TOKEN to prove to the upstream (else PRSERV_TOKEN, else ~/.netrc for its host)",
            metavar="USER:TOKEN", shown_default="none", secret=True),
    Setting("mirror", "PRSERV_MIRROR", ("--mirror",), None, _optional_address,
            "follow this PR server as a read-only publishing mirror (any address a client takes); "
            "the database file then holds the mirror's copy", metavar="ADDR", shown_default="none"),
    Setting("mirror_token", "PRSERV_MIRROR_TOKEN", ("--mirror-token",), None, _optional_credentials,
            "USER:TOKEN to prove to the mirror's source (else PRSERV_TOKEN, else ~/.netrc for its host)",
            metavar="USER:TOKEN", shown_default="none", secret=True),
    Setting("mirror_timeout", "PRSERV_MIRROR_TIMEOUT", ("--mirror-timeout",), DEFAULT_MIRROR_TIMEOUT,
            _positive_number, "seconds a mirror's source has to answer (a long-poll waits half of "
            "it); then the mirror reconnects", metavar="SECONDS",
            shown_default="%g s" % DEFAULT_MIRROR_TIMEOUT),
    Setting("mirror_audit_interval", "PRSERV_MIRROR_AUDIT_INTERVAL", ("--mirror-audit-interval",),
            DEFAULT_AUDIT_INTERVAL, _seconds_or_zero,
            "seconds between a mirror's audits of every row it holds against its source (0: never)",
            metavar="SECONDS", shown_default="%g s" % DEFAULT_AUDIT_INTERVAL),
    Setting("db_pool_size", "PRSERV_DB_POOL_SIZE", ("--db-pool-size",), DEFAULT_POOL_SIZE, _positive_count,
            "PostgreSQL: connections this server opens at most", metavar="N"),
    Setting("db_connect_timeout", "PRSERV_DB_CONNECT_TIMEOUT", ("--db-connect-timeout",),
            DEFAULT_CONNECT_TIMEOUT, _positive_number,
            "PostgreSQL: how long a starting server waits for the database to accept connections",
            metavar="SECONDS", shown_default="%g s" % DEFAULT_CONNECT_TIMEOUT),
    Setting("db_lock_timeout", "PRSERV_DB_LOCK_TIMEOUT", ("--db-lock-timeout",), DEFAULT_LOCK_TIMEOUT,
            _positive_number, "PostgreSQL: how long a request waits for a lock held elsewhere before "
            "it is answered with an error", metavar="SECONDS", shown_default="%g s" % DEFAULT_LOCK_TIMEOUT),
    Setting("db_outage_wait", "PRSERV_DB_OUTAGE_WAIT", ("--db-outage-wait",), DEFAULT_OUTAGE_WAIT,
            _seconds_or_zero, "PostgreSQL: how long a request waits for an unreachable database, or for a "
            "new primary after a failover, before it is answered with an error (0: no wait)",
            metavar="SECONDS", shown_default="%g s" % DEFAULT_OUTAGE_WAIT),
    Setting("sync_mode", "PRSERV_SYNC_MODE", ("--sync-mode",), IMMEDIATE, _sync_mode,
            "immediate (each value fsync'd before it is answered), periodic:SECONDS, "
            "or on-shutdown (throwaway builds)", metavar="MODE"),
    Setting("cache_size", "PRSERV_CACHE_SIZE", ("--cache-size",), DEFAULT_CACHE_SIZE, _size,
            "memory kept about packages and checksums, in bytes (suffix K, M or G); the server's "
            "memory stays under this plus a fixed base, whatever the database's size", metavar="BYTES"),
    Setting("event_loop", "PRSERV_EVENT_LOOP", ("--event-loop",), loops.AUTO, _event_loop,
            "auto (uvloop when it is installed, as pip install prserv does), asyncio or uvloop",
            metavar="LOOP"),
    Setting("metrics", "PRSERV_METRICS", ("--metrics",), None, _metrics_address,
            "serve Prometheus metrics at http://HOST:PORT/metrics (pip install 'prserv[metrics]')",
            metavar="HOST:PORT", shown_default="none"),
    Setting("http", "PRSERV_HTTP", ("--http",), None, _http_address,
            "serve the HTTP API (/api/v1/status; /metrics to clients that may write) on HOST:PORT, "
            "[V6]:PORT, http://HOST:PORT or https://HOST:PORT (with tls_certificate) (pip install 'prserv[web]')",
            metavar="HOST:PORT", shown_default="none"),
    Setting("http_process", "PRSERV_HTTP_PROCESS", ("--http-process",), True, _boolean,
            "serve http from a child process (the same program, read-only on the same database, at "
            "the idle CPU priority, restarted if it exits); false: from the event loop answering get-pr, "
            "which each page then delays (true/false)", metavar="BOOL"),
    Setting("log_file", "PRSERV_LOG", ("-l", "--log"), "prserv.log", _log_file,
            "log filename, '-' for stderr", metavar="FILE",
            shown_default="prserv.log (stderr with --foreground)"),
    Setting("log_level", "PRSERV_LOGLEVEL", ("--loglevel",), "INFO", _log_level,
            "logging level, i.e. CRITICAL, ERROR, WARNING, INFO, DEBUG", metavar="LEVEL"),
    Setting("pidfile", "PRSERV_PIDFILE", ("--pidfile",), None, _optional_path, "daemon pidfile",
            metavar="FILE", shown_default="/tmp/PRServer_<ip>_<port>.pid"),
    Setting("max_connections", "PRSERV_MAX_CONNECTIONS", ("--max-connections",),
            DEFAULT_LIMITS.max_connections, _count,
            "open client connections at most (0: no limit; the open-file limit less 128 caps it); "
            "when full, the longest-idle one is closed to admit a new one", metavar="N",
            limit="max_connections"),
    Setting("max_connections_per_address", "PRSERV_MAX_CONNECTIONS_PER_ADDRESS",
            ("--max-connections-per-address",), DEFAULT_LIMITS.max_connections_per_address, _count,
            "open connections from one address at most; when all are open, that address's longest-idle "
            "one is closed to admit a new one, and only when none is idle is the new one refused with an "
            "invoke-error (0: no limit; unix-socket clients are not counted)", metavar="N",
            limit="max_connections_per_address"),
    Setting("idle_timeout", "PRSERV_IDLE_TIMEOUT", ("--idle-timeout",), DEFAULT_LIMITS.idle_timeout,
            _seconds_or_zero, "close a client connection silent this long (0: never)",
            metavar="SECONDS", limit="idle_timeout", shown_default="%g s" % DEFAULT_LIMITS.idle_timeout),
    Setting("handshake_timeout", "PRSERV_HANDSHAKE_TIMEOUT", ("--handshake-timeout",),
            DEFAULT_LIMITS.handshake_timeout, _seconds_or_zero,
            "time a new connection has for its setup (0: no limit)", metavar="SECONDS",
            limit="handshake_timeout", shown_default="%g s" % DEFAULT_LIMITS.handshake_timeout),
    Setting("max_message_size", "PRSERV_MAX_MESSAGE_SIZE", ("--max-message-size",),
            DEFAULT_LIMITS.max_message, _size,
            "largest request in bytes, chunk streams included (suffix K, M or G)", metavar="BYTES",
            limit="max_message"),
    Setting("max_handshake_line", "PRSERV_MAX_HANDSHAKE_LINE", ("--max-handshake-line",),
            DEFAULT_LIMITS.max_handshake_line, _size, "longest connection-setup line in bytes",
            metavar="BYTES", limit="max_handshake_line"),
    Setting("shutdown_timeout", "PRSERV_SHUTDOWN_TIMEOUT", ("--shutdown-timeout",),
            DEFAULT_LIMITS.shutdown_timeout, _seconds_or_zero,
            "time requests in flight get on SIGTERM/SIGINT", metavar="SECONDS",
            limit="shutdown_timeout", shown_default="%g s" % DEFAULT_LIMITS.shutdown_timeout),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Value:
    value: Any
    source: str       # "default", "file F", "environment PRSERV_X", "flag --x"


class Config:
    """The effective settings; ``config.database`` etc. give the values."""

    def __init__(self, values: Dict[str, Value], config_file: Optional[str] = None,
                 reload: Optional[Callable[[], "Config"]] = None) -> None:
        self.values = values
        self.config_file = config_file
        self._reload = reload

    def reloaded(self) -> "Config":
        """The settings read again from the same flags and environment and the config
        file as it is now (SIGHUP); ``ConfigError`` if they no longer parse."""
        if self._reload is None:
            return self
        return self._reload()

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name].value
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self.values[name].source

    def is_default(self, name: str) -> bool:
        return self.values[name].source == "default"

    def show(self) -> str:
        """TOML text of the effective settings, each line commented with its source."""
        lines = ["# effective prserv configuration%s" % (
            " (config file %s)" % self.config_file if self.config_file else "")]
        width = max(len(name) for name in self.values)
        for name, value in self.values.items():
            text = "%-*s = %s" % (width, name, _toml_value(_shown(name, value.value)))
            lines.append("%-60s # %s" % (text, value.source))
        return "\n".join(lines) + "\n"

    def as_json(self) -> str:
        return json.dumps({name: {"value": _shown(name, value.value), "source": value.source}
                           for name, value in self.values.items()}, indent=2)


def _shown(name: str, value: Any) -> Any:
    """A setting's value as it may be shown: a database URL without its password, a
    token as ``USER:***``."""
    if name == "database" and is_url(value):
        return masked(value)
    if SETTINGS_BY_NAME[name].secret and value:
        return hide_token(value)
    return value


def hide_token(text: Any) -> str:
    """``USER:TOKEN`` -> ``USER:***`` (anything else -> ``***``)."""
    user, sep, _ = str(text).partition(":")
    return "%s:***" % user if sep and 0 < len(user) <= 64 and " " not in user else "***"


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, str)):
        return json.dumps(value, ensure_ascii=False)    # TOML has no surrogate-pair escapes
    return repr(value)


# --------------------------------------------------------------------------- loading

def read_toml(path: str) -> Dict[str, Any]:
    """The file's table; ``ConfigError`` naming the file on any problem."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:          # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError("reading %s needs Python >= 3.11 or the 'tomli' package" % path) from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file %s is not valid TOML: %s" % (path, exc)) from None


def load_config(flags: Optional[Mapping[str, Any]] = None,
                environ: Optional[Mapping[str, str]] = None,
                config_file: Optional[str] = None,
                cwd: Optional[str] = None) -> Config:
    """Merge the layers; ``flags`` maps setting names to values given on the command line
    (absent or None = not given).  ``config_file`` defaults to ``$PRSERV_CONFIG``."""
    flags = {name: value for name, value in (flags or {}).items() if value is not None}
    environ = dict(os.environ if environ is None else environ)
    cwd = os.getcwd() if cwd is None else cwd
    given_file = config_file
    unknown = set(flags) - set(SETTINGS_BY_NAME)
    if unknown:
        raise ValueError("not settings: %s" % ", ".join(sorted(unknown)))

    config_source = "flag --config"
    if config_file is None and environ.get(CONFIG_ENV):
        config_file, config_source = environ[CONFIG_ENV], "environment %s" % CONFIG_ENV
    file_values: Dict[str, Any] = {}
    file_base = cwd
    if config_file is not None:
        config_file = os.path.join(cwd, config_file)
        file_values = read_toml(config_file)
        file_base = os.path.dirname(config_file)
        stray = sorted(set(file_values) - set(SETTINGS_BY_NAME))
        if stray:
            raise ConfigError("config file %s (from %s): unknown setting%s %s; known: %s" % (
                config_file, config_source, "s" if len(stray) > 1 else "", ", ".join(stray),
                ", ".join(SETTINGS_BY_NAME)))

    values: Dict[str, Value] = {}
    for setting in SETTINGS:
        if setting.name in flags:
            raw, source, base = flags[setting.name], "flag %s" % setting.flag, cwd
        elif setting.env in environ:
            raw, source, base = environ[setting.env], "environment %s" % setting.env, cwd
        elif setting.name in file_values:
            raw, source, base = file_values[setting.name], "file %s" % config_file, file_base
        else:
            raw, source, base = setting.default, "default", cwd
        try:
            values[setting.name] = Value(setting.parse(raw, base), source)
        except _Invalid as exc:
            shown = hide_token(raw) if setting.secret else masked(raw) if is_url(raw) else raw
            raise ConfigError("invalid %s %s (from %s): %s" % (
                setting.name, _shorten(shown), source, exc)) from None
    sources = {name: value.source for name, value in values.items()}
    check_database_options(values["database"].value, parse_sync_mode(values["sync_mode"].value),
                           bool(values["mirror"].value), sources)
    wss = [address for address in values["bind"].value if address.startswith("wss://")]
    if wss and not values["tls_certificate"].value:
        raise ConfigError("bind %s (from %s) needs tls_certificate (and tls_key, unless the key is in the "
                          "certificate file)" % (wss[0], values["bind"].source))
    http = values["http"].value
    if http and web.uses_tls(http) and not values["tls_certificate"].value:
        raise ConfigError("http %s (from %s) needs tls_certificate (and tls_key, unless the key is in the "
                          "certificate file)" % (http, values["http"].source))
    check_mirror_and_upstream(values["mirror"].value, values["upstream"].value, sources)
    return Config(values, config_file, lambda: load_config(flags, environ, given_file, cwd))


def _shorten(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def environment_host(environ: Optional[Mapping[str, str]] = None) -> str:
    """The server a client talks to: ``$PRSERV_HOST`` (as in bitbake), else localhost:8585."""
    environ = os.environ if environ is None else environ
    return environ.get("PRSERV_HOST", "").strip() or "localhost:%d" % DEFAULT_PORT



def limits_of(config: Config) -> Limits:
    """The connection limits the settings ask for (the settings with a ``limit``)."""
    return Limits(**{setting.limit: getattr(config, setting.name)
                     for setting in SETTINGS if setting.limit is not None})


def describe_default(setting: Setting) -> str:
    """The default as help texts and README show it."""
    if setting.shown_default is not None:
        return setting.shown_default
    value = setting.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if setting.parse is _size and value % 1024 == 0:
        exponent = max(e for e in range(1, 4) if value % 1024 ** e == 0)
        return "%d%s" % (value // 1024 ** exponent, "KMG"[exponent - 1])
    return str(value)


def markdown_table() -> str:
    """README's table of the settings (a test checks that README holds exactly this)."""
    lines = ["| setting (TOML key) | flag | environment | default | meaning |",
             "|---|---|---|---|---|"]
    for setting in SETTINGS:
        lines.append("| `%s` | `%s` | `%s` | `%s` | %s |" % (
            setting.name, setting.flag, setting.env, describe_default(setting),
            setting.help.replace("|", "\\|")))
    return "\n".join(lines) + "\n"
