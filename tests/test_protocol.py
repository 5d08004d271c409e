"""The sans-I/O framing code, without sockets (prserv.asyncrpc.protocol)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prserv.asyncrpc import protocol
from prserv.asyncrpc.exceptions import HandshakeError, LineTooLongError, ProtocolError


def text_of_length(n: int) -> str:
    """A JSON text of exactly n characters: {"k": "xxx..."}."""
    overhead = len(json.dumps({"k": ""}))
    text = json.dumps({"k": "x" * (n - overhead)})
    assert len(text) == n
    return text


@pytest.mark.parametrize("n, lines", [
    (32766, 1),          # max_chunk - 2: one plain line
    (32767, 1 + 1 + 1),  # max_chunk - 1: start line, one chunk, empty line
    (32768, 1 + 2 + 1),  # max_chunk: two chunks, the last one character
    (32769, 1 + 2 + 1),
    (65534, 1 + 2 + 1),
    (65535, 1 + 3 + 1),
])
def test_frame_text_boundaries(n, lines):
    text = text_of_length(n)
    framed = protocol.frame_text(text)
    assert len(framed) == lines
    assert all(line.endswith("\n") for line in framed)
    if lines == 1:
        assert framed == [text + "\n"]
    else:
        assert framed[0] == '{"chunk-stream": null}\n'
        assert framed[-1] == "\n"
        chunks = [line[:-1] for line in framed[1:-1]]
        assert all(len(chunk) == 32767 for chunk in chunks[:-1])
        assert 1 <= len(chunks[-1]) <= 32767
        assert "".join(chunks) == text


def test_frame_text_exact_chunk_lengths():
    assert [len(l) for l in protocol.frame_text(text_of_length(32768))] == [23, 32768, 2, 1]
    assert [len(l) for l in protocol.frame_text(text_of_length(65535))] == [23, 32768, 32768, 2, 1]


def test_encode_message_is_reference_json():
    assert protocol.encode_message({"value": "1", "x": [1, None]}) == b'{"value": "1", "x": [1, null]}\n'
    assert protocol.encode_message({"k": "\u00e9"}) == b'{"k": "\\u00e9"}\n'


@pytest.mark.parametrize("n", [32766, 32767, 32768, 32769, 65535, 200000])
def test_reader_round_trip(n):
    text = text_of_length(n)
    reader = protocol.MessageReader()
    results = [reader.feed_line(line[:-1]) for line in protocol.frame_text(text)]
    assert results[:-1] == [protocol.INCOMPLETE] * (len(results) - 1)
    assert results[-1] == json.loads(text)
    assert not reader.in_chunk_stream


def test_reader_keeps_trailing_space_of_a_chunk():
    """Defect D8: only the newline of a chunk line is removed, not other whitespace."""
    value = "x" * (32766 - len('{"k": "')) + " tail"
    text = json.dumps({"k": value})
    lines = protocol.frame_text(text)
    assert lines[1].endswith(" \n")
    reader = protocol.MessageReader()
    message = [reader.feed_line(line[:-1]) for line in lines][-1]
    assert message == {"k": value}


def test_reader_accepts_any_chunk_stream_value():
    reader = protocol.MessageReader()
    assert reader.feed_line('{"chunk-stream": 1}') is protocol.INCOMPLETE
    assert reader.feed_line('{"pi') is protocol.INCOMPLETE
    assert reader.feed_line('ng": {}}') is protocol.INCOMPLETE
    assert reader.feed_line("") == {"ping": {}}


@pytest.mark.parametrize("line, message", [
    ("null", None), ("5", 5), ('["ping"]', ["ping"]), ('{"ping": {}}  ', {"ping": {}}),
])
def test_reader_plain_lines(line, message):
    assert protocol.MessageReader().feed_line(line) == message


@pytest.mark.parametrize("line", ["", "   ", '{"ping": ', "{'a': 1}", "[" * 100000, "1" * 5000])
def test_reader_rejects_malformed_lines(line):
    with pytest.raises(ProtocolError):
        protocol.MessageReader().feed_line(line)


def test_reader_limits_chunk_stream_size():
    reader = protocol.MessageReader(max_message=10)
    reader.feed_line('{"chunk-stream": null}')
    reader.feed_line("12345")
    with pytest.raises(LineTooLongError):
        reader.feed_line("123456")


def test_line_buffer_splits_and_keeps_partial_lines():
    buffer = protocol.LineBuffer(max_line=100)
    assert buffer.feed(b"PRSERVICE 1.0\nneeds-") == [b"PRSERVICE 1.0"]
    assert buffer.pending == len(b"needs-")
    assert buffer.feed(b"headers: false\n\n{}") == [b"needs-headers: false", b""]
    assert buffer.feed(b"\n") == [b"{}"]
    assert buffer.pending == 0


def test_line_buffer_byte_at_a_time():
    buffer = protocol.LineBuffer()
    lines = []
    for byte in b'{"ping": {}}\n\n':
        lines.extend(buffer.feed(bytes([byte])))
    assert lines == [b'{"ping": {}}', b""]


def test_line_buffer_limit_drops_the_long_line_and_keeps_order():
    buffer = protocol.LineBuffer(max_line=8)
    assert buffer.feed(b"12345678\n") == [b"12345678"]
    assert buffer.feed(b"ok\n123456789\nafter\n") == [b"ok", protocol.LINE_TOO_LONG, b"after"]


def test_line_buffer_limit_across_feeds_uses_bounded_memory():
    buffer = protocol.LineBuffer(max_line=8)
    assert buffer.feed(b"12345") == []
    assert buffer.feed(b"67890") == []
    assert buffer.pending == 0                      # dropped, not accumulated
    assert buffer.feed(b"x" * 1000) == []
    assert buffer.pending == 0
    assert buffer.feed(b"end\nnext\n") == [protocol.LINE_TOO_LONG, b"next"]
    assert buffer.feed(b"1234\n") == [b"1234"]


def test_decode_line_rejects_invalid_utf8():
    assert protocol.decode_line("é".encode()) == "é"
    with pytest.raises(ProtocolError):
        protocol.decode_line(b"\xff\xfe")


def feed_setup(lines):
    setup = protocol.ServerSetup("PRSERVICE", [(1, 0)])
    done = [setup.feed_line(line) for line in lines]
    return setup, done


def test_server_setup_plain():
    setup, done = feed_setup(["PRSERVICE 1.0", "needs-headers: false", ""])
    assert done == [False, False, True]
    assert setup.headers == {"needs-headers": "false"} and not setup.needs_headers


def test_server_setup_headers_lowercased_and_crlf_tolerated():
    setup, done = feed_setup(["PRSERVICE 1.0\r", "NEEDS-HEADERS:true\r", "X-Build-Host:  b7 \r", "\r"])
    assert done[-1] is True
    assert setup.headers == {"needs-headers": "true", "x-build-host": "b7"}
    assert setup.needs_headers


@pytest.mark.parametrize("value, needs", [("true", True), ("TRUE", False), ("false", False), ("yes", False)])
def test_server_setup_needs_headers_exactly_true(value, needs):
    setup, _ = feed_setup(["PRSERVICE 1.0", "needs-headers: " + value, ""])
    assert setup.needs_headers is needs


def test_server_setup_without_needs_headers_line():
    setup, done = feed_setup(["PRSERVICE 1.0", ""])
    assert done == [False, True] and not setup.needs_headers


@pytest.mark.parametrize("line", ["", "PRSERV 1.0", "PRSERVICE 1.1", "PRSERVICE 2.0", "PRSERVICE",
                                  "PRSERVICE 1", "PRSERVICE 1.0.0", "PRSERVICE 1.0 extra", "PRSERVICE x.y",
                                  "PRSERVICE +1.0"])
def test_server_setup_refuses_protocol_line(line):
    with pytest.raises(HandshakeError):
        feed_setup([line])


def test_server_setup_refuses_header_without_colon():
    with pytest.raises(HandshakeError):
        feed_setup(["PRSERVICE 1.0", "needs-headers"])


def test_server_setup_limits_header_count():
    lines = ["PRSERVICE 1.0"] + ["h%d: v" % i for i in range(protocol.MAX_HEADERS + 1)]
    with pytest.raises(HandshakeError):
        feed_setup(lines)


def test_client_setup_lines():
    assert protocol.client_setup_lines("PRSERVICE", "1.0", False) == \
        ["PRSERVICE 1.0", "needs-headers: false", ""]
    assert protocol.client_setup_lines("PRSERVICE", "1.0", True, {"user-agent": "x"}) == \
        ["PRSERVICE 1.0", "needs-headers: true", "user-agent: x", ""]


def test_header_block():
    assert protocol.header_block_lines({}) == [""]
    assert protocol.parse_header_block(["A: 1 ", "b:two:three"]) == {"a": "1", "b": "two:three"}


@pytest.mark.parametrize("n", [9, 100, 32765, 32766, 32767, 32768, 65534, 65535, 65536, 100003])
@pytest.mark.parametrize("piece", [1, 7, 1000, 32767, 40000])
def test_stream_framer_matches_framing_the_whole_text(n, piece):
    text = text_of_length(n)
    framer = protocol.StreamFramer()
    wire = "".join(framer.feed(text[i:i + piece]) for i in range(0, len(text), piece))
    wire += framer.finish()
    assert wire == "".join(protocol.frame_text(text))


def test_stream_framer_holds_less_than_a_chunk_line():
    framer = protocol.StreamFramer()
    sent = [framer.feed("x" * 1000) for _ in range(100)]
    assert sum(map(len, sent)) == len('{"chunk-stream": null}\n') + 3 * 32768
    assert framer.finish() == "x" * (100000 - 3 * 32767) + "\n\n"


async def test_join_pieces_regroups_without_losing_text():
    async def joined(pieces, size):
        return [text async for text in protocol.join_pieces(protocol.JSONStream.of(pieces).pieces, size)]

    assert await joined(["ab", "c", "defg", "h", "", "ij"], 3) == ["abc", "defg", "hij"]
    assert await joined([], 3) == []
    assert await joined(["a"], 3) == ["a"]


def test_parse_json_fast_path_keeps_json_loads_rules():
    assert protocol.parse_json('{"a": [1, 2.5, null, true]}') == {"a": [1, 2.5, None, True]}
    assert protocol.parse_json('  {"a": 1}  ') == {"a": 1}      # surrounding blanks: json.loads rules
    with pytest.raises(ProtocolError, match="Extra data"):
        protocol.parse_json('{"a": 1} {"b": 2}')
    with pytest.raises(ProtocolError, match="invalid JSON"):
        protocol.parse_json('{"a": 1')


@pytest.mark.parametrize("message", [
    {"value": "1.20"}, {"value": None}, [1, 2.5, -0.0, 1e300, True, False, None],
    {"k": "\u00e9\u2028\U0001F600\n\t\"\\"}, {"nested": {"a": [{"b": []}, {}]}}, "text", 7,
])
def test_dumps_is_json_dumps_with_defaults(message):
    assert protocol.dumps(message) == json.dumps(message)


# --------------------------------------------------------------------------- nesting limit

MAX_NESTING = 64
"""The server's own limit on nesting in a request, the same on every Python."""


