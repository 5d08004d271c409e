"""Every exception the package raises, and where each comes from.

The tree (``prserv.asyncrpc.exceptions`` holds the protocol layer's part, which
knows nothing of PR values; everything else is defined here)::

    Exception
    ├── PRServiceError                  prserv's own errors
    │   ├── InvalidRevisionError        (also ValueError) not a revision value
    │   ├── InvalidRequestError         (also ValueError) a request field is wrong
    │   ├── ReadOnlyError               a write on a read-only database
    │   ├── PermissionDenied            a request the client's token does not allow
    │   ├── AuthenticationError         a client's own token was refused (auth)
    │   ├── DatabaseError               the database cannot be opened or used
    │   │   └── DatabaseUnavailable     ... it stayed out for all of db_outage_wait
    │   ├── UpstreamError               the upstream server failed or answered nonsense
    │   ├── MirrorError                 a mirror cannot follow its source
    │   │   ├── SourceError             the source answered nonsense (retried)
    │   │   ├── DivergedError           the source no longer holds the mirror's history
    │   │   └── CatchingUp              a mirror before its first complete copy
    │   ├── ConfigError                 a setting's value is wrong (names its source)
    │   │   ├── DaemonError             a daemon cannot be started or stopped
    │   │   └── PRServiceConfigError    bitbake's name, raised to its cooker
    │   ├── BackupError                 a backup, restore or dump cannot be made
    │   │   ├── DatabaseBusy            the file is held by another process
    │   │   └── VerificationFailed      the copy fails its integrity check
    │   └── InvalidDumpAnswer           (also ValueError) a dump-db answer is malformed
    └── AsyncRPCError                   (prserv.asyncrpc.exceptions) the wire protocol
        ├── ProtocolError               bad framing, JSON or setup
        │   ├── HandshakeError          connection setup refused
        │   └── LineTooLongError        a line or message over its limit
        ├── ClientError                 a request the server cannot accept
        ├── ServerError                 the server failed while handling a request
        ├── ConnectionClosedError       (also ConnectionError) the peer closed
        │   └── DumpAborted             (prserv.server.dump) a dump failed half-way
        ├── ReadTimeoutError            (also ConnectionError) no answer in time
        └── InvokeError                 an {"invoke-error": ...} answer
            └── RequestRefused          ... after which the session goes on

A server turns ``PRServiceError`` raised by a request into an invoke-error answer
naming the problem (``DatabaseError`` is also logged as an error, except
``DatabaseUnavailable``, whose outage is logged once); the command line
(``prserv.cli``) maps these classes to its exit codes.  Library code never prints.
"""

from typing import Any, Dict


class PRServiceError(Exception):
    """Base class of prserv's own errors."""


class InvalidRevisionError(PRServiceError, ValueError):
    """A value that is not a revision (dotted decimal integers, no leading zeros)."""


class InvalidRequestError(PRServiceError, ValueError):
    """A request field is missing or has the wrong type or an empty value."""


class ReadOnlyError(PRServiceError):
    """A write was attempted on a read-only database."""


class PermissionDenied(PRServiceError):
    """The request needs a permission the client's token (or its absence) lacks."""


class AuthenticationError(PRServiceError):
    """This client's credentials (``USER:TOKEN``) were refused by the server."""


class DatabaseError(PRServiceError):
    """The database could not be opened or used."""


class DatabaseUnavailable(DatabaseError):
    """The database stayed unreachable (or not the primary) for as long as a request
    waits for it (``db_outage_wait``); the outage itself is logged once, not per
    request."""


class UpstreamError(PRServiceError):
    """The upstream PR server could not answer, or answered nonsense."""


class MirrorError(PRServiceError):
    """A mirror cannot follow its source."""


class SourceError(MirrorError):
    """A mirror's source answered something that is not a valid feed answer: nothing
    of it is applied, and the mirror reconnects."""


class DivergedError(MirrorError):
    """The source does not hold the history the mirror copied (another database, an
    older copy, renumbered rows): the mirror stops applying and keeps serving."""


class CatchingUp(MirrorError):
    """A mirror is asked for a value before its first complete copy."""


class ConfigError(PRServiceError):
    """A setting with a wrong value; the message names the setting and its source."""


class DaemonError(ConfigError):
    """The daemon could not be started or stopped; the message says why."""


class PRServiceConfigError(ConfigError):
    """Bad PR service configuration (the name bitbake's cooker catches)."""


class BackupError(PRServiceError):
    """A backup or restore cannot be made; the message says why."""


class DatabaseBusy(BackupError):
    """The file is held by another process (a buffered-mode server, or a server on
    the file a restore would replace)."""


class VerificationFailed(BackupError):
    """The copy exists but ``PRAGMA integrity_check`` did not answer ``ok``."""

    def __init__(self, message: str, report: Dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class InvalidDumpAnswer(PRServiceError, ValueError):
    """What arrived is not a well-formed ``{"dump": "..."}`` answer."""
