"""The room list: what each game room shows of itself (`RoomListing`), this node's
copy of the cluster's list (`Replica`), and the clients' live watches of it
(`Watches`).

A watch is a *feed* shared by every watcher of the same namespace, type and filter: its
changes are encoded once per ``room_list_interval`` and copied to each watcher's outbox,
so a busy cluster sends a watcher at most a few updates a second and a thousand watchers
of the lobby cost one encode. A feed shows at most ``max_listed_rooms`` rooms: the rooms it
shows are tracked, and a slot freed is filled from the rooms it left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import frames

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["Feed", "Replica", "RoomListing", "Watches", "matches"]

Key = tuple[str, str]  # (namespace, room id)


@dataclass(frozen=True)
class RoomListing:
    """A game room as the room list shows it (``server.list_rooms``).

    Attributes:
        id: The room's id.
        type: Its type name.
        clients: Seats joined and being joined.
        max_clients: Its seats (None: no limit).
        locked: Whether it takes no new player (locked, or full).
        private: Joined by id only (never listed to clients, never matched).
        unlisted: Not listed to clients (join-or-create may pick it).
        metadata: What the room set with ``set_metadata`` (do not modify it).
        namespace: Its namespace (``""``: the default one).
        node: The id of the node that owns it (``""`` without a backplane).
        reserved: Seats reserved and not joined yet.
        created: When it was created on its node (the node's loop clock; for ordering).
    """

    id: str
    type: str
    clients: int
    max_clients: int | None
    locked: bool
    private: bool = False
    unlisted: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    namespace: str = ""
    node: str = ""
    reserved: int = 0
    created: float = 0.0

    def entry(self) -> dict[str, Any]:
        """What a client's watch shows of it (docs/protocol.md §10)."""
        return {"id": self.id, "type": self.type, "clients": self.clients,
                "max_clients": self.max_clients, "locked": self.locked,
                "metadata": self.metadata}

    @property
    def listed(self) -> bool:
        return not (self.private or self.unlisted)

    @property
    def open_seats(self) -> bool:
        """Whether join-or-create may try it."""
        return not (self.private or self.locked) and (
            self.max_clients is None or self.clients + self.reserved < self.max_clients)


def matches(listing: RoomListing, wanted: Mapping[str, Any]) -> bool:
    """Whether the listing's metadata holds every ``wanted`` key with that value."""
    metadata = listing.metadata
    return all(key in metadata and metadata[key] == value for key, value in wanted.items())


class Replica:
    """The rooms owned by other nodes, as their owners last published them, by
    (namespace, id), with their owners' keys. The rooms this node owns are not here:
    their listing is made from the room objects when it is read."""

    def __init__(self) -> None:
        self.rooms: dict[Key, RoomListing] = {}
        self.owners: dict[Key, str] = {}
        self.by_owner: dict[str, dict[Key, None]] = {}

    def put(self, key: Key, listing: RoomListing, owner: str) -> None:
        previous = self.owners.get(key)
        if previous is not None and previous != owner:
            self.by_owner.get(previous, {}).pop(key, None)
        self.rooms[key] = listing
        self.owners[key] = owner
        self.by_owner.setdefault(owner, {})[key] = None

    def drop(self, key: Key) -> RoomListing | None:
        owner = self.owners.pop(key, None)
        if owner is not None:
            rooms = self.by_owner.get(owner)
            if rooms is not None:
                rooms.pop(key, None)
                if not rooms:
                    del self.by_owner[owner]
        return self.rooms.pop(key, None)

    def drop_owner(self, owner: str) -> list[RoomListing]:
        """Forget every room of ``owner``; their listings."""
        dropped = []
        for key in list(self.by_owner.pop(owner, ())):
            listing = self.rooms.pop(key, None)
            self.owners.pop(key, None)
            if listing is not None:
                dropped.append(listing)
        return dropped


class Feed:
    """The watchers of one (namespace, type, filter) and the rooms they are shown."""

    __slots__ = ("filter", "key", "overflow", "shown", "watchers")

    def __init__(self, key: tuple[str, str, str], wanted: dict[str, Any]) -> None:
        self.key = key
        self.filter = wanted
        self.watchers: dict[str, Connection] = {}
        self.shown: dict[str, None] = {}  # ids, in the order they were shown
        self.overflow = False  # a matching room was left out for the limit

    def visible(self, listing: RoomListing | None) -> bool:
        return listing is not None and listing.listed and matches(listing, self.filter)


class Watches:
    """The clients' watches of one server, and the changes waiting for the next update.

    ``lookup(key)`` gives a room's listing (None: gone); ``rooms_of(namespace, type)``
    every listing of a type; ``send(feed, frame)`` copies a frame to a feed's watchers."""

    def __init__(self, limit: int, per_connection: int,
                 lookup: Callable[[Key], RoomListing | None],
                 rooms_of: Callable[[str, str], Iterable[RoomListing]]) -> None:
        self.limit = limit
        self.per_connection = per_connection
        self._lookup = lookup
        self._rooms_of = rooms_of
        self.feeds: dict[tuple[str, str, str], Feed] = {}
        self._by_type: dict[tuple[str, str], dict[Feed, None]] = {}
        self._of: dict[str, dict[tuple[str, str], Feed]] = {}  # connection id -> watches
        self.dirty: dict[Key, str] = {}  # changed rooms -> their type

    def __len__(self) -> int:
        return len(self._of)

    def changed(self, key: Key, type_name: str) -> None:
        if (key[0], type_name) in self._by_type:
            self.dirty[key] = type_name

    def watch(self, conn: Connection, namespace: str, type_name: str,
              wanted: dict[str, Any]) -> list[dict[str, Any]]:
        """Start (or replace) ``conn``'s watch of a type; the rooms it is shown now.

        Raises:
            ValueError: ``conn`` watches ``per_connection`` other types already.
        """
        mine = self._of.get(conn.id)
        slot = (namespace, type_name)
        if mine is not None and slot not in mine and len(mine) >= self.per_connection:
            raise ValueError(f"at most {self.per_connection} watches per connection")
        self.unwatch(conn, namespace, type_name)
        key = (namespace, type_name, json.dumps(wanted, sort_keys=True))
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(key, wanted)
            self._by_type.setdefault(slot, {})[feed] = None
            self._fill(feed)
        feed.watchers[conn.id] = conn
        self._of.setdefault(conn.id, {})[slot] = feed
        listed = [self._lookup((namespace, room_id)) for room_id in feed.shown]
        return [listing.entry() for listing in listed if listing is not None]

    def unwatch(self, conn: Connection, namespace: str, type_name: str) -> bool:
        mine = self._of.get(conn.id)
        feed = mine.pop((namespace, type_name), None) if mine else None
        if feed is None:
            return False
        if not mine:
            del self._of[conn.id]
        feed.watchers.pop(conn.id, None)
        if not feed.watchers:
            del self.feeds[feed.key]
            of_type = self._by_type[(namespace, type_name)]
            del of_type[feed]
            if not of_type:
                del self._by_type[(namespace, type_name)]
        return True

    def forget(self, conn: Connection, namespace: str | None = None) -> None:
        """``conn`` left ``namespace`` (every namespace when None): its watches end."""
        for ns, type_name in list(self._of.get(conn.id, ())):
            if namespace is None or ns == namespace:
                self.unwatch(conn, ns, type_name)

    def _fill(self, feed: Feed) -> None:
        """Show the feed rooms it has room for, oldest first."""
        namespace, type_name, _ = feed.key
        shown = feed.shown
        candidates = [listing for listing in self._rooms_of(namespace, type_name)
                      if listing.id not in shown and feed.visible(listing)]
        candidates.sort(key=lambda listing: listing.created)
        room = self.limit - len(shown)
        for listing in candidates[:max(0, room)]:
            shown[listing.id] = None
        feed.overflow = len(candidates) > room

    def flush(self, send: Callable[[Feed, bytes], None]) -> None:
        """Send every feed the changes since the last flush (one frame per feed)."""
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, {}
        by_slot: dict[tuple[str, str], list[Key]] = {}
        for key, type_name in dirty.items():
            by_slot.setdefault((key[0], type_name), []).append(key)
        for slot, keys in by_slot.items():
            for feed in list(self._by_type.get(slot, ())):
                self._update(feed, keys, send)

    def _update(self, feed: Feed, keys: list[Key], send: Callable[[Feed, bytes], None]
                ) -> None:
        changed: dict[str, dict[str, Any]] = {}
        removed: list[str] = []
        shown = feed.shown
        for key in keys:
            room_id = key[1]
            listing = self._lookup(key)
            if room_id in shown:
                if feed.visible(listing):
                    assert listing is not None
                    changed[room_id] = listing.entry()
                else:
                    del shown[room_id]
                    removed.append(room_id)
            elif feed.visible(listing):
                assert listing is not None
                if len(shown) < self.limit:
                    shown[room_id] = None
                    changed[room_id] = listing.entry()
                else:
                    feed.overflow = True
        if removed and feed.overflow:
            before = set(shown)
            self._fill(feed)
            for room_id in shown:
                if room_id not in before:
                    listing = self._lookup((feed.key[0], room_id))
                    if listing is not None:
                        changed[room_id] = listing.entry()
        if not changed and not removed:
            return
        body = json.dumps({"changed": list(changed.values()), "removed": removed})
        send(feed, frames.encode(True, feed.key[0], feed.key[1], "rooms.changes", "", "",
                                 body))
