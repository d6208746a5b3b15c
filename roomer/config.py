"""Every Server option, declared once: type, default, validation, docs and CLI flag.

``Server(**options)`` builds a `Config`; ``roomer serve`` derives its flags from
the fields that carry one (``flag`` in the field metadata), so an option cannot exist in
one place and be missing in the other.
"""

from __future__ import annotations

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

__all__ = ["RESUME_SECRET_ENV", "Config", "Routes", "check_route"]

#: Where a ``resume_secret`` left unset is read from: ``roomer serve --workers N`` puts
#: one there for its workers (unless it is set already), so they resume each other's
#: sessions.
RESUME_SECRET_ENV = "ROOMER_RESUME_SECRET"
# Below routing.STALL (0.25 s) by far: a sleep of the loop that long reads as a stall.
MAX_POLL_INTERVAL = 0.05


def _opt(default: Any, help: str, flag: str | None = None, **kw: Any) -> Any:
    # kw: the flag's metavar and choices; ``none``, what None means (``--flag none``);
    # ``shown``, the default in words where the value itself says nothing; ``scale``, what
    # a flag's number is multiplied by (a delay typed in milliseconds, held in seconds).
    return field(default=default, metadata={"help": help, "flag": flag, **kw})


@dataclass(frozen=True, kw_only=True)
class Config:
    """A Server's options. Frozen: a running server's options do not change under it.

    Invalid values raise ``TypeError`` (wrong type) or ``ValueError`` (out of range) here,
    before anything starts, whichever codec and fan-out implementation is in use.
    """

    authorize: Callable[[Any], Any] | None = _opt(
        None, "fn(request) -> claims at the upgrade; raise roomer.Deny for HTTP 401. An "
              "async fn (or one returning an awaitable) is awaited after the upgrade, "
              "within handshake_timeout, the client's messages held: Deny closes with "
              "1008, an error or the timeout with 1011")
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
    write_delay: float = _opt(
        0.0, "how long a receiver's outbox gathers frames before one write, so it takes "
             "several messages per system call: seconds, at most 1 (the flag takes "
             "milliseconds); 0 writes at the end of each loop turn. An outbox past "
             "flush_threshold is written at once, and a game room with a tick writes its "
             "members' frames with each tick",
        "--write-delay", metavar="MS", scale=0.001, shown="0 ms")
    poll_interval: float = _opt(
        0.0, "while clients keep the server busy, read their sockets at most once per this "
             "long: after a turn with their messages the loop sleeps out the rest of it, so "
             "one wake-up reads what many clients sent (less CPU per message, up to this "
             "much more latency): seconds, at most 0.05 (the flag takes milliseconds); 0 "
             "reads as soon as data comes. One tick, with no write_delay, reads and writes "
             "each client once per tick",
        "--poll-interval", metavar="MS", scale=0.001, shown="0 ms")
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
        100, "rooms one connection may be in at once, in all namespaces together, roots "
             "left out", "--max-rooms", metavar="N", none="unlimited")
    max_pending_asks: int = _opt(
        64, "asks of the server one client may leave unanswered at once; another raises "
            "RuntimeError in the asker (an ask fails at once when its client leaves its "
            "room or disconnects)", "--max-pending-asks", metavar="N")
    rate_limit: tuple[float, float] | None = _opt(
        (200, 1.0), "a token bucket per connection of COUNT frames per SECONDS that every "
                    "frame draws from; past it frames are dropped with one rate_limited "
                    "error per window, and as many drops again in a window close with 1008",
        "--rate-limit", metavar="COUNT/SECONDS", none="unlimited")
    byte_limit: tuple[float, float] | None = _opt(
        (1 << 20, 1.0), "a second bucket per connection of BYTES per SECONDS that every frame "
                        "draws its payload size from, so a few huge messages cannot pass "
                        "where many small ones would not (a frame larger than the bucket "
                        "passes when it is full, leaving it in debt); past it frames are "
                        "dropped with one rate_limited error per window",
        "--byte-limit", metavar="BYTES/SECONDS", none="unlimited")
    error_limit: tuple[float, float] | None = _opt(
        (100, 10.0), "COUNT error replies one connection may cause within SECONDS before "
                     "it is closed with 1008", "--error-limit", metavar="COUNT/SECONDS",
        none="unlimited")
    ping_interval: float | None = _opt(
        20.0, "ping a connection idle this many seconds", "--ping-interval",
        metavar="SECONDS", none="no pings, no idle close")
    ping_timeout: float = _opt(
        20.0, "a pinged connection silent this many seconds more is closed with 1011")
    handshake_timeout: float = _opt(5.0, "seconds allowed for the HTTP upgrade")
    resume_window: float = _opt(
        20.0, "seconds a dropped connection of a resumable session (a client that asked "
              "with session=new) is held, its id, rooms and messages kept, for the client "
              "to resume; 0 turns sessions off", "--resume-window", metavar="SECONDS")
    resume_secret: str | None = _opt(
        None, "secret that signs resume tokens; the nodes and workers that must resume "
              "each other's sessions share it (at least 16 characters)",
        shown="$ROOMER_RESUME_SECRET, else random per process (one per --workers group)")
    resume_replay: int = _opt(
        256 * 1024, "bytes of written messages a session keeps until its client "
                    "acknowledges them, to send again on a resume",
        "--resume-replay", metavar="BYTES")
    max_held_sessions: int = _opt(
        10_000, "dropped sessions held at once; past it the oldest ends (its client "
                "starts over)", "--max-held-sessions", metavar="COUNT")
    listen_backlog: int = _opt(
        4096, "connections the kernel queues for accept, a connect storm's burst (the "
              "kernel caps it at net.core.somaxconn)")
    metrics_path: str | None = _opt(
        "/metrics", "path of the Prometheus metrics page", "--metrics-path", metavar="PATH",
        none="not served")
    read_buffer_size: int = _opt(
        2048, "initial per-connection read buffer in bytes (picows' minimum is 2048; "
              "grows for larger messages and floods, cut back after them)",
        "--read-buffer-size", metavar="BYTES")
    backplane: str | None = _opt(
        None, "the broker the server processes of one cluster share rooms through: "
              "redis://host:6379/0 or nats://host:4222 (memory://name: servers in one "
              "process)", "--backplane", metavar="URL", none="this process alone")
    node_id: str | None = _opt(
        None, "this server's name among the cluster's nodes, unique among the live ones "
              "(A-Z a-z 0-9 - _, at most 64): a node started with a live node's id refuses "
              "to start", "--node-id", metavar="NAME", shown="host-pid-random")
    node_timeout: float = _opt(
        6.0, "seconds a node may go unheard (heartbeats every sixth of it) before the "
             "others announce its members as left", "--node-timeout", metavar="SECONDS")
    backplane_prefix: str = _opt(
        "roomer", "first token of every channel/subject name: clusters sharing a broker "
                  "use different prefixes", "--backplane-prefix", metavar="PREFIX")
    seat_reservation: float = _opt(
        15.0, "game rooms: seconds a reserved seat is held for its client (room.reserve), "
              "and a room created with nobody in it waits for a first player",
        "--seat-reservation", metavar="SECONDS")
    max_game_rooms: int = _opt(
        10_000, "game rooms one node may own at once, every type together (a type's "
                "max_rooms may be lower); past it a create answers room_limit",
        "--max-game-rooms", metavar="N")
    max_room_metadata: int = _opt(
        2048, "bytes of JSON a game room's metadata may take (it crosses the backplane "
              "and fills every watcher's list)")
    max_join_options: int = _opt(
        4096, "bytes of JSON the options of a join or create may take (kept on the player "
              "for its stay); past it invalid_options")
    room_list_interval: float = _opt(
        0.25, "seconds between two updates of one room-list watch: a busy cluster's "
              "changes are coalesced into one update per interval",
        "--room-list-interval", metavar="SECONDS")
    max_room_watches: int = _opt(
        8, "room-list watches one connection may hold (one per room type)")
    max_listed_rooms: int = _opt(
        100, "rooms one watch shows at most (its first list and what updates may add)")
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
        metadata={"help": "{path: (content_type, body)} served to plain GET and HEAD requests"})
    static_dir: str | None = _opt(
        None, "a folder whose files are served to plain GET and HEAD requests (no path "
              "leaves it)",
        "--static", metavar="DIR")
    http_timeout: float = _opt(
        60.0, "seconds a plain-HTTP answer may take to be written, file bodies included; a "
              "client that reads slower is cut off", "--http-timeout", metavar="SECONDS")
    http_max_answers: int = _opt(
        256, "plain-HTTP answers being written at once; past it requests get 503 with "
             "Retry-After (but /healthz and /metrics)", "--http-max-answers", metavar="N")
    health_detail: bool = _opt(
        False, "/healthz shows the whole health text (the backplane's address and state) "
               "rather than its first line (ok, degraded)", "--health-detail")

    def __post_init__(self) -> None:
        _check_callable("authorize", self.authorize)
        if self.allowed_origins is not None:
            if isinstance(self.allowed_origins, str) or not isinstance(
                    self.allowed_origins, Iterable):
                raise TypeError("allowed_origins must be an iterable of origin strings")
            origins = frozenset(self.allowed_origins)
            if not all(isinstance(o, str) for o in origins):
                raise TypeError("allowed_origins must hold origin strings")
            object.__setattr__(self, "allowed_origins", origins)
        for name in ("sync_broadcast", "root_presence", "allow_root_broadcast",
                     "health_detail"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False")
        _check_int("max_message_size", self.max_message_size, 20,
                   "the smallest message is 20 bytes")
        _check_int("outbox_limit", self.outbox_limit, 1, maximum=sys.maxsize // 2)
        _check_int("flush_threshold", self.flush_threshold, 1)
        _check_int("turn_budget", self.turn_budget, 1)
        _check_int("turn_messages", self.turn_messages, 1)
        _check_int("max_pending_asks", self.max_pending_asks, 1)
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
        if isinstance(self.write_delay, bool) or self.write_delay != 0:  # 0: no delay
            _check_seconds("write_delay", self.write_delay)
            if self.write_delay > 1:
                raise ValueError("write_delay must be at most 1 second (1000 ms)")
        if isinstance(self.poll_interval, bool) or self.poll_interval != 0:  # 0: none
            _check_seconds("poll_interval", self.poll_interval)
            if self.poll_interval > MAX_POLL_INTERVAL:
                raise ValueError(f"poll_interval must be at most {MAX_POLL_INTERVAL:g} "
                                 f"seconds ({MAX_POLL_INTERVAL * 1000:g} ms): a longer sleep "
                                 "would read as a stall of the server")
        _check_seconds("ping_timeout", self.ping_timeout)
        _check_seconds("handshake_timeout", self.handshake_timeout)
        if isinstance(self.resume_window, bool) or self.resume_window != 0:  # 0: off
            _check_seconds("resume_window", self.resume_window)
        if self.resume_secret is not None and (
                not isinstance(self.resume_secret, str) or len(self.resume_secret) < 16):
            raise ValueError("resume_secret must be a str of at least 16 characters, or None")
        _check_int("resume_replay", self.resume_replay, 1024)
        _check_int("max_held_sessions", self.max_held_sessions, 1)
        _check_seconds("http_timeout", self.http_timeout)
        _check_int("http_max_answers", self.http_max_answers, 1)
        if self.ping_interval is not None:
            _check_seconds("ping_interval", self.ping_interval)
        for name in ("rate_limit", "byte_limit", "error_limit"):
            pair = getattr(self, name)
            if pair is None:
                continue
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"{name} must be a (count, seconds) tuple or None")
            _check_seconds(f"{name} count", pair[0])
            _check_seconds(f"{name} seconds", pair[1])
            if pair[0] < 1:
                # A bucket that never holds a whole token refuses everything.
                raise ValueError(f"{name} count must be at least 1 (None: unlimited)")
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
        _check_seconds("seat_reservation", self.seat_reservation)
        _check_seconds("room_list_interval", self.room_list_interval)
        for name in ("max_game_rooms", "max_room_metadata", "max_join_options",
                     "max_room_watches", "max_listed_rooms"):
            _check_int(name, getattr(self, name), 1)
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
        object.__setattr__(self, "routes", Routes(self.routes))
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


def check_route(path: object, route: object) -> None:
    """TypeError/ValueError unless ``path`` -> ``route`` is a page roomer can serve: a
    path starting with "/" and a (content_type, body) pair of str and bytes."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"route path {path!r} must be a str starting with '/'")
    if (not isinstance(route, tuple) or len(route) != 2 or not isinstance(route[0], str)
            or not isinstance(route[1], (bytes, bytearray))):
        raise TypeError(f"route {path!r} must be a (content_type: str, body: bytes) tuple")
    if "\r" in route[0] or "\n" in route[0]:
        raise ValueError(f"route {path!r}: the content type may not hold a line break")


class Routes(dict[str, tuple[str, bytes]]):
    """``{path: (content_type, body)}`` served to plain GET requests, checked entry by
    entry as it is built and changed (an app may add pages after building its server), so
    a malformed page is refused where it is written, not answered with an error later."""

    def __init__(self, items: Mapping[str, tuple[str, bytes]] | None = None) -> None:
        super().__init__()
        for path, route in (items or {}).items():
            self[path] = route

    def __setitem__(self, path: str, route: tuple[str, bytes]) -> None:
        check_route(path, route)
        super().__setitem__(path, (route[0], bytes(route[1])))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for path, route in dict(*args, **kwargs).items():
            self[path] = route

    def setdefault(self, path: str, route: tuple[str, bytes]) -> tuple[str, bytes]:
        if path not in self:
            self[path] = route
        return self[path]

