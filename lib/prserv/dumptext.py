"""The text of a ``dump-db`` answer, ``{"dump": "<SQL text>"}``, in pieces both ways.

The server encodes a database's SQL dump as it reads it (``answer_pieces``) and a
client decodes what arrives chunk line by chunk line (``DumpDecoder``), so neither
holds the whole dump in memory.  No I/O beyond writing to the file given.
"""

import json
import re
from typing import IO, Iterable, Iterator, List

from .errors import InvalidDumpAnswer

DUMP_BATCH_CHARS = 32 * 1024
"""Dump text JSON-escaped at a time by the server (one ``json.dumps`` call)."""


def answer_pieces(lines: Iterable[str], batch_chars: int = DUMP_BATCH_CHARS) -> Iterator[str]:
    """``{"dump": "<text>"}`` in pieces, the text being the lines each ending in
    ``\\n``: the same characters as ``json.dumps({"dump": text})`` (JSON escapes
    each character on its own, so escaping batches of lines gives the whole's
    escape), with at most ``batch_chars`` plus one line of text held at a time."""
    yield '{"dump": "'
    batch: List[str] = []
    size = 0
    for line in lines:
        batch.append(line)
        batch.append("\n")
        size += len(line) + 1
        if size >= batch_chars:
            yield json.dumps("".join(batch))[1:-1]
            batch, size = [], 0
    if batch:
        yield json.dumps("".join(batch))[1:-1]
    yield '"}'


_ANSWER_HEAD = re.compile(r'\{\s*"dump"\s*:\s*"')
_ANSWER_TAIL = re.compile(r'"\s*\}\s*\Z')


class DumpDecoder:
    """Writes the text of a ``{"dump": "..."}`` answer to a file as its pieces arrive
    (chunk lines), so a client's memory does not grow with the database.

    The JSON string is decoded up to the last complete ``\\n`` escape of what has
    arrived; the rest waits for the next piece.
    """

    def __init__(self, fd: IO[str]) -> None:
        self.fd = fd
        self.written = 0
        self._held = ""
        self._inside = False

    def feed(self, piece: str) -> None:
        self._held += piece
        if not self._inside:
            match = _ANSWER_HEAD.match(self._held)
            if match is None:
                if len(self._held) >= 64:           # far longer than any valid head
                    raise InvalidDumpAnswer("not a dump answer: %r" % self._held[:100])
                return
            self._held = self._held[match.end():]
            self._inside = True
        cut = _last_newline_escape_end(self._held)
        if cut:
            self._write(self._held[:cut])
            self._held = self._held[cut:]

    def finish(self) -> int:
        """Check the answer's end and write the rest; return characters written."""
        match = _ANSWER_TAIL.search(self._held) if self._inside else None
        if match is None:
            raise InvalidDumpAnswer("the dump answer is incomplete")
        self._write(self._held[:match.start()])
        self._held = ""
        return self.written

    def _write(self, escaped: str) -> None:
        try:
            text = json.loads('"%s"' % escaped)
        except ValueError as exc:
            raise InvalidDumpAnswer("bad JSON string in the dump answer: %s" % exc) from None
        self.fd.write(text)
        self.written += len(text)


def _last_newline_escape_end(escaped: str) -> int:
    """Index just after the last ``\\n`` escape of a JSON string body (0: none).

    A backslash starts an escape when an even number of backslashes precede it
    in its run (``\\\\`` is an escaped backslash, followed by a plain ``n``)."""
    end = len(escaped)
    while True:
        i = escaped.rfind("\\n", 0, end)
        if i < 0:
            return 0
        run = i
        while run > 0 and escaped[run - 1] == "\\":
            run -= 1
        if (i - run) % 2 == 0:
            return i + 2
        end = i + 1
