"""The HTTP side of the roomer port (DESIGN §7): plain GET routes, /healthz, /metrics,
and the checks an upgrade passes (origin, authorize) before it becomes a WebSocket.

picows hands each request to :meth:`HttpSide.upgrade` before answering; it returns a
response to send (and close), or the listener that takes the upgraded connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from .config import Config
from .errors import Deny
from .static_files import StaticFiles

__all__ = ["HttpSide"]

log = logging.getLogger("roomer")

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def http_error(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(status, body), None)


def http_ok(body: bytes, content_type: str) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_ok_response(body, {"Content-Type": content_type}), None)


class HttpSide:
    """Answers plain HTTP and vets upgrades; ``accept(request, claims)`` makes the
    listener of an upgrade that passed."""

    def __init__(self, config: Config, routes: dict[str, tuple[str, bytes]],
                 metrics_text: Callable[[], str], closing: Callable[[], bool],
                 accept: Callable[[WSUpgradeRequest, Any], Any]) -> None:
        self.config = config
        self.routes = routes
        self._metrics_text = metrics_text
        self._closing = closing
        self._accept = accept
        self.static = StaticFiles(config.static_dir)

    def upgrade(self, request: WSUpgradeRequest) -> Any:
        path = request.path.split(b"?", 1)[0].decode("latin-1")
        if path == "/healthz":
            return http_ok(b"ok\n", "text/plain; charset=utf-8")
        if path == "/metrics":
            return http_ok(self._metrics_text().encode(), METRICS_TYPE)
        if "upgrade" not in request.headers.get("Connection", "").lower():
            route = self.routes.get(path)
            if route is None:
                return self.static.respond(request)
            content_type, body = route
            return http_ok(body, content_type)
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
        return self._accept(request, claims)
