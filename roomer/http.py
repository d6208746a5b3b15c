"""The HTTP side of the roomer port (docs/design.md, "HTTP"): plain GET routes, /healthz, /metrics,
and the checks an upgrade passes (headers, origin, authorize) before it becomes a
WebSocket.

picows hands each request to :meth:`HttpSide.upgrade` before answering; it returns a
response to send (and close), or the listener that takes the upgraded connection.
Every answer's body is a fixed text: nothing of the request is echoed back.
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
from .static_files import StaticFiles

__all__ = ["HttpSide", "connection_tokens", "subprotocol"]

# Subprotocols a client may offer (docs/protocol.md §1), the newest offered winning
# wherever it is in the list: offering roomer.v2 means speaking it.
SUBPROTOCOLS = {"roomer.v2": True, "roomer.v1": False}

log = logging.getLogger("roomer")

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


def http_error(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(status, body, {"Content-Type": TEXT_TYPE}),
        None)


def http_ok(body: bytes, content_type: str) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_ok_response(body, {"Content-Type": content_type}), None)


def connection_tokens(request: WSUpgradeRequest) -> set[str]:
    """The tokens of every Connection header, lowercased (RFC 9110 §7.6.1: a list)."""
    return {token.strip().lower()
            for value in request.headers.getall("Connection", ())
            for token in value.split(",")}


def subprotocol(request: WSUpgradeRequest) -> str | None:
    """The newest roomer subprotocol the client offered (None: plain v1, none named)."""
    offered = {token.strip()
               for value in request.headers.getall("Sec-WebSocket-Protocol", ())
               for token in value.split(",")}
    return next((name for name in SUBPROTOCOLS if name in offered), None)


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
    """Answers plain HTTP and vets upgrades; ``accept(request, claims, v2)`` makes the
    listener of an upgrade that passed (``v2``: it negotiated roomer.v2; ``claims`` is
    an awaitable when ``authorize`` is async)."""

    def __init__(self, config: Config, routes: dict[str, tuple[str, bytes]],
                 metrics_text: Callable[[], str], health_text: Callable[[], str],
                 closing: Callable[[], bool],
                 accept: Callable[[WSUpgradeRequest, Any, bool], Any]) -> None:
        self.config = config
        self.routes = routes
        self._metrics_text = metrics_text
        self._health_text = health_text
        self._closing = closing
        self._accept = accept
        self.static = StaticFiles(config.static_dir)

    def upgrade(self, request: WSUpgradeRequest) -> Any:
        path = request.path.split(b"?", 1)[0].decode("latin-1")
        if "upgrade" not in connection_tokens(request):
            return self._plain(path, request)
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
        protocol = subprotocol(request)
        listener = self._accept(request, claims, protocol is not None and SUBPROTOCOLS[protocol])
        if protocol is None:
            return listener
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": protocol}),
            listener)

    def _plain(self, path: str, request: WSUpgradeRequest) -> Any:
        if path == "/healthz":
            return http_ok(self._health_text().encode(), TEXT_TYPE)
        if path == self.config.metrics_path:
            return http_ok(self._metrics_text().encode(), METRICS_TYPE)
        route = self.routes.get(path)
        if route is None:
            return self.static.respond(request)
        content_type, body = route
        return http_ok(body, content_type)
