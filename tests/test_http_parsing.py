"""roomer's request-head parser against picows' own: every head roomer hands to picows as an
upgrade must parse there too (else picows answers with its 400 page, which repeats a piece of
the request), and no head, however broken, makes the answer repeat what the request held."""

from __future__ import annotations

import base64

from hypothesis import event, given, settings
from hypothesis import strategies as st
from picows import picows as picows_impl

from roomer.config import Config
from roomer.http import HttpSide

_picows_parse = picows_impl._parse_http_request  # what picows runs on every request head

MARK = b"Zq7"  # in every generated piece of a request, so an echo is seen

pieces = st.sampled_from([
    b"GET", b"HEAD", b"POST", b"get", b"G" + MARK, b" ", b"  ", b"\t", b"/", b"/ws",
    b"/" + MARK, b"*", b"http://h/" + MARK, b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0",
    b"http/1.1", b"\r\n", b"\n", b"\r", b":", b": ", b"Host", b"Upgrade", b"websocket",
    b"Connection", b"upgrade", b"keep-alive, Upgrade", b"Sec-WebSocket-Key",
    base64.b64encode(b"k" * 16), b"Sec-WebSocket-Version", b"13", b"Content-Length",
    b"0", b"00", b"1", b"Transfer-Encoding", b"chunked", b"X-" + MARK, MARK, b"\x00",
    b"\x7f", b"\xff", b",", b"(", b"=",
])


def _upgrade(*extra: bytes) -> bytes:
    return b"\r\n".join([b"GET /ws HTTP/1.1", b"Host: x", b"Upgrade: websocket",
                         b"Connection: Upgrade",
                         b"Sec-WebSocket-Key: " + base64.b64encode(b"k" * 16),
                         b"Sec-WebSocket-Version: 13", *extra])


# Header lines that are nearly right: a name, a colon, a value of a few pieces.
names = st.sampled_from([b"Host", b"X-" + MARK, b"Content-Length", b"Transfer-Encoding",
                         b"Connection", b"Upgrade", b"Sec-WebSocket-Key", b"Bad Name",
                         b"", b"X(" + MARK])
values = st.lists(st.sampled_from([MARK, b" ", b"\t", b"0", b"1", b"chunked", b"upgrade",
                                   b"\x7f", b"\xff", b"\x01", b",", b"=", b"\r"]),
                  max_size=5).map(b"".join)
header_lines = st.tuples(names, st.sampled_from([b":", b": ", b" :", b":\t", b""]),
                         values).map(b"".join)

heads = st.one_of(
    st.lists(pieces, max_size=40).map(b"".join),
    st.lists(header_lines, max_size=4).map(lambda lines: _upgrade(*lines)),
    st.lists(header_lines, max_size=4).map(lambda lines: _upgrade(*lines)),
    st.lists(st.lists(pieces, max_size=6).map(b"".join), max_size=6)
    .map(lambda lines: _upgrade(*lines)),
    st.binary(max_size=300),
)


SIDE = HttpSide(Config(), {}, lambda: "", lambda: "ok\n", lambda: False, lambda *args: None)


@settings(max_examples=1000, deadline=None)
@given(heads)
def test_what_roomer_hands_to_picows_picows_parses(head: bytes) -> None:
    answer = SIDE.answer(head)
    if answer is None:  # an upgrade for picows: its parser must take it
        event("handed to picows")
        request = _picows_parse(head)
        assert request.method == b"GET" and request.version == b"HTTP/1.1"
        return
    try:
        assert MARK not in answer.head
        body = answer.body
        if body is not None:
            assert MARK not in bytes(body.read(body.remaining or 1))
    finally:
        answer.close()
    assert SIDE.counters["http_open"] == 0


def test_both_sides_are_reachable() -> None:
    assert SIDE.answer(_upgrade() + b"\r\nX-A: b") is None
    answer = SIDE.answer(b"GET /" + MARK + b" HTTP/1.1")
    assert answer is not None
    answer.close()
