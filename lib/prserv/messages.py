"""The PR requests and their answers as Python values: each shape spelled once.

The clients build their requests here, the upstream pool builds the same ones, and
the server shapes its answers with the same helpers (docs/protocol.md §5 has the
wire form of each).  No I/O: these are plain dictionaries.

Each answer the server sends has one builder here (``..._answer``), and each answer
a client reads has one parser (``..._of``, ``FeedAnswer``): a field's name is
written in this module and nowhere else.
"""

from typing import Any, Dict, Iterable, List, Optional, Tuple

from .errors import SourceError
from .revision import is_revision

PROTO_NAME = "PRSERVICE"
"""The protocol name of the connection's setup line (``PRSERVICE 1.0``)."""
PROTO_VERSION = "1.0"

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


def mirror_pull(since: Optional[str], limit: int, wait: float, count: bool = False,
                given: bool = False) -> Message:
    """``given``: ask for each row's time (sent only then: the request of a mirror that
    does not ask stays as it was)."""
    request = {"since": since, "limit": limit, "wait": wait, "count": count}
    if given:
        request["given"] = True
    return {MIRROR_PULL: request}


def mirror_audit(after: Optional[str], until: str, rows: bool = False) -> Message:
    return {MIRROR_AUDIT: {"after": after, "until": until, "rows": rows}}


def mirror_status() -> Message:
    return {MIRROR_STATUS: {}}


def get_stats(figures: bool = False) -> Message:
    return {GET_STATS: {"figures": True} if figures else {}}


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


# --------------------------------------------------------------------------- answers
# A builder for each answer the server sends, a parser for each one a client reads.

def value_answer(value: Any) -> Message:
    """get-pr, test-pr, test-package, max-package-pr, import-one (read with
    ``answer_field(answer, VALUE)``)."""
    return {VALUE: value}


def readonly_answer(read_only: bool) -> Message:
    return {READONLY: read_only}


def answer_field(answer: Any, field: str) -> Any:
    """A field of an answer; None for an empty or null answer (what bitbake's client
    returns, e.g. for import-one on a read-only server); ``ValueError`` for an answer
    that is neither nor holds the field (a server answering nonsense)."""
    if not answer:
        return None
    if not isinstance(answer, dict) or field not in answer:
        raise ValueError("expected an answer with %r, got %.200r" % (field, answer))
    return answer[field]


METAINFO, DATAINFO = "metainfo", "datainfo"
"""The two fields of an export answer: ``export_metainfo``, a list of ``export_row``."""


def export_metainfo(table: str, core_ver: str, col_info: List[Dict[str, Any]]) -> Message:
    """An export answer's ``metainfo`` when ``colinfo`` was asked for (else ``{}``)."""
    return {"tbl_name": table, "core_ver": core_ver, "col_info": col_info}


