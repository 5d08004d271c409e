"""What the commands print and the exit codes they return.

Only this package prints or chooses exit codes; the library raises typed errors
(``prserv.errors``) and ``prserv.cli.tool.main`` maps them to these codes.  Each
command declares the codes it can return once, on its handler (``exit_statuses``):
its ``--help`` lists them from there, ``tool.main`` reads there whether the command
talks to a server, and tests/test_tool.py holds the declaration to the ``EXIT_*``
names the handler and the functions it calls use.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from typing import Any, Callable, Dict, Iterable, Optional, TextIO, Tuple, TypeVar

EXIT_OK = 0
EXIT_NOT_FOUND = 1          # test-pr / max-package-pr: no value; test-package: unknown package
EXIT_USAGE = 2              # bad arguments or settings (argparse's own code)
EXIT_UNREACHABLE = 3        # no connection to the server
EXIT_REFUSED = 4            # the server answered with an error, or is read-only for a write
EXIT_INCOMPLETE = 5         # import-file: some lines were skipped; migrate: some rows
EXIT_VERIFY = 6             # backup / restore / dump: the copy fails its integrity check
EXIT_CLOSED_OUTPUT = 128 + signal.SIGPIPE   # 141: stdout's reader went away (| head), nothing printed

EXIT_MEANINGS: Dict[int, str] = {
    EXIT_OK: "success",
    EXIT_NOT_FOUND: "not found",
    EXIT_USAGE: "bad arguments or settings",
    EXIT_UNREACHABLE: "server unreachable",
    EXIT_REFUSED: "refused by the server",
    EXIT_INCOMPLETE: "some input skipped",
    EXIT_VERIFY: "a copy fails its integrity check",
    EXIT_CLOSED_OUTPUT: "standard output closed by its reader",
}
"""What each code means; a command's own help may say it more precisely
(``exit_statuses``)."""
_OVERVIEW_NOTES = {
    EXIT_REFUSED: "backup: the file is held by a buffered-mode server",
    EXIT_INCOMPLETE: "import-file: lines, migrate: rows",
    EXIT_CLOSED_OUTPUT: "as in | head; nothing printed",
}

EVERY_COMMAND: Tuple[int, ...] = (EXIT_OK, EXIT_USAGE, EXIT_CLOSED_OUTPUT)
"""Codes any command can return: argparse and ``tool.main`` (bad settings, a
database that cannot be opened) refuse with 2; a closed stdout ends any with 141."""
SERVER_ERRORS: Tuple[int, ...] = (EXIT_UNREACHABLE, EXIT_REFUSED)
"""What ``tool.main`` returns for the errors of a command that talks to a server
(no connection; an invoke-error or a refused token)."""


def _listed(meanings: Dict[int, str]) -> str:
    return ", ".join("%d %s" % item for item in meanings.items()) + "."


EXIT_CODES_HELP = "\n" + textwrap.fill(
    _listed({code: meaning + (" (%s)" % _OVERVIEW_NOTES[code] if code in _OVERVIEW_NOTES else "")
             for code, meaning in EXIT_MEANINGS.items()}),
    86, initial_indent="  ", subsequent_indent="  ") + "\n"
"""The list of ``prserv --help`` (whose description is not re-wrapped)."""


class ExitStatuses:
    """The codes one command can return and what each means for it, in order."""

    def __init__(self, specific: Dict[int, str], server: bool) -> None:
        codes = set(EVERY_COMMAND) | set(specific) | (set(SERVER_ERRORS) if server else set())
        self.meanings = {code: specific.get(code) or EXIT_MEANINGS[code] for code in sorted(codes)}
        self.server = server
        """It talks to a server: an ``OSError`` is the network's (3), not a local file's (2)."""

    @property
    def codes(self) -> Tuple[int, ...]:
        return tuple(self.meanings)

    def epilog(self) -> str:
        return "exit status: " + _listed(self.meanings)


Handler = TypeVar("Handler", bound=Callable[..., int])


def exit_statuses(specific: Optional[Dict[int, str]] = None,
                  server: bool = False) -> Callable[[Handler], Handler]:
    """Declare a handler's exit codes: those it returns or raises (``Failure``) itself
    with what each means for it (``specific``), and ``server`` if it talks to a
    server; ``EVERY_COMMAND``'s (and ``SERVER_ERRORS``' for a server) are added."""
    def declare(handler: Handler) -> Handler:
        handler.exit_statuses = ExitStatuses(specific or {}, server)     # type: ignore[attr-defined]
        return handler
    return declare


class OutputClosed(Exception):
    """Standard output's reader went away (``prserv export | head -1``).  Not an
    ``OSError``: ``tool.main`` takes those for the network's, and a broken pipe to
    the server is one too."""


class _GuardedStdout:
    """``sys.stdout`` while a command runs: a write that finds the pipe closed raises
    ``OutputClosed``; everything else is the real stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise OutputClosed() from exc

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise OutputClosed() from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def ending_quietly_on_closed_stdout(command: Callable[[], int]) -> int:
    """Run ``command`` (a whole ``main``) with ``sys.stdout`` guarded; if stdout's reader
    went away, end as other Unix tools do: nothing printed, ``EXIT_CLOSED_OUTPUT``
    (the status a shell reports for a process killed by SIGPIPE).  Not by restoring
    SIGPIPE's default: the client writes to sockets too, and a server closing a
    connection would then kill the command instead of letting it retry.

    What is still buffered is flushed here, so that a closed pipe shows up now and
    not as a traceback at interpreter exit; after one, stdout's descriptor is pointed
    at /dev/null for the same reason."""
    real = sys.stdout
    guarded = _GuardedStdout(real)
    sys.stdout = guarded                            # type: ignore[assignment]
    try:
        try:
            return command()
        finally:
            guarded.flush()
    except OutputClosed:
        _discard(real)
        return EXIT_CLOSED_OUTPUT
    finally:
        sys.stdout = real


def _discard(stream: TextIO) -> None:
    """Send what ``stream`` still holds, and anything later, to /dev/null."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):   # not a file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class Failure(Exception):
    """Ends the command with ``code`` after printing ``message`` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Output:
    """Text for people, or one JSON document (``--json``) for scripts."""

    def __init__(self, as_json: bool, stream: Optional[TextIO] = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def result(self, document: Dict[str, Any], text: Optional[str]) -> None:
        if self.as_json:
            print(json.dumps(document), file=self.stream)
        elif text is not None:
            print(text, file=self.stream)


def text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
