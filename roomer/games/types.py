"""A room type as ``define`` registers it: its class and settings, checked once."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..handlers import RESERVED_EVENTS
from .room import GameRoom, handlers_of, is_window

__all__ = ["SETTINGS", "RoomType", "check_seats", "check_tick_rate", "make_type",
           "split_id"]

#: A type name: it starts every room id of the type (``type:suffix``).
TYPE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: The settings ``define`` takes; those also class attributes of GameRoom default there.
SETTINGS = ("max_clients", "tick_rate", "auto_dispose", "filter_by", "sort_by", "max_rooms",
            "allow_create", "resume_window")

MIN_TICK_RATE, MAX_TICK_RATE = 1, 60


def check_seats(seats: object) -> None:
    if seats is None:
        return
    if isinstance(seats, bool) or not isinstance(seats, int) or seats < 1:
        raise ValueError("max_clients must be a positive int or None")


def check_tick_rate(rate: object) -> None:
    if rate is None:
        return
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(
            rate) or not MIN_TICK_RATE <= rate <= MAX_TICK_RATE:
        raise ValueError(f"tick_rate must be between {MIN_TICK_RATE} and {MAX_TICK_RATE} "
                         "ticks a second, or None")


@dataclass(frozen=True)
class RoomType:
    """One defined type of one namespace."""

    namespace: str
    name: str
    cls: type[GameRoom]
    max_clients: int | None
    tick_rate: float | None
    auto_dispose: bool
    filter_by: tuple[str, ...]
    sort_by: tuple[tuple[str, int], ...]
    max_rooms: int | None
    allow_create: bool
    #: Seconds a dropped player's session is held (None: the server's resume_window).
    resume_window: float | None
    #: The message handlers of ``cls`` by event (roomer.on_message).
    handlers: Mapping[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        return {"max_clients": self.max_clients, "tick_rate": self.tick_rate,
                "auto_dispose": self.auto_dispose}


def make_type(namespace: str, name: str, cls: object, settings: Mapping[str, Any]
              ) -> RoomType:
    """A checked RoomType; ValueError/TypeError for what ``define`` must refuse."""
    if not isinstance(name, str) or not TYPE_NAME.fullmatch(name):
        raise ValueError("a room type name is 1-32 characters of A-Z a-z 0-9 _ - (it "
                         "starts the ids of its rooms: type:suffix)")
    if not isinstance(cls, type) or not issubclass(cls, GameRoom) or cls is GameRoom:
        raise TypeError("define takes a subclass of roomer.GameRoom")
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown room type settings: {sorted(unknown)} (known: "
                        f"{', '.join(SETTINGS)})")
    handlers = handlers_of(cls)
    for event in handlers:
        if event in RESERVED_EVENTS or event in ("room.closed", "rooms.changes"):
            raise ValueError(f"event name {event!r} is reserved")

    def pick(key: str, default: Any) -> Any:
        return settings[key] if key in settings else getattr(cls, key, default)

    max_clients = pick("max_clients", None)
    check_seats(max_clients)
    tick_rate = pick("tick_rate", None)
    check_tick_rate(tick_rate)
    auto_dispose = pick("auto_dispose", True)
    allow_create = settings.get("allow_create", True)
    for flag, value in (("auto_dispose", auto_dispose), ("allow_create", allow_create)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False")
    filter_by = settings.get("filter_by", ())
    if isinstance(filter_by, str) or not all(isinstance(k, str) and k for k in filter_by):
        raise TypeError("filter_by must be a sequence of metadata keys (str)")
    sort_by = settings.get("sort_by")
    order: tuple[tuple[str, int], ...] = ()
    if sort_by is not None:
        if not isinstance(sort_by, Mapping):
            raise TypeError('sort_by must be a mapping like {"clients": -1}')
        for key, direction in sort_by.items():
            if not isinstance(key, str) or direction not in (1, -1):
                raise ValueError("sort_by maps a key (\"clients\", \"max_clients\" or a "
                                 "metadata key) to 1 (ascending) or -1 (descending)")
        order = tuple(sort_by.items())
    max_rooms = settings.get("max_rooms")
    if max_rooms is not None and (isinstance(max_rooms, bool) or not isinstance(
            max_rooms, int) or max_rooms < 1):
        raise ValueError("max_rooms must be a positive int or None")
    resume_window = pick("resume_window", None)
    if resume_window is not None and not is_window(resume_window):
        raise ValueError("resume_window must be seconds (0: a dropped player leaves at "
                         "once) or None (the server's)")
    return RoomType(namespace, name, cls, max_clients, tick_rate, auto_dispose,
                    tuple(filter_by), order, max_rooms, allow_create, resume_window, handlers)


def split_id(room: str) -> tuple[str, str]:
    """(type, suffix) of a room name; ("", "") when it has no ``type:`` prefix."""
    sep = room.find(":")
    if sep <= 0:
        return "", ""
    return room[:sep], room[sep + 1:]
