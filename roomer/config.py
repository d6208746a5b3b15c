"""Every Server option, declared once: type, default, validation, docs and CLI flag.

``Server(**options)`` builds a :class:`Config`; ``roomer serve`` derives its flags from
the fields that carry one (``flag`` in the field metadata), so an option cannot exist in
one place and be missing in the other.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

# The backplane's own rules, so a Config is refused for what a Cluster would refuse. The
# backplane imports nothing of the server: no cycle.
from .backplane.cluster import NODE_ID
from .backplane.envelope import MAX_NAME
from .backplane.names import valid_prefix
from .backplane.transport import SCHEMES

__all__ = ["Config"]


def _opt(default: Any, help: str, flag: str | None = None, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, "flag": flag, **kw})


@dataclass(frozen=True, kw_only=True)
class Config:
    """A Server's options. Frozen: a running server's options do not change under it.

    Invalid values raise ``TypeError`` (wrong type) or ``ValueError`` (out of range) here,
    before anything starts, whichever codec and fan-out implementation is in use.
    """

    authorize: Callable[[Any], Any] | None = _opt(
        None, "fn(request) -> claims at the upgrade; raise roomer.Deny for HTTP 401")
    allowed_origins: frozenset[str] | None = _opt(
        None, "Origins allowed to open a WebSocket (others: HTTP 403); None allows any")
    sync_broadcast: bool = _opt(
        False, "every member gets every broadcast, in one global order; slow receivers "
               "make senders wait", "--sync-broadcast")
    max_message_size: int = _opt(
        1 << 20, "largest message accepted in bytes; larger closes with 1009",
        "--max-message-size", metavar="BYTES")
    outbox_limit: int = _opt(
        1 << 20, "bytes queued per connection before drops (async) or waits (sync)",
        "--outbox-limit", metavar="BYTES")
    slow_consumer: str = _opt(
        "drop", "async mode, a receiver over its outbox limit: 'drop' the message for it "
                "or 'disconnect' it with 1008", "--slow-consumer",
        choices=("drop", "disconnect"))
    write_timeout: float = _opt(
        10.0, "sync mode: disconnect a receiver over its limit for this many seconds",
        "--write-timeout", metavar="SECONDS")
    flush_threshold: int = _opt(
        64 * 1024, "an outbox past this many bytes is written at once, not at the turn's end")
    turn_budget: int = _opt(
        16 * 1024, "bytes one loop turn may queue per receiver it touched before the "
                   "sender is read again after the flush")
    turn_messages: int = _opt(
        64, "messages of one connection handled in one loop turn before it is read again "
            "after the flush (every kind of message counts)")
    root_presence: bool = _opt(
        False, "send new_member/member_left in root (costly in connect storms)",
        "--root-presence")
    allow_root_broadcast: bool = _opt(
        False, "let clients broadcast into root", "--allow-root-broadcast")
    max_room_name: int = _opt(128, "longest room name in UTF-8 bytes")
    max_event_name: int = _opt(64, "longest event name in UTF-8 bytes")
    max_rooms_per_connection: int | None = _opt(
        100, "rooms one connection may join besides root (None: unlimited)",
        "--max-rooms", metavar="N")
    rate_limit: tuple[float, float] | None = _opt(
        (200, 1.0), "(frames, seconds): a token bucket per connection that every frame "
                    "draws from; past it frames are dropped with one rate_limited error "
                    "per window, and as many drops again in a window close with 1008 "
                    "(None: unlimited)", "--rate-limit", metavar="COUNT/SECONDS")
    error_limit: tuple[float, float] | None = _opt(
        (100, 10.0), "(errors, seconds): error replies one connection may cause in a "
                     "window before it is closed with 1008 (None: unlimited)",
        "--error-limit", metavar="COUNT/SECONDS")
    ping_interval: float | None = _opt(
        20.0, "ping a connection idle this many seconds (None: no pings, no idle close)",
        "--ping-interval", metavar="SECONDS")
    ping_timeout: float = _opt(
        20.0, "a pinged connection silent this many seconds more is closed with 1011")
    handshake_timeout: float = _opt(5.0, "seconds allowed for the HTTP upgrade")
    listen_backlog: int = _opt(
        4096, "connections the kernel queues for accept, a connect storm's burst (the "
              "kernel caps it at net.core.somaxconn)")
    metrics_path: str | None = _opt(
        "/metrics", "path of the Prometheus metrics page (None: not served)",
        "--metrics-path", metavar="PATH")
    read_buffer_size: int = _opt(
        2048, "initial per-connection read buffer in bytes (picows' minimum is 2048; "
              "grows for larger messages and floods, cut back after them)",
        "--read-buffer-size", metavar="BYTES")
    backplane: str | None = _opt(
        None, "the broker the server processes of one cluster share rooms through: "
              "redis://host:6379/0 or nats://host:4222 (memory://name: servers in one "
              "process); None: this process alone", "--backplane", metavar="URL")
    node_id: str | None = _opt(
        None, "this server's name among the cluster's nodes, unique among the live ones "
              "(A-Z a-z 0-9 - _, at most 64; default host-pid-random): a node started with "
              "a live node's id refuses to start", "--node-id", metavar="NAME")
    node_timeout: float = _opt(
        6.0, "seconds a node may go unheard (heartbeats every sixth of it) before the "
             "others announce its members as left", "--node-timeout", metavar="SECONDS")
    backplane_prefix: str = _opt(
        "roomer", "first token of every channel/subject name: clusters sharing a broker "
                  "use different prefixes", "--backplane-prefix", metavar="PREFIX")
    backplane_buffer: int = _opt(
        16 << 20, "bytes of frames this node may have waiting for the broker; past it "
                  "frames to other nodes are dropped and counted (at least twice "
                  "max_message_size)", "--backplane-buffer", metavar="BYTES")
    backplane_sender_share: float = _opt(
        0.125, "fraction of backplane_buffer one client's frames may hold (one frame "
               "whatever its size when it holds none); past it that client's frames to "
               "other nodes are dropped and counted, not everyone's",
        "--backplane-sender-share", metavar="FRACTION")
    backplane_probe_timeout: float = _opt(
        1.5, "seconds a round trip to the broker (probed every third of it) may go "
             "unanswered before the link is declared down (a stalled broker)",
        "--backplane-probe-timeout", metavar="SECONDS")
    routes: Mapping[str, tuple[str, bytes]] = field(
        default_factory=dict,
        metadata={"help": "{path: (content_type, body)} served to plain GET requests"})
    static_dir: str | None = _opt(
        None, "a folder whose files are served to plain GET requests (no path leaves it)",
        "--static", metavar="DIR")

    def __post_init__(self) -> None:
        _check_callable("authorize", self.authorize)
        if self.authorize is not None and _is_async(self.authorize):
            raise TypeError(
                "authorize must be a plain function: picows answers the upgrade "
                "synchronously. Do async checks in an on_connect hook (raise roomer.Deny "
                "there to close with 1008)")
        if self.allowed_origins is not None:
            if isinstance(self.allowed_origins, str) or not isinstance(
                    self.allowed_origins, Iterable):
                raise TypeError("allowed_origins must be an iterable of origin strings")
            origins = frozenset(self.allowed_origins)
            if not all(isinstance(o, str) for o in origins):
                raise TypeError("allowed_origins must hold origin strings")
            object.__setattr__(self, "allowed_origins", origins)
        for name in ("sync_broadcast", "root_presence", "allow_root_broadcast"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False")
        _check_int("max_message_size", self.max_message_size, 20,
                   "the smallest message is 20 bytes")
        _check_int("outbox_limit", self.outbox_limit, 1, maximum=sys.maxsize // 2)
        _check_int("flush_threshold", self.flush_threshold, 1)
        _check_int("turn_budget", self.turn_budget, 1)
        _check_int("turn_messages", self.turn_messages, 1)
        _check_int("listen_backlog", self.listen_backlog, 1)
        _check_int("max_room_name", self.max_room_name, 1)
        _check_int("max_event_name", self.max_event_name, 1)
        _check_int("read_buffer_size", self.read_buffer_size, 2048,
                   "picows never allocates a smaller read buffer")
        if self.max_rooms_per_connection is not None:
            _check_int("max_rooms_per_connection", self.max_rooms_per_connection, 1)
        if self.slow_consumer not in ("drop", "disconnect"):
            raise ValueError("slow_consumer must be 'drop' or 'disconnect'")
        _check_seconds("write_timeout", self.write_timeout)
        _check_seconds("ping_timeout", self.ping_timeout)
        _check_seconds("handshake_timeout", self.handshake_timeout)
        if self.ping_interval is not None:
            _check_seconds("ping_interval", self.ping_interval)
        for name in ("rate_limit", "error_limit"):
            pair = getattr(self, name)
            if pair is None:
                continue
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"{name} must be a (count, seconds) tuple or None")
            _check_seconds(f"{name} count", pair[0])
            _check_seconds(f"{name} seconds", pair[1])
        if self.backplane is not None:
            if not isinstance(self.backplane, str):
                raise TypeError("backplane must be a URL string or None")
            scheme = self.backplane.partition("://")[0].lower()
            if scheme not in SCHEMES:
                raise ValueError("backplane: use redis://host:port/db, rediss://..., "
                                 "nats://host:port or memory://name")
        if self.node_id is not None and (not isinstance(self.node_id, str) or not (
                NODE_ID.fullmatch(self.node_id))):
            raise ValueError("node_id: 1-64 characters of A-Z a-z 0-9 - _")
        if self.backplane is not None:
            self.check_namespace("")
        _check_seconds("node_timeout", self.node_timeout)
        if not valid_prefix(self.backplane_prefix):
            raise ValueError("backplane_prefix: dot-separated tokens of A-Z a-z 0-9 - _")
        _check_int("backplane_buffer", self.backplane_buffer, 64 * 1024)
        if self.backplane is not None and self.backplane_buffer < 2 * self.max_message_size:
            raise ValueError(
                f"backplane_buffer ({self.backplane_buffer}) must be at least twice "
                f"max_message_size ({self.max_message_size}): the largest message a node "
                "relays to the others is half the buffer")
        _check_seconds("backplane_sender_share", self.backplane_sender_share)
        if self.backplane_sender_share > 1:
            raise ValueError("backplane_sender_share is a fraction of backplane_buffer: "
                             "at most 1")
        _check_seconds("backplane_probe_timeout", self.backplane_probe_timeout)
        if self.backplane_probe_timeout < 0.1:
            raise ValueError("backplane_probe_timeout must be at least 0.1 s")
        if self.metrics_path is not None and (
                not isinstance(self.metrics_path, str) or not self.metrics_path.startswith("/")):
            raise ValueError("metrics_path must be a path starting with '/', or None")
        if not isinstance(self.routes, Mapping):
            raise TypeError("routes must be a mapping {path: (content_type, body)}")
        object.__setattr__(self, "routes", dict(self.routes))
        _check_dir(self, "static_dir")

    def check_namespace(self, name: str) -> None:
        """With a backplane, ``ValueError`` unless every room of namespace ``name`` (``""``
        for the default one) fits the backplane's one-byte name length as the cluster names
        it (``name\x00room``). Server.namespace() checks each namespace declared."""
        if self.backplane is None:
            return
        extra = len(name.encode()) + 1 if name else 0
        if extra + self.max_room_name > MAX_NAME:
            where = f"namespace {name!r} + 1 byte + " if name else ""
            raise ValueError(
                f"with a backplane, {where}max_room_name ({self.max_room_name}) must be at "
                f"most {MAX_NAME} bytes: lower max_room_name" + (
                    " or use a shorter namespace name" if name else ""))

    @classmethod
    def cli_options(cls) -> list[tuple[str, Any]]:
        """(name, dataclass field) of every option that has a ``roomer serve`` flag."""
        return [(f.name, f) for f in fields(cls) if f.metadata.get("flag")]

    @classmethod
    def allows_none(cls, name: str) -> bool:
        return type(None) in get_args(get_type_hints(cls)[name])

    @classmethod
    def option_type(cls, name: str) -> type:
        """The plain type of an option (``int`` for ``int | None``)."""
        hint = get_type_hints(cls)[name]
        for arg in get_args(hint) or (hint,):
            if arg is not type(None):
                return get_origin(arg) or arg
        raise TypeError(f"option {name} has no type")



def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 (a callable object's own method)


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None")


def _check_int(name: str, value: object, minimum: int, why: str = "",
               maximum: int = sys.maxsize) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}" + (f" ({why})" if why else ""))
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum}")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number")


def _check_dir(config: Config, name: str) -> None:
    value = getattr(config, name)
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a folder path or None")
    path = os.path.abspath(os.fspath(value))
    if not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is not a folder")
    object.__setattr__(config, name, path)
