"""Exceptions of the PR layer (database, allocation, upstream).

The server turns each of these into an ``invoke-error`` answer naming the problem;
nothing in this hierarchy knows about sockets.
"""


class PRServiceError(Exception):
    """Base class of prserv's own errors."""


class InvalidRevisionError(PRServiceError, ValueError):
    """A value that is not a revision (dotted decimal integers, no leading zeros)."""


class InvalidRequestError(PRServiceError, ValueError):
    """A request field is missing or has the wrong type or an empty value."""


class ReadOnlyError(PRServiceError):
    """A write was attempted on a read-only database."""


class DatabaseError(PRServiceError):
    """The database could not be opened or used."""


class UpstreamError(PRServiceError):
    """The upstream PR server could not answer, or answered nonsense."""


class ConfigError(PRServiceError):
    """A setting with a wrong value; the message names the setting and its source."""