def bracket_depth(text: str) -> int:
    """The deepest nesting of brackets outside JSON strings, read character by character
    (a string ends at an unescaped quote or the end of the text; any closing bracket
    closes any opening one): the server's rule, written independently."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@pytest.mark.parametrize("text, depth", [
    ("1", 0), ("[]", 1), ("[[1], {}]", 2), ('{"a": {"b": ["[[[["]}}', 3), ('["\\"["]', 1),
    ("[" * 70 + "]" * 70, 70), ("[}", 1), ("]]]", 0), ('"[[[', 0), ('["abc\\', 1), ('["\udc80["]', 1),
    ('["\u00e9[", [[]]]', 3),
])
def test_nesting_depth(text, depth):
    assert protocol.nesting_depth(text) == depth == bracket_depth(text)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet='[]{}"\\ a,:\u00e9', max_size=200))
def test_nesting_depth_matches_a_character_by_character_reading(text):
    assert protocol.nesting_depth(text) == bracket_depth(text)


def nested_ping(levels: int) -> str:
    """A ping request whose arrays and objects nest ``levels`` deep in all."""
    return '{"ping": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_server_reader_takes_64_levels_and_refuses_65_before_parsing():
    reader = protocol.MessageReader(max_depth=MAX_NESTING)
    assert reader.feed_line(nested_ping(64)) == {"ping": json.loads("[" * 63 + "]" * 63)}
    with pytest.raises(ProtocolError, match=r"^JSON nested deeper than 64 levels \(this server's limit\)$"):
        reader.feed_line(nested_ping(65))
    with pytest.raises(ProtocolError, match="nested deeper than 64 levels"):
        reader.feed_line("[" * 100000)          # json itself would raise RecursionError here
    assert reader.feed_line('{"ping": "%s"}' % ("[{" * 5000)) == {"ping": "[{" * 5000}


def test_server_reader_measures_a_reassembled_chunk_stream():
    reader = protocol.MessageReader(max_depth=MAX_NESTING)
    text = nested_ping(65)
    assert reader.feed_line(protocol.CHUNK_STREAM_START) is protocol.INCOMPLETE
    assert reader.feed_line(text[:40]) is protocol.INCOMPLETE
    assert reader.feed_line(text[40:]) is protocol.INCOMPLETE
    with pytest.raises(ProtocolError, match="nested deeper than 64 levels"):
        reader.feed_line("")


def test_client_reader_has_no_nesting_limit_of_its_own():
    assert protocol.MessageReader().feed_line(nested_ping(65))["ping"] == json.loads("[" * 64 + "]" * 64)
