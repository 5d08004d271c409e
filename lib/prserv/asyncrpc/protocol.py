"""The asyncrpc wire format as plain functions and small state machines (no I/O).

Everything here works on bytes and strings handed in by a transport, so it can be
tested without sockets.  What goes on the wire (docs/protocol.md):

* connection setup: ``<NAME> <MAJOR>.<MINOR>``, ``needs-headers: true|false``, any
  number of ``name: value`` header lines, an empty line; the server answers with its
  own header block only when the client asked for it;
* then one JSON value per line.  A JSON text of ``MAX_CHUNK - 1`` (32767) characters
  or more travels as a chunk stream: the line ``{"chunk-stream": null}``, the text cut
  into 32767-character lines, and an empty line.
"""

from __future__ import annotations

import array
import functools
import itertools
import json
import re
from typing import Any, AsyncIterator, Callable, Dict, Iterable, List, Optional, Tuple

from .exceptions import HandshakeError, LineTooLongError, ProtocolError

MAX_CHUNK = 32 * 1024
"""Fixed by the protocol (not negotiated): chunk lines carry ``MAX_CHUNK - 1`` characters."""

DEFAULT_MAX_LINE = 1024 * 1024
"""Longest single line accepted (the reference accepts 64 KiB; senders chunk at 32 KiB)."""

MAX_ANSWER_SIZE = 64 * 1024 * 1024
"""Longest reassembled chunk stream a client accepts (a server's limit on requests is
its own setting, ``Limits.max_message``)."""

MAX_REQUEST_NESTING = 64
"""Deepest nesting of arrays and objects a server accepts in one request (a PR
request nests two deep).  Checked before parsing, so that the answer is the same on
every Python: ``json`` alone gives up at 1,000 levels on 3.9 but parses 5,000 on 3.13."""

INVOKE_ERROR = "invoke-error"


def invoke_error(message: str) -> Dict[str, Dict[str, str]]:
    """The answer refusing a request: ``{"invoke-error": {"message": message}}``
    (bitbake's client raises on it; a server closes the connection after it unless
    the request was only refused, ``RequestRefused``)."""
    return {INVOKE_ERROR: {"message": message}}


def invoke_error_text(answer: Any) -> Optional[str]:
    """What an invoke-error answer says; None if ``answer`` is not one."""
    if not isinstance(answer, dict) or INVOKE_ERROR not in answer:
        return None
    error = answer[INVOKE_ERROR]
    return str(error.get("message") if isinstance(error, dict) else error)


MAX_HEADERS = 256
"""Most header lines accepted during connection setup."""

CHUNK_STREAM_START = '{"chunk-stream": null}'

INCOMPLETE = object()
"""Returned by ``MessageReader.feed_line`` while a chunk stream is still open."""


# --------------------------------------------------------------------------- encoding

_DECODER = json.JSONDecoder()


def _make_encode() -> Callable[[object], str]:
    """``json.dumps`` with its defaults, minus its per-call set-up.

    ``json.dumps`` builds a new C encoder for every call; this builds the one it
    would build (the ``json`` module's ``c_make_encoder``) once.  Messages are
    trees made by handlers, never circular, so there is no circularity check.  If
    this Python's ``json`` has no such encoder, or it does not reproduce
    ``json.dumps`` on a probe, ``JSONEncoder.encode`` is used.
    """
    encoder = json.JSONEncoder(check_circular=False)
    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

        encode = c_make_encoder(None, encoder.default, encode_basestring_ascii, None, ": ", ", ",
                                False, False, True)
        probe = {"a": [1, 2.5, None, True, False, "\u00e9\n"], "b": {"c": -0.0}}
        if "".join(encode(probe, 0)) == json.dumps(probe):
            return lambda message: "".join(encode(message, 0))
    except (ImportError, TypeError, ValueError):
        pass
    return encoder.encode


_encode = _make_encode()


def dumps(message: object) -> str:
    """Serialise like the reference (``json.dumps`` defaults: ASCII only, ``", "``)."""
    return _encode(message)


def frame_text(text: str, max_chunk: int = MAX_CHUNK) -> List[str]:
    """Cut one JSON text into wire lines (each with its ``\\n``).

    ``len(text) <= max_chunk - 2`` gives the text as one line; anything longer a
    chunk stream of ``max_chunk - 1``-character pieces closed by an empty line.
    """
    if len(text) < max_chunk - 1:
        return [text + "\n"]
    size = max_chunk - 1
    lines = [CHUNK_STREAM_START + "\n"]
    lines.extend(text[i:i + size] + "\n" for i in range(0, len(text), size))
    lines.append("\n")
    return lines


class JSONStream:
    """A message sent while it is produced: ``pieces`` concatenate to one JSON text.

    For answers too large to build in memory (an export of a million rows): the
    connection frames and sends the pieces as they come, under flow control, and
    the bytes on the wire are those of the whole text framed at once.  ``pieces``
    is an async iterator, so that producing a piece may wait (a database engine
    that is a network away); ``JSONStream.of`` takes a plain iterable.
    """

    def __init__(self, pieces: AsyncIterator[str]) -> None:
        self.pieces = pieces

    @classmethod
    def of(cls, pieces: Iterable[str]) -> "JSONStream":
        return cls(_each(pieces))


