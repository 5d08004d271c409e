"""``prserv user add|list|remove|new-token``: users and their tokens.

With ``--database DB`` (a SQLite file or a PostgreSQL URL) they work on the database
itself, so the first admin can be made before any server runs; without it they ask
the server (``--server``) with an admin token (``PRSERV_TOKEN`` or ``~/.netrc``).
A token is printed once, when it is made; the database keeps only its hash.
"""

from __future__ import annotations

import argparse
import datetime
import re
import time
from typing import Any, Callable, Dict, List, Optional

from .. import messages, tokens
from ..errors import InvalidRequestError
from ..runtime import users
from .output import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, Failure, Output, exit_statuses
from .requests import connect_client

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dh])\Z")


def expiry_argument(text: str) -> float:
    """``30d``, ``12h`` (from now) or a date ``2027-01-31`` (its start, UTC) -> Unix time."""
    match = _DURATION.match(text.strip())
    if match:
        return time.time() + float(match.group(1)) * (86400 if match.group(2) == "d" else 3600)
    try:
        day = datetime.datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a duration (30d, 12h) or a date (YYYY-MM-DD)") from None
    if day.timestamp() <= time.time():
        raise argparse.ArgumentTypeError("%s is not in the future" % text)
    return day.timestamp()


def _user_document(record: Any) -> Dict[str, Any]:
    """A user from the database (a record) or from a server's answer (already its
    public fields, and maybe its new token)."""
    if isinstance(record, tokens.UserRecord):
        return tokens.public_fields(record)
    return messages.user_of(record)


def _when(stamp: Optional[float]) -> str:
    if stamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _with_token(args: argparse.Namespace, out: Output, document: Dict[str, Any], token: str) -> int:
    document = dict(document, token=token)
    out.result(document, "%s:%s\n(user %s, %s; expires %s. This token is shown once: keep it as "
                         "PRSERV_TOKEN or in ~/.netrc.)" % (
                             document["username"], token, document["username"],
                             tokens.permissions_text(document["permissions"]), _when(document["expires"])))
    return EXIT_OK


@exit_statuses(server=True)
def cmd_user_add(args: argparse.Namespace, out: Output) -> int:
    try:
        permissions = sorted(tokens.parse_permissions([args.permissions]))
        tokens.check_username(args.name)
    except ValueError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    if args.database:
        record, token = users.add_user(args.database, args.name, permissions, args.expires)
        return _with_token(args, out, _user_document(record), token)
    with connect_client(args) as client:
        answer = client.new_user(args.name, permissions, args.expires)
    return _with_token(args, out, _user_document(answer), messages.token_of(answer))


@exit_statuses({EXIT_NOT_FOUND: "no such user"}, server=True)
def cmd_user_new_token(args: argparse.Namespace, out: Output) -> int:
    if args.database:
        try:
            record, token = users.new_token(args.database, args.name, args.expires)
        except (InvalidRequestError, ValueError) as exc:
            raise Failure(EXIT_NOT_FOUND, str(exc)) from None
        return _with_token(args, out, _user_document(record), token)
    with connect_client(args) as client:
        answer = client.refresh_token(args.name, args.expires)
    return _with_token(args, out, _user_document(answer), messages.token_of(answer))


@exit_statuses({EXIT_NOT_FOUND: "no such user"}, server=True)
def cmd_user_remove(args: argparse.Namespace, out: Output) -> int:
    if args.database:
        removed = users.remove_user(args.database, args.name)
    else:
        with connect_client(args) as client:
            removed = messages.deleted_of(client.delete_user(args.name))
    out.result({"username": args.name, "removed": removed},
               "removed %s" % args.name if removed else "no user %s" % args.name)
    return EXIT_OK if removed else EXIT_NOT_FOUND


@exit_statuses(server=True)
def cmd_user_list(args: argparse.Namespace, out: Output) -> int:
    if args.database:
        found: List[Any] = users.list_users(args.database)
    else:
        with connect_client(args) as client:
            found = client.get_all_users()
    documents = [_user_document(record) for record in found]
    out.result({"users": documents}, "\n".join(
        "%-24s %-24s expires %s" % (d["username"], tokens.permissions_text(d["permissions"]), _when(d["expires"]))
        for d in documents) or "no users")
    return EXIT_OK


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``prserv user ACTION`` (``command(name, handler, help, under=None)``)."""
    group = command("user", None, "users and their tokens: add, list, remove, new-token")
    actions = group.add_subparsers(dest="user_action", metavar="ACTION", required=True)

    def action(name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sub = command(name, handler, help, under=actions)
        sub.add_argument("-f", "--database", metavar="FILE|URL",
                         help="work on this database directly (else ask --server with an admin token)")
        return sub

    sub = action("add", cmd_user_add, "add a user (or give one new permissions) and print its token")
    sub.add_argument("name")
    sub.add_argument("--permissions", required=True, metavar="P[,P...]",
                     help="read, write, mirror, admin (admin implies the others)")
    sub.add_argument("--expires", type=expiry_argument, metavar="30d|12h|YYYY-MM-DD",
                     help="the token stops working then (default: never)")
    sub = action("new-token", cmd_user_new_token, "give a user a new token (the old one stops working)")
    sub.add_argument("name")
    sub.add_argument("--expires", type=expiry_argument, metavar="30d|12h|YYYY-MM-DD")
    action("remove", cmd_user_remove, "remove a user").add_argument("name")
    action("list", cmd_user_list, "the users, their permissions and expiry")
