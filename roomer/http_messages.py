"""HTTP/1.x request heads and the answers to them, sans-I/O: what arrives is parsed here and
what goes back is built here; roomer/server.py moves the bytes.

A request head is parsed at least as strictly as picows parses an upgrade request, so a
request that passes here and goes on to picows never meets picows' own 400 page (which
repeats a piece of the request). Every answer closes its connection (``Connection:
close``): one request per connection, as picows answered before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict
from picows import WSUpgradeRequest

__all__ = ["MAX_HEAD", "MAX_HEADERS", "UNSATISFIABLE", "Answer", "Body", "BytesBody",
           "HeadError", "body_length", "byte_range", "head_bytes", "parse_head"]

#: Largest request head, request line to blank line included (picows' own limit: a longer
#: upgrade request is dropped by picows without an answer).
MAX_HEAD = 16 * 1024
#: Most header lines in a request (picows' limit).
MAX_HEADERS = 128

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")


class HeadError(Exception):
    """A request head roomer does not answer normally: ``status`` and a fixed ``body`` that
    repeats nothing of the request."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


BAD_REQUEST = HeadError(400, b"bad request\n")
TOO_LARGE = HeadError(431, b"request head too large\n")
BAD_VERSION = HeadError(505, b"HTTP/1.0 and HTTP/1.1 only\n")


def parse_head(head: bytes) -> WSUpgradeRequest:
    """A request head (without its blank line) as a picows ``WSUpgradeRequest``: ``method``,
    ``path`` (the request target; an absolute-form one cut to its path, others as sent),
    ``version`` (bytes) and ``headers`` (a CIMultiDict of str).

    Raises:
        HeadError: a malformed head (400), too many header lines (431), an HTTP version other
            than 1.0 and 1.1 (505).
    """
    lines = head.split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise TOO_LARGE
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BAD_REQUEST
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise BAD_REQUEST
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        raise BAD_VERSION if _VERSION.fullmatch(version) else BAD_REQUEST
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # No folded lines (RFC 9112 §5.2), no space before the colon (§5.1).
        if not colon or not _TOKEN.fullmatch(name):
            raise BAD_REQUEST
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise BAD_REQUEST
        headers.add(name.decode("ascii"), value.decode("ascii", "surrogateescape"))
    absolute = _ABSOLUTE.match(target)
    if absolute is not None:
        # RFC 9112 §3.2.2: a server accepts the absolute-form too; its host is not ours to judge.
        target = target[absolute.end():]
        if not target.startswith(b"/"):
            target = b"/" + target
    request = WSUpgradeRequest()
    request.method = method
    request.path = target
    request.version = version
    request.headers = headers
    return request


def body_length(request: WSUpgradeRequest) -> int | None:
    """The length of the body the request says follows (0: none), or None when it says so
    in a way roomer does not read (Transfer-Encoding, several or malformed Content-Length)."""
    headers = request.headers
    if "Transfer-Encoding" in headers:
        return None
    values = headers.getall("Content-Length", ())
    if not values:
        return 0
    if len(values) > 1 or not values[0].isdigit() or not values[0].isascii():
        return None
    return int(values[0])


# answers ---------------------------------------------------------------------------------


class Body:
    """Where an answer's body comes from, read in pieces so that a client that reads slowly
    holds at most a piece and the transport's buffer. ``remaining``: bytes still to read."""

    __slots__ = ("remaining",)

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining

    def read(self, size: int) -> bytes | memoryview:
        """The next piece, at most ``size`` bytes and at least one while ``remaining``.

        Raises:
            OSError: the source failed or changed; the answer cannot be completed.
        """
        raise NotImplementedError

    def limit(self, start: int, stop: int) -> None:
        """Send only the bytes ``[start, stop)`` of the source (a byte range), before the
        first ``read``."""
        self.remaining = stop - start
        self._seek(start)

    def _seek(self, start: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source (a file's descriptor); safe to call twice."""


class BytesBody(Body):
    """A body from memory; pieces are views of it, never copies."""

    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes) -> None:
        super().__init__(len(data))
        self._data = memoryview(data)
        self._at = 0

    def _seek(self, start: int) -> None:
        self._at = start

    def read(self, size: int) -> memoryview:
        size = min(size, self.remaining)
        piece = self._data[self._at:self._at + size]
        self._at += size
        self.remaining -= size
        return piece


class Answer:
    """What goes back for one request: ``head`` (status line and headers, bytes) and the
    ``body`` to stream after it (None: nothing follows). ``close()`` once written or
    abandoned: it releases the body and tells whoever counts answers."""

    __slots__ = ("_done", "body", "head")

    def __init__(self, head: bytes, body: Body | None,
                 done: Callable[[], None] | None = None) -> None:
        self.head = head
        self.body = body
        self._done = done

    def close(self) -> None:
        """Release the body and report the answer finished; safe to call twice."""
        if self.body is not None:
            self.body.close()
        done, self._done = self._done, None
        if done is not None:
            done()


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def head_bytes(status: int, headers: list[tuple[str, str]], length: int | None) -> bytes:
    """The status line and headers of an answer that closes its connection; ``length``:
    its Content-Length (None: no body may follow, as on a 204 or 304)."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Date: {_http_date()}",
             "Connection: close", *(f"{name}: {value}" for name, value in headers)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


UNSATISFIABLE = (-1, -1)


def byte_range(spec: str | None, size: int) -> tuple[int, int] | None:
    """The ``(start, stop)`` a ``Range`` header asks of ``size`` bytes, ``UNSATISFIABLE``
    (answer 416), or None: no Range, or one roomer ignores (several ranges, another unit, a
    malformed one: RFC 9110 §14.2 lets a server answer those with the whole body)."""
    if spec is None or size <= 0:
        return None
    unit, eq, ranges = spec.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in ranges:
        return None
    first, dash, last = ranges.strip().partition("-")
    if not dash or not (first or last) or not (first + last).isdigit() \
            or not (first + last).isascii():
        return None
    if not first:  # "-N": the last N bytes
        suffix = int(last)
        return UNSATISFIABLE if suffix == 0 else (max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None  # last < first: not a valid range (RFC 9110 §14.1.1)
    if start >= size:
        return UNSATISFIABLE
    return start, size if not last else min(int(last) + 1, size)
