"""The HTTP side of the roomer port (docs/design.md, "HTTP"): plain HTTP (/healthz,
/metrics, routes, files) and the checks an upgrade passes (headers, origin, authorize)
before it becomes a WebSocket. Sans-I/O: it decides what to answer; roomer/server.py reads
and writes.

Every connection's request head comes to :meth:`HttpSide.answer` first. A WebSocket upgrade
(a GET over HTTP/1.1 whose Connection lists ``upgrade``) goes on to picows, which calls
:meth:`HttpSide.upgrade` for the response (and the listener); anything else gets an
:class:`~roomer.http_messages.Answer` here: GET and HEAD of the routes and files, 204 to
OPTIONS, 405 to other methods, 400/431/505 to heads roomer does not read. Every answer's
body is a fixed text or a file: nothing of the request is echoed back, and every answer
closes its connection.

/healthz: 200 while the node serves clients (its health text's first line ``ok``, or
``degraded``: serving its own rooms while its backplane link is down), 503 otherwise (shutting
down, or an unknown state); the body is that first line, or the whole text with
``health_detail``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from typing import Any

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from .config import Config
from .errors import Deny
from .frames import BATCH_FRAME_MAX
from .http_messages import Answer, Body, BytesBody, HeadError, body_length, head_bytes, parse_head
from .static_files import NOT_FOUND, StaticFiles

__all__ = ["HEALTH_STATUS", "HTTP_COUNTERS", "HttpSide", "connection_tokens", "subprotocol"]

# Subprotocols a client may offer (docs/protocol.md §1), the newest offered winning
# wherever it is in the list: offering roomer.v2 means speaking it. Each says whether
# it speaks v2, and whether with batch frames (§13).
SUBPROTOCOLS = {"roomer.v2.batch": (True, True), "roomer.v2": (True, False),
                "roomer.v1": (False, False)}

log = logging.getLogger("roomer")

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
ALLOW = "GET, HEAD, OPTIONS"

#: The /healthz status for the first line of ``Server.health_text()``; any other line
#: (or the server shutting down) is 503.
HEALTH_STATUS = {"ok": 200, "degraded": 200}

#: The server counters the plain-HTTP side keeps (roomer.metrics shows them).
HTTP_COUNTERS = ("http_answers", "http_open", "http_waiting", "http_timeouts", "http_busy")


def http_error(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    """An upgrade refused: picows writes the response and closes."""
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(status, body, {"Content-Type": TEXT_TYPE}),
        None)


def connection_tokens(request: WSUpgradeRequest) -> set[str]:
    """The tokens of every Connection header, lowercased (RFC 9110 §7.6.1: a list)."""
    return {token.strip().lower()
            for value in request.headers.getall("Connection", ())
            for token in value.split(",")}


def subprotocol(request: WSUpgradeRequest, batch: bool = True) -> str | None:
    """The newest roomer subprotocol the client offered (None: plain v1, none named),
    ``roomer.v2.batch`` only if ``batch``."""
    offered = {token.strip()
               for value in request.headers.getall("Sec-WebSocket-Protocol", ())
               for token in value.split(",")}
    return next((name for name in SUBPROTOCOLS
                 if name in offered and (batch or not SUBPROTOCOLS[name][1])), None)


def _bad_upgrade(request: WSUpgradeRequest) -> bytes | None:
    """What is wrong with a WebSocket upgrade request (RFC 6455 §4.2.1), or None."""
    headers = request.headers
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return b"expected Upgrade: websocket\n"
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return b"unsupported Sec-WebSocket-Version (13 expected)\n"
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key.encode("ascii"), validate=True)) != 16:
            return b"invalid Sec-WebSocket-Key\n"
    except (UnicodeEncodeError, binascii.Error):
        return b"invalid Sec-WebSocket-Key\n"
    return None


class HttpSide:
    """Answers plain HTTP and vets upgrades; ``accept(request, claims, v2, batch)`` makes
    the listener of an upgrade that passed (``v2``: it negotiated protocol v2, ``batch``:
    with batch frames; ``claims`` is an awaitable when ``authorize`` is async).
    ``counters``: the server's counters, where the HTTP_COUNTERS are kept. Loop thread
    only."""

    def __init__(self, config: Config, routes: dict[str, tuple[str, bytes]],
                 metrics_text: Callable[[], str], health_text: Callable[[], str],
                 closing: Callable[[], bool],
                 accept: Callable[[WSUpgradeRequest, Any, bool, bool], Any],
                 counters: dict[str, int] | None = None) -> None:
        self.config = config
        self.routes = routes
        self._metrics_text = metrics_text
        self._health_text = health_text
        self._closing = closing
        self._accept = accept
        self.static = StaticFiles(config.static_dir)
        self.counters = counters if counters is not None else {}
        for name in HTTP_COUNTERS:
            self.counters.setdefault(name, 0)

    # plain HTTP -------------------------------------------------------------------------

    def answer(self, head: bytes) -> Answer | None:
        """The answer to a request head (its bytes before the blank line), or None for a
        WebSocket upgrade, which picows is to read (it then calls :meth:`upgrade`)."""
        try:
            return self._answer_head(head)
        except Exception:
            log.exception("plain HTTP request failed")
            return self._text(500, b"internal error\n")

    def _answer_head(self, head: bytes) -> Answer | None:
        try:
            request = parse_head(head)
        except HeadError as exc:
            return self._text(exc.status, exc.body)
        method = request.method
        length = body_length(request)
        if method == b"GET" and request.version == b"HTTP/1.1" and \
                "upgrade" in connection_tokens(request):
            # picows refuses a body too, with a page that repeats the header.
            return None if length == 0 else self._text(400, b"bad request\n")
        if method not in (b"GET", b"HEAD", b"OPTIONS"):
            return self._text(405, b"method not allowed\n", extra=[("Allow", ALLOW)])
        if length != 0:
            return self._text(400, b"request bodies are not read\n")
        if method == b"OPTIONS":
            return self._finish(204, [("Allow", ALLOW)], None)
        path = request.path.split(b"?", 1)[0].split(b"#", 1)[0]
        if not path.startswith(b"/"):  # "*", "host:port"
            return self._text(400, b"bad request\n")
        head_only = method == b"HEAD"
        text_path = path.decode("latin-1")
        # The server's own pages are never refused as busy: a balancer and a scraper must
        # hear from a node under load (and their answers are small).
        if text_path == "/healthz":
            return self._health(head_only)
        if text_path == self.config.metrics_path:
            return self._text(200, self._metrics_text().encode(), head_only,
                              [("Cache-Control", "no-store")], METRICS_TYPE)
        if self.counters["http_open"] >= self.config.http_max_answers:
            self.counters["http_busy"] += 1
            return self._text(503, b"busy\n", head_only, [("Retry-After", "1")])
        route = self.routes.get(text_path)
        if route is not None:
            content_type, data = route
            return self._finish(200, [("Content-Type", content_type)], BytesBody(data),
                                head_only)
        reply = self.static.reply(request, path)
        if reply is None:
            return self._text(404, NOT_FOUND, head_only)
        status, headers, body = reply
        return self._finish(status, headers, body, head_only)

    def too_large(self) -> Answer:
        """The answer to a request head longer than roomer reads."""
        return self._text(431, b"request head too large\n")

    def _health(self, head_only: bool) -> Answer:
        try:
            text = self._health_text()
        except Exception:
            log.exception("health_text raised")
            text = "error\n"
        state = text.split("\n", 1)[0].strip()
        status = HEALTH_STATUS.get(state, 503)
        if self._closing():
            status, state, text = 503, "closing", "closing\n"
        body = text if self.config.health_detail else state + "\n"
        return self._text(status, body.encode(), head_only, [("Cache-Control", "no-store")])

    def _text(self, status: int, body: bytes, head_only: bool = False,
              extra: list[tuple[str, str]] | None = None,
              content_type: str = TEXT_TYPE) -> Answer:
        headers = [("Content-Type", content_type), ("X-Content-Type-Options", "nosniff"),
                   *(extra or ())]
        return self._finish(status, headers, BytesBody(body), head_only)

    def _finish(self, status: int, headers: list[tuple[str, str]], body: Body | None,
                head_only: bool = False) -> Answer:
        # A HEAD gets the GET answer's headers, Content-Length included, and no body.
        head = head_bytes(status, headers, None if body is None else body.remaining)
        if head_only and body is not None:
            body.close()
            body = None
        counters = self.counters
        counters["http_answers"] += 1
        counters["http_open"] += 1
        return Answer(head, body, self._answered)

    def _answered(self) -> None:
        self.counters["http_open"] -= 1

    # WebSocket upgrades -------------------------------------------------------------------

    def upgrade(self, request: WSUpgradeRequest) -> Any:
        """picows' listener factory: the response to an upgrade request (picows writes it
        and closes unless it is a 101) with the listener of an accepted one."""
        try:
            return self._upgrade(request)
        except Exception:
            # picows would answer 500 with the exception's text as the body.
            log.exception("upgrade failed")
            return http_error(500, b"internal error\n")

    def _upgrade(self, request: WSUpgradeRequest) -> Any:
        problem = _bad_upgrade(request)
        if problem is not None:
            return http_error(400, problem)
        # Browsers list other tokens beside Upgrade (Firefox: "keep-alive, Upgrade");
        # picows compares the whole header with "upgrade", so give it the one token.
        request.headers["Connection"] = "Upgrade"
        if self._closing():
            return http_error(503, b"shutting down\n")
        allowed = self.config.allowed_origins
        if allowed is not None and request.headers.get("Origin") not in allowed:
            return http_error(403, b"origin not allowed\n")
        claims: Any = None
        authorize = self.config.authorize
        if authorize is not None:
            try:
                claims = authorize(request)
            except Deny:
                return http_error(401, b"unauthorized\n")
            except Exception:
                log.exception("authorize raised")
                return http_error(500, b"internal error\n")
            # An awaitable (an async authorize) is passed on as it is: picows answers
            # the upgrade now, and the connection awaits it before anything else
            # (Lifecycle.connected), its messages held.
        # A client's batch may reach BATCH_FRAME_MAX bytes: a server whose messages must
        # be smaller does not offer batches rather than close a batching client with 1009.
        protocol = subprotocol(request, self.config.max_message_size >= BATCH_FRAME_MAX)
        v2, batch = SUBPROTOCOLS[protocol] if protocol is not None else (False, False)
        listener = self._accept(request, claims, v2, batch)
        if protocol is None:
            return listener
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": protocol}),
            listener)