async def _each(pieces: Iterable[str]) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


class StreamFramer:
    """Frames a JSON text given in pieces exactly as ``frame_text`` frames the whole.

    ``feed`` returns the wire text that is final so far (complete chunk lines);
    ``finish`` the rest.  Holds less than one chunk line of text between calls.
    """

    def __init__(self, max_chunk: int = MAX_CHUNK) -> None:
        self._size = max_chunk - 1
        self._pieces: List[str] = []
        self._held = 0
        self._chunked = False

    def feed(self, piece: str) -> str:
        self._pieces.append(piece)
        self._held += len(piece)
        if self._held < self._size:
            return ""
        text = "".join(self._pieces)
        size = self._size
        complete = len(text) - len(text) % size
        rest = text[complete:]
        self._pieces, self._held = [rest], len(rest)
        lines = [text[i:i + size] + "\n" for i in range(0, complete, size)]
        if not self._chunked:
            self._chunked = True
            lines.insert(0, CHUNK_STREAM_START + "\n")
        return "".join(lines)

    def finish(self) -> str:
        text = "".join(self._pieces)
        self._pieces, self._held = [], 0
        if not self._chunked:
            return text + "\n"
        return (text + "\n" if text else "") + "\n"


async def join_pieces(pieces: AsyncIterator[str], size: int) -> AsyncIterator[str]:
    """Regroup text pieces into strings of at least ``size`` characters (the last may
    be shorter): fragments of a sensible size for a transport."""
    held: List[str] = []
    length = 0
    async for piece in pieces:
        held.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(held)
            held, length = [], 0
    if held:
        yield "".join(held)


def encode_message(message: object, max_chunk: int = MAX_CHUNK) -> bytes:
    """The bytes a stream transport sends for one message."""
    text = dumps(message)
    if len(text) < max_chunk - 1:
        return (text + "\n").encode("utf-8")       # the common case, without a list
    return "".join(frame_text(text, max_chunk)).encode("utf-8")


# --------------------------------------------------------------------------- decoding

LINE_TOO_LONG = None
"""Stands in ``LineBuffer.feed``'s result for a line that exceeded the limit."""


class LineBuffer:
    """Splits a byte stream into lines (without their ``\\n``).

    A partial line is kept until its end arrives.  A line longer than ``max_line``
    bytes is not kept: its bytes are dropped as they arrive and, once its end is
    seen, ``LINE_TOO_LONG`` takes its place in the result.  So memory stays bounded,
    lines before it are still answered, and the peer's whole line has been read when
    the error is reported (closing with unread input would reset the connection and
    lose the error answer).
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> List[Optional[bytes]]:
        if b"\n" not in data:
            self._keep_partial(data)
            return []
        longest_possible = len(self._partial) + len(data)
        lines: List[Optional[bytes]] = data.split(b"\n")  # type: ignore[assignment]
        rest = lines.pop()
        if self._discarding:
            self._discarding = False
            lines[0] = LINE_TOO_LONG
        elif self._partial:
            self._partial += lines[0]  # type: ignore[operator]
            lines[0] = bytes(self._partial)
            self._partial = bytearray()
        if longest_possible > self.max_line:     # else no line can be over the limit
            limit = self.max_line
            lines = [LINE_TOO_LONG if line is LINE_TOO_LONG or len(line) > limit else line
                     for line in lines]
        self._keep_partial(rest)
        return lines

    def _keep_partial(self, data: bytes) -> None:
        if self._discarding or not data:
            return
        if len(self._partial) + len(data) > self.max_line:
            self._partial = bytearray()
            self._discarding = True
        else:
            self._partial += data

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._partial)


def decode_line(line: bytes) -> str:
    """UTF-8 text of one received line; invalid UTF-8 is a protocol error."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("line is not valid UTF-8: %s" % exc) from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in a JSON text, found without parsing it.

    Brackets inside strings do not count: a ``"`` opens a string that ends at the
    next ``"`` not escaped by a backslash, or at the end of the text.  Any closing
    bracket closes any opening one: a parser descends before it sees a mismatch.
    """
    outside_strings = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass")
    brackets = outside_strings.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(array.array("b", brackets), initial=0))


def parse_json(text: str) -> object:
    """Parse one JSON text; every way it can fail becomes a ``ProtocolError``.

    ``raw_decode`` first: for a text that is exactly one JSON value (every
    well-formed request) it gives ``json.loads``' result at half the cost; anything
    else takes ``json.loads`` for its exact rules and error messages.
    """
    try:
        value, end = _DECODER.raw_decode(text)
        if end == len(text):
            return value
    except (ValueError, RecursionError):
        pass
    try:
        return json.loads(text)
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int conversion limits
        raise ProtocolError("invalid JSON: %s" % exc) from None


def describe_json_type(value: object) -> str:
    """What a decoded JSON value is, for error messages: "an array", "null", ..."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class MessageReader:
    """Turns received lines into messages, reassembling chunk streams.

    Feed each line without its ``\\n``.  ``feed_line`` returns the message, or
    ``INCOMPLETE`` while inside a chunk stream.  Chunk lines lose only their final
    newline (the reference strips all trailing whitespace: defect D8).  With
    ``max_depth``, messages nesting deeper are a ``ProtocolError`` (servers set it;
    clients trust their server's answers, whose exports are long and shallow).
    """

    def __init__(self, max_message: int = MAX_ANSWER_SIZE,
                 max_depth: Optional[int] = None) -> None:
        self.max_message = max_message
        self.max_depth = max_depth
        self._chunks: Optional[List[str]] = None
        self._size = 0

    @property
    def in_chunk_stream(self) -> bool:
        return self._chunks is not None

    def feed_line(self, line: str) -> object:
        if self._chunks is not None:
            return self._feed_chunk(line)
        if not line.strip():
            raise ProtocolError("empty line where a message was expected")
        message = self._parse(line)
        if isinstance(message, dict) and "chunk-stream" in message:
            self._chunks = []
            self._size = 0
            return INCOMPLETE
        return message

    def _parse(self, text: str) -> object:
        limit = self.max_depth
        # Counting brackets is cheap; only a text with more than ``limit`` is measured.
        if limit is not None and text.count("[") + text.count("{") > limit \
                and nesting_depth(text) > limit:
            raise ProtocolError("JSON nested deeper than %d levels (this server's limit)" % limit)
        return parse_json(text)

    def _feed_chunk(self, line: str) -> object:
        if line == "":
            text = "".join(self._chunks)
            self._chunks = None
            return self._parse(text)
        self._size += len(line)
        if self._size > self.max_message:
            raise LineTooLongError("chunk stream longer than %d characters" % self.max_message)
        self._chunks.append(line)
        return INCOMPLETE


