"""What the commands print and the exit codes they return.

Only this package prints or chooses exit codes; the library raises typed errors
(``prserv.errors``) and ``prserv.cli.tool.main`` maps them to these codes.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional, TextIO

EXIT_OK = 0
EXIT_NOT_FOUND = 1          # test-pr / max-package-pr: no value; test-package: unknown package
EXIT_USAGE = 2              # bad arguments or settings (argparse's own code)
EXIT_UNREACHABLE = 3        # no connection to the server
EXIT_REFUSED = 4            # the server answered with an error, or is read-only for a write
EXIT_INCOMPLETE = 5         # import-file: some lines were skipped; migrate: some rows
EXIT_VERIFY = 6             # backup / restore / dump: the copy fails its integrity check

EXIT_CODES_HELP = """
  0 success, 1 not found, 2 bad arguments, 3 server unreachable,
  4 refused by the server (backup: the file is held by a buffered-mode server),
  5 import-file skipped some lines, 6 a backup fails its integrity check.
"""


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
