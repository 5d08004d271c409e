"""The PR requests and their answers as Python values: each shape spelled once.

The clients build their requests here, the upstream pool builds the same ones, and
the server shapes its answers with the same helpers (docs/protocol.md §5 has the
wire form of each).  No I/O: these are plain dictionaries.
"""

from typing import Any, Dict, Optional

PING = "ping"
GET_PR = "get-pr"
TEST_PR = "test-pr"
TEST_PACKAGE = "test-package"
MAX_PACKAGE_PR = "max-package-pr"
IMPORT_ONE = "import-one"
EXPORT = "export"
IS_READONLY = "is-readonly"
DUMP_DB = "dump-db"
MIRROR_PULL = "mirror-pull"
MIRROR_AUDIT = "mirror-audit"
MIRROR_STATUS = "mirror-status"
GET_STATS = "get-stats"
AUTH = "auth"
RESET_STATS = "reset-stats"
NEW_USER = "new-user"
REFRESH_TOKEN = "refresh-token"
DELETE_USER = "delete-user"
GET_ALL_USERS = "get-all-users"

VALUE = "value"
"""The answer field of get-pr, test-pr, test-package, max-package-pr and import-one."""
READONLY = "readonly"
"""The answer field of is-readonly."""

Message = Dict[str, Any]


def _package(version: str, pkgarch: str) -> Message:
    return {"version": version, "pkgarch": pkgarch}


def _checksum(version: str, pkgarch: str, checksum: str) -> Message:
    return {"version": version, "pkgarch": pkgarch, "checksum": checksum}


def get_pr(version: str, pkgarch: str, checksum: str, history: bool = False) -> Message:
    return {GET_PR: dict(_checksum(version, pkgarch, checksum), history=history)}


def test_pr(version: str, pkgarch: str, checksum: str, history: bool = False) -> Message:
    return {TEST_PR: dict(_checksum(version, pkgarch, checksum), history=history)}


def test_package(version: str, pkgarch: str) -> Message:
    return {TEST_PACKAGE: _package(version, pkgarch)}


def max_package_pr(version: str, pkgarch: str) -> Message:
    return {MAX_PACKAGE_PR: _package(version, pkgarch)}


def import_one(version: str, pkgarch: str, checksum: str, value: Any) -> Message:
    return {IMPORT_ONE: dict(_checksum(version, pkgarch, checksum), value=value)}


def export(version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
           colinfo: bool, history: bool = False) -> Message:
    return {EXPORT: {"version": version, "pkgarch": pkgarch, "checksum": checksum,
                     "colinfo": colinfo, "history": history}}


def is_readonly() -> Message:
    return {IS_READONLY: {}}


def dump_db() -> Message:
    return {DUMP_DB: {}}


def mirror_pull(since: Optional[str], limit: int, wait: float, count: bool = False) -> Message:
    return {MIRROR_PULL: {"since": since, "limit": limit, "wait": wait, "count": count}}


def mirror_audit(after: Optional[str], until: str, rows: bool = False) -> Message:
    return {MIRROR_AUDIT: {"after": after, "until": until, "rows": rows}}


def mirror_status() -> Message:
    return {MIRROR_STATUS: {}}


def get_stats() -> Message:
    return {GET_STATS: {}}


def value_answer(value: Any) -> Message:
    return {VALUE: value}


def readonly_answer(read_only: bool) -> Message:
    return {READONLY: read_only}


def export_row(version: str, pkgarch: str, checksum: str, value: Optional[str]) -> Message:
    """One ``datainfo`` entry of an export answer."""
    return {"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value}


def answer_field(answer: Any, field: str) -> Any:
    """A field of an answer; None for an empty or null answer (what bitbake's client
    returns, e.g. for import-one on a read-only server)."""
    if answer:
        return answer[field]
    return None


def auth(username: str, token: str) -> Message:
    return {AUTH: {"username": username, "token": token}}


def reset_stats() -> Message:
    return {RESET_STATS: {}}


def new_user(username: str, permissions: Any, expires: Optional[float] = None) -> Message:
    return {NEW_USER: {"username": username, "permissions": list(permissions), "expires": expires}}


def refresh_token(username: str, expires: Optional[float] = None) -> Message:
    return {REFRESH_TOKEN: {"username": username, "expires": expires}}


def delete_user(username: str) -> Message:
    return {DELETE_USER: {"username": username}}


def get_all_users() -> Message:
    return {GET_ALL_USERS: {}}


def error_text(answer: Any) -> str:
    """What an invoke-error answer says (or the answer itself, for anything else)."""
    if isinstance(answer, dict) and isinstance(answer.get("invoke-error"), dict):
        return str(answer["invoke-error"].get("message"))
    return repr(answer)