def export_row(version: str, pkgarch: str, checksum: str, value: Optional[str]) -> Message:
    """One ``datainfo`` entry of an export answer."""
    return {"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value}


def export_head(metainfo_text: str) -> str:
    """An export answer's text up to its first row (the rows follow, then
    ``EXPORT_TAIL``): the answer is sent as it is read."""
    return '{"%s": %s, "%s": [' % (METAINFO, metainfo_text, DATAINFO)


EXPORT_TAIL = "]}"


def export_answer(metainfo: Dict[str, Any], datainfo: List[Dict[str, Any]]) -> Message:
    """An export answer as one value (the server sends it as text: ``export_head``)."""
    return {METAINFO: metainfo, DATAINFO: datainfo}


def export_of(answer: Any) -> Optional[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """``(metainfo, datainfo)`` of an export answer (None for an empty answer)."""
    if answer:
        return answer[METAINFO], answer[DATAINFO]
    return None


DUMP = "dump"
"""The field of a one-line dump-db answer (``dumptext`` makes the answer)."""


def dump_of(answer: Any) -> Optional[str]:
    """The SQL text of a one-line dump-db answer (None: not such an answer)."""
    if isinstance(answer, dict) and isinstance(answer.get(DUMP), str):
        return answer[DUMP]
    return None


# -- the change feed (docs/protocol.md §5.4)

FEED_FIELDS = ("identity", "origin", "complete", "reached", "at", "rows", "pending")
"""The fields of a mirror-pull answer (those of ``storage.engine.FeedPage``)."""
MAX_POSITION_LENGTH = 200
MAX_IDENTITY_LENGTH = 200
MAX_TIME = 2 ** 63 - 1
"""The largest time a feed row may carry (microseconds; a 64-bit signed integer)."""


def mirror_pull_answer(page: Any) -> Message:
    """The mirror-pull answer of a feed page (``Engine.changes``: anything with the
    attributes ``FEED_FIELDS``)."""
    answer = {field: getattr(page, field) for field in FEED_FIELDS}
    if page.at is not None:
        answer["at"] = list(page.at)
    return answer


class FeedAnswer:
    """A ``mirror-pull`` answer, checked (``SourceError`` if it is not valid):
    ``FEED_FIELDS`` as attributes, ``at`` and each row a tuple -- of 6 fields when the
    source sent the row's time (``storage.engine.TimedRow``), else of 5 (a source that
    predates times ignores the request's ``given``)."""

    __slots__ = FEED_FIELDS

    def __init__(self, answer: Any, limit: int) -> None:
        if not isinstance(answer, dict):
            raise SourceError("the answer is not a JSON object: %.100r" % (answer,))
        identity, origin, complete, reached, at, rows, pending = (answer.get(field) for field in FEED_FIELDS)
        if identity is not None and not _short_text(identity, MAX_IDENTITY_LENGTH):
            raise SourceError("identity is not a string: %.100r" % (identity,))
        if not all(isinstance(flag, bool) for flag in (origin, complete, reached)):
            raise SourceError("origin, complete and reached must be booleans")
        if pending is not None and (not isinstance(pending, int) or isinstance(pending, bool) or pending < 0):
            raise SourceError("pending is not a count: %.100r" % (pending,))
        self.identity: Optional[str] = identity
        self.origin: bool = origin
        self.complete: bool = complete
        self.reached: bool = reached
        self.pending: Optional[int] = pending
        """Rows the source holds after these (None: not counted)."""
        self.at: Optional[Tuple[str, ...]] = None if at is None else feed_row(at, 4, "the row at the position")
        if not isinstance(rows, list):
            raise SourceError("rows is not a list")
        if len(rows) > limit:
            raise SourceError("%d rows where at most %d were asked for" % (len(rows), limit))
        self.rows: List[Tuple[Any, ...]] = [_positioned_row(row) for row in rows]
        if len({row[0] for row in self.rows}) != len(self.rows):
            raise SourceError("a position appears twice in one answer")
        if self.rows and self.identity is None:
            raise SourceError("rows without the identity of their history")


def _short_text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= longest


def _positioned_row(value: Any) -> Tuple[Any, ...]:
    """A feed row ``[position, version, pkgarch, checksum, value]``, or the same with
    the time it was given last (``_timed_row``), as a tuple (checked field by field in
    one expression first: this runs for every row copied)."""
    if type(value) is list and len(value) == 6:
        return _timed_row(value)
    if type(value) is list and len(value) == 5:
        position, version, pkgarch, checksum, revision = value
        if type(position) is str and type(version) is str and type(pkgarch) is str \
                and type(checksum) is str and type(revision) is str and position and version \
                and pkgarch and checksum and len(position) <= MAX_POSITION_LENGTH and is_revision(revision):
            return position, version, pkgarch, checksum, revision
    return feed_row(value, 5, "a row")


def _timed_row(value: List[Any]) -> Tuple[Any, ...]:
    """A feed row with its time: microseconds since the epoch (a non-negative integer
    that a database's 64-bit integer holds, not a boolean) or null for unknown."""
    given = value[5]
    if given is not None and (type(given) is not int or not 0 <= given <= MAX_TIME):
        raise SourceError("a row's time is not null or a count of microseconds: %.100r" % (value,))
    return _positioned_row(value[:5]) + (given,)


def feed_row(value: Any, length: int, what: str) -> Tuple[str, ...]:
    """A row of the feed as a tuple of non-empty strings, its last one a revision
    (``SourceError`` naming ``what`` otherwise); of 5 fields, the first is a position."""
    if not isinstance(value, list) or len(value) != length:
        raise SourceError("%s is not a list of %d fields: %.100r" % (what, length, value))
    if not all(isinstance(field, str) and field for field in value):
        raise SourceError("%s has a field that is not a non-empty string: %.100r" % (what, value))
    if length == 5 and len(value[0]) > MAX_POSITION_LENGTH:
        raise SourceError("a position longer than %d characters" % MAX_POSITION_LENGTH)
    if not is_revision(value[-1]):
        raise SourceError("%s holds a value that is not a revision: %.100r" % (what, value[-1]))
    return tuple(value)


def mirror_audit_answer(count: Optional[int], digest: Optional[str],
                        rows: Optional[List[Any]] = None) -> Message:
    """A mirror-audit answer: the count and digest of the rows in the range (both None
    when the range is not held), and the rows themselves when asked for."""
    answer: Message = {"count": count, "digest": digest}
    if rows is not None:
        answer["rows"] = rows
    return answer


def mirror_audit_of(answer: Any) -> Optional[Tuple[int, str]]:
    """``(count, digest)`` of a mirror-audit answer; None when the source does not hold
    the range (a mirror not this far yet); ``SourceError`` for anything else."""
    if not isinstance(answer, dict):
        raise SourceError("mirror-audit answer is not a JSON object")
    count, digest = answer.get("count"), answer.get("digest")
    if count is None:
        return None
    if not isinstance(count, int) or not isinstance(digest, str):
        raise SourceError("mirror-audit answer without count and digest")
    return count, digest


def mirror_audit_rows_of(answer: Any) -> Dict[str, Tuple[str, ...]]:
    """The rows of a mirror-audit answer asked with ``rows``: position -> the row's
    other fields (``SourceError`` if they are missing or not rows)."""
    rows = answer.get("rows") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise SourceError("mirror-audit answer without its rows")
    checked = [feed_row(row, 5, "an audited row") for row in rows]
    return {row[0]: row[1:] for row in checked}


MIRROR = "mirror"
"""The field of a mirror-status answer: the state, or null on a server that is not a mirror."""


def mirror_status_answer(status: Optional[Dict[str, Any]]) -> Message:
    return {MIRROR: status}


def mirror_status_of(answer: Any) -> Optional[Dict[str, Any]]:
    return answer_field(answer, MIRROR)


# -- figures (docs/protocol.md §5.5)

def stats_answer(requests: Dict[str, Any], commands: Dict[str, Any], connections: int, allocations: int,
                 upstream: Optional[Dict[str, Any]], mirror: Optional[Dict[str, Any]],
                 figures: Optional[Dict[str, Any]] = None) -> Message:
    """The get-stats (and reset-stats) answer; ``mirror``: the mirror's status, of which
    the answer holds the state and how far behind it is; ``figures``: what ``/metrics``
    show, when they were asked for."""
    answer = {
        "requests": requests, "commands": commands, "connections": connections, "allocations": allocations,
        "upstream": upstream,
        "mirror": None if mirror is None else {
            field: mirror[field] for field in ("state", "rows_behind", "seconds_since_contact")},
    }
    if figures is not None:
        answer["figures"] = figures
    return answer


def stats_of(answer: Any) -> Dict[str, Any]:
    """A get-stats answer, checked (``ValueError`` if malformed)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("requests"), dict):
        raise ValueError("get-stats answered with a malformed message: %.200r" % (answer,))
    return answer


# -- users and tokens (docs/protocol.md §5.6)

def auth_answer(username: str, permissions: Iterable[str]) -> Message:
    return {"username": username, "permissions": sorted(permissions)}


def granted_permissions_of(answer: Any) -> Optional[List[str]]:
    """The permissions an auth answer grants; None if the token was refused."""
    if not isinstance(answer, dict) or not isinstance(answer.get("permissions"), list):     # an invoke-error has none
        return None
    return answer["permissions"]


USER_FIELDS = ("username", "permissions", "created", "expires")
"""A user's fields in answers (``tokens.public_fields``): never its token or the hash."""
TOKEN = "token"


def user_answer(public_fields: Dict[str, Any], token: str) -> Message:
    """The answer of new-user and refresh-token: the user (``tokens.public_fields``)
    and its new token, shown in this answer only."""
    return dict(public_fields, **{TOKEN: token})


def user_of(answer: Any) -> Dict[str, Any]:
    """A user's fields (``USER_FIELDS``) from a new-user or refresh-token answer, or
    from an entry of get-all-users'."""
    return {field: answer[field] for field in USER_FIELDS}


def token_of(answer: Any) -> str:
    """The new token of a new-user or refresh-token answer."""
    return answer[TOKEN]


DELETED = "deleted"


def deleted_user_answer(username: str, deleted: bool) -> Message:
    return {"username": username, DELETED: deleted}


def deleted_of(answer: Any) -> bool:
    """Whether a delete-user answer says the user was there (and is removed)."""
    return bool(answer[DELETED])


USERS = "users"
"""The field of a get-all-users answer."""


def users_answer(users: List[Dict[str, Any]]) -> Message:
    return {USERS: users}


def users_of(answer: Any) -> Optional[List[Dict[str, Any]]]:
    return answer_field(answer, USERS)
