"""Exceptions raised by roomer. Kept in plain Python so both codec twins share them."""

from __future__ import annotations

import json

__all__ = ["AskTimeout", "ClientError", "Deny", "ExtensionMismatch", "ProtocolError",
           "RoomerError"]


class RoomerError(Exception):
    """Base class of roomer's errors.

    Raised from a handler or hook, its message is shown to the client in the
    ``error`` event (other exceptions show only "internal error").
    """

    code = "handler_error"


class ProtocolError(RoomerError, ValueError):
    """Bytes that are not a valid roomer message.

    ``code`` is ``"malformed"`` (lengths or header do not fit the bytes) or
    ``"invalid_name"`` (a name is not valid UTF-8). ``namespace`` (v2 only), ``room``
    and ``event`` carry those names when they are valid UTF-8 themselves, so an
    ``error`` reply can name them; ``None`` when unknown (or, for ``namespace``, on v1).
    ``kind`` and ``id`` are a v2 message's header once it passed its checks (an
    ask's id, say, so a server can answer with an error reply), else ``None``.
    """

    def __init__(
        self,
        message: str,
        code: str = "malformed",
        room: str | None = None,
        event: str | None = None,
        *,
        namespace: str | None = None,
        kind: int | None = None,
        id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.room = room
        self.event = event
        self.namespace = namespace
        self.kind = kind
        self.id = id


class Deny(RoomerError):
    """Refuse something from a hook or handler: a connection, a join, a leave, a message.

    From ``authorize`` it becomes HTTP 401 (its text not exposed); from ``on_connect``
    a close with 1008 and the text as reason; from ``on_join`` a ``join_denied`` error;
    from ``on_leave`` a ``leave_denied`` error; from a handler a ``handler_error``
    carrying the text.
    """

    code = "denied"


class ExtensionMismatch(RuntimeError):
    """A compiled roomer module finds other libraries than it was built against.

    Raised at import (never silently replaced by the pure-Python twin): roomer._fanout
    bakes picows' C layout in, so it only loads beside the exact picows it was built with.
    """


class ClientError(RoomerError):
    """The other side refused a request: an ``error`` event a server sent for a request of
    a client (a refused join...), or an error reply to an ask (either way).

    ``code`` is the refusing side's error code (``join_denied``, ``invalid_name``...).
    """

    def __init__(self, code: str, message: str, event: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.server_message = message
        self.event = event

    @classmethod
    def from_reply(cls, payload: bytes, event: str = "") -> ClientError:
        """The error an error reply's payload (docs/protocol.md §7) carries; a payload that
        is not its JSON object is reported as ``malformed``, never raised."""
        try:
            info = json.loads(payload)
            code, message = str(info["code"]), str(info.get("message", ""))
        except (ValueError, TypeError, KeyError):
            code, message = "malformed", "the error reply's payload is not its JSON object"
        return cls(code, message, event)


class AskTimeout(RoomerError, TimeoutError):
    """An ask (docs/protocol.md §7) got no reply within its timeout; nothing waits on it
    any more, and a late reply is counted and ignored."""

    code = "timeout"