# --------------------------------------------------------------------------- setup

def client_setup_lines(proto_name: str, proto_version: str, needs_headers: bool,
                       headers: Optional[Dict[str, str]] = None) -> List[str]:
    """The lines (without ``\\n``) a client sends to open a session."""
    lines = ["%s %s" % (proto_name, proto_version),
             "needs-headers: %s" % ("true" if needs_headers else "false")]
    lines.extend("%s: %s" % (k, v) for k, v in (headers or {}).items())
    lines.append("")
    return lines


def header_block_lines(headers: Dict[str, str]) -> List[str]:
    """A header block (server answer to ``needs-headers: true``), ending with ``""``."""
    return ["%s: %s" % (k, v) for k, v in headers.items()] + [""]


# Setup lines are parsed once each: every client sends the same few.  The caches are
# bounded, so a client sending ever new lines only evicts entries.
@functools.lru_cache(maxsize=64)
def parse_protocol_line(line: str, proto_name: str) -> Tuple[int, ...]:
    """Check ``<NAME> <version>``; return the version as a tuple of integers."""
    words = line.split()
    if not words:
        raise HandshakeError("empty protocol line")
    if len(words) != 2 or words[0] != proto_name:
        raise HandshakeError("unexpected protocol line %r" % line[:100])
    parts = words[1].split(".")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise HandshakeError("unparsable protocol version %r" % words[1][:100])
    return tuple(int(p) for p in parts)


@functools.lru_cache(maxsize=64)
def parse_header_line(line: str) -> Tuple[str, str]:
    """``name: value`` -> (lower-cased name, stripped value)."""
    if ":" not in line:
        raise HandshakeError("header line without ':' %r" % line[:100])
    name, value = line.split(":", 1)
    return name.lower(), value.strip()


class ServerSetup:
    """Consumes the client's setup lines on the server side.

    ``feed_line`` returns True once the empty line closing the headers arrived;
    then ``headers`` and ``needs_headers`` are set.  Lines lose trailing whitespace
    (CRLF tolerated, as by the reference).
    """

    def __init__(self, proto_name: str, proto_versions: Iterable[Tuple[int, ...]]) -> None:
        self.proto_name = proto_name
        self.proto_versions = set(proto_versions)
        self.proto_version: Optional[Tuple[int, ...]] = None
        self.headers: Dict[str, str] = {}
        self.done = False

    @property
    def needs_headers(self) -> bool:
        return self.headers.get("needs-headers", "false") == "true"

    def feed_line(self, line: str) -> bool:
        if self.done:
            raise HandshakeError("setup already complete")
        line = line.rstrip()
        if self.proto_version is None:
            version = parse_protocol_line(line, self.proto_name)
            if version not in self.proto_versions:
                raise HandshakeError("unsupported protocol version %s" % ".".join(map(str, version)))
            self.proto_version = version
            return False
        if not line:
            self.done = True
            return True
        if len(self.headers) >= MAX_HEADERS:
            raise HandshakeError("more than %d header lines" % MAX_HEADERS)
        name, value = parse_header_line(line)
        self.headers[name] = value
        return False


def parse_header_block(lines: Iterable[str]) -> Dict[str, str]:
    """Client side: the server's header lines (without the closing empty line)."""
    return dict(parse_header_line(line.rstrip()) for line in lines)
