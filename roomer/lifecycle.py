"""A connection from its upgrade to its end, with no I/O: on_connect (which may refuse
it), acceptance into the default namespace and its root room (and the rooms joined while
on_connect ran), on_connected, and at the end leaving every namespace it was in.

The socket side (roomer/server.py) calls `Lifecycle.connected` once the WebSocket
is up and `Lifecycle.disconnected` once it is gone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .errors import Deny
from .hooks import Hooks
from .inbound import CONNECTING
from .registry import ROOT

if TYPE_CHECKING:
    from .connection import Connection
    from .core import Core

__all__ = ["Lifecycle"]

log = logging.getLogger("roomer")


class Lifecycle:
    """Admits connections into the server and takes them out (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def connected(self, conn: Connection, authorizing: Awaitable[Any] | None = None
                  ) -> None:
        """The WebSocket is up: an async ``authorize`` decides first (``authorizing``),
        then on_connect, then the client is accepted."""
        core = self._core
        core.metrics.counters["connections_total"] += 1
        if core.closing:
            _close_awaitable(authorizing)
            conn.stop(1001, "server shutdown", flush=True, graceful=True)
            return
        if authorizing is not None:
            # What it sends meanwhile waits for the verdict, as during on_connect.
            conn.inbound.defer()
            core.spawn(self._authorize(conn, authorizing))
            return
        self._on_connect(conn)

    async def _authorize(self, conn: Connection, authorizing: Awaitable[Any]) -> None:
        """An async ``authorize``, within ``handshake_timeout``: its result is the
        connection's claims; Deny closes with 1008, an error or the timeout with 1011."""
        try:
            claims = await asyncio.wait_for(authorizing,
                                            self._core.config.handshake_timeout)
        except asyncio.CancelledError:
            conn.stop(1001, "server shutdown", flush=False, graceful=False)
            raise
        except Deny:
            conn.stop(1008, "unauthorized", flush=True, graceful=True)
            return
        except TimeoutError:
            log.warning("authorize did not decide within handshake_timeout")
            conn.stop(1011, "authorization timed out", flush=True, graceful=True)
            return
        except Exception:
            log.exception("authorize raised")
            conn.stop(1011, "internal error", flush=True, graceful=True)
            return
        if conn.inbound.state != CONNECTING:
            return  # gone meanwhile
        if self._core.closing:
            conn.stop(1001, "server shutdown", flush=True, graceful=True)
            return
        conn.claims = claims
        self._on_connect(conn)
        if conn.inbound.open:
            self._core.router.drain(conn)

    def _on_connect(self, conn: Connection) -> None:
        core = self._core
        try:
            pending = Hooks.run(core.namespaces[""].hooks.connect, conn)
        except Exception as exc:
            self._refuse(conn, exc)
            return
        if pending is None:
            self._accept(conn)
        else:
            # What it sends meanwhile waits for the hooks' verdict.
            conn.inbound.defer()
            core.spawn(self._accept_later(conn, pending))

    def _refuse(self, conn: Connection, exc: Exception) -> None:
        if isinstance(exc, Deny):
            conn.stop(1008, str(exc), flush=True, graceful=True)
        else:
            log.error("on_connect hook raised", exc_info=exc)
            conn.stop(1011, "internal error", flush=True, graceful=True)

    async def _accept_later(self, conn: Connection, pending: Awaitable[None]) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            # Shutdown cancels this while on_connect runs: the client is in no
            # namespace yet, so it is closed here (else shutdown would wait for it).
            conn.stop(1001, "server shutdown", flush=False, graceful=False)
            raise
        except Exception as exc:
            self._refuse(conn, exc)
            return
        if conn.inbound.state != CONNECTING:
            return  # gone while on_connect ran
        if self._core.closing:
            conn.stop(1001, "server shutdown", flush=True, graceful=True)
            return
        self._accept(conn)
        self._core.router.drain(conn)

    def _accept(self, conn: Connection) -> None:
        conn.inbound.accept()
        default = self._core.namespaces[""]
        registry = default.registry
        registry.accept(conn)
        rooms = [ROOT, *(conn._pending_joins or ())]
        conn._pending_joins = None
        for i, room in enumerate(rooms):
            pending = registry.add_member(conn, room, announce=i > 0)
            if pending is not None:
                # The backplane learns who is in the room first: the client's messages
                # wait behind its joins.
                conn.inbound.busy = True
                conn.inbound.defer()
                self._core.spawn(self._finish_joins(conn, pending, rooms[i + 1:], i == 0))
                return
            if i == 0:
                self._core.sessions.accepted(conn)  # its token, after the root join_ack
        self._core.after(default.hooks.connected, conn, what="on_connected")

    async def _finish_joins(self, conn: Connection, pending: Awaitable[None],
                            rooms: list[str], root: bool) -> None:
        registry = self._core.namespaces[""].registry
        try:
            await pending
            if root:
                self._core.sessions.accepted(conn)
            for room in rooms:
                if not conn.inbound.open:
                    break
                joining = registry.add_member(conn, room)
                if joining is not None:
                    await joining
        finally:
            conn.inbound.busy = False
        if conn.inbound.open:
            self._core.after(self._core.namespaces[""].hooks.connected, conn,
                             what="on_connected")
        self._core.router.drain(conn)

    def disconnected(self, conn: Connection) -> None:
        """The socket is gone: the client leaves every namespace it is in, the default
        one last (rooms left: on_leave with Deny ignored, member_left, on_left; then
        on_disconnect)."""
        conn.inbound.gone()
        conn.asks.fail("the client disconnected")
        namespaces = self._core.namespaces
        if namespaces[""].registry.conns.get(conn.id) is not conn:
            return  # never accepted: in no room
        for name in list(conn._spaces or ()):
            namespaces[name].leave_namespace(conn)
        namespaces[""].leave_namespace(conn)


def _close_awaitable(pending: Awaitable[Any] | None) -> None:
    """An awaitable that will never be awaited: a coroutine is closed (no warning)."""
    if pending is not None and inspect.iscoroutine(pending):
        pending.close()
