"""Channel (Redis) and subject (NATS) names the backplane publishes on.

Every name is ``<prefix>.<kind>[.<token>]``, made only of ``A-Z a-z 0-9 - _`` and dots
between tokens, so it is a valid NATS subject without wildcards and a plain Redis channel:

=================================  =====================================================
``<prefix>.room.<room>``           a room's frames and its members' presence; subscribed
                                   by the nodes that have local members in the room
``<prefix>.all``                   ``publish_all`` frames; every node subscribes
``<prefix>.client.<id>``           direct messages to one client; subscribed only by the
                                   node holding that client
``<prefix>.node.<node key>``       answers addressed to one node (sync answers, hellos)
``<prefix>.ctl``                   heartbeats, hello, goodbye, member-list requests
=================================  =====================================================

A room name or client id is arbitrary UTF-8: each byte outside ``A-Z a-z 0-9 -`` is written
``_XX`` (two upper-case hex digits; ``_`` itself is ``_5F``), so ``.``, ``*``, ``>`` and
spaces never become separators or wildcards, distinct names never share a channel, and
the common names ("lobby", a UUID) read as themselves. 128 bytes of room name make at most
384 characters.
"""

from __future__ import annotations

import re

__all__ = ["Names", "decode_token", "encode_token", "valid_prefix"]

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9-]+")
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPED = re.compile(r"_([0-9A-F]{2})")


def encode_token(name: str) -> str:
    """One subject token for an arbitrary non-empty name (reversible, see the module doc)."""
    if not name:
        raise ValueError("an empty name has no channel")
    if _SAFE_TOKEN.fullmatch(name):
        return name
    return "".join(chr(b) if b in _SAFE_BYTES else f"_{b:02X}" for b in name.encode())


def decode_token(token: str) -> str:
    """The name :func:`encode_token` made ``token`` from."""
    raw = bytearray()
    pos = 0
    for match in _ESCAPED.finditer(token):
        raw += token[pos:match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += token[pos:].encode("ascii")
    return raw.decode()


def valid_prefix(prefix: str) -> bool:
    """Dot-separated tokens of ``A-Z a-z 0-9 - _``: no wildcard, space or empty token."""
    return isinstance(prefix, str) and _PREFIX.fullmatch(prefix) is not None


class Names:
    """The channel names of one cluster (one ``prefix``)."""

    __slots__ = ("all", "ctl", "prefix")

    def __init__(self, prefix: str = "roomer") -> None:
        if not valid_prefix(prefix):
            raise ValueError(
                f"backplane prefix {prefix!r}: use dot-separated tokens of A-Z a-z 0-9 - _")
        self.prefix = prefix
        self.all = f"{prefix}.all"
        self.ctl = f"{prefix}.ctl"

    def room(self, room: str) -> str:
        return f"{self.prefix}.room.{encode_token(room)}"

    def client(self, member: str) -> str:
        return f"{self.prefix}.client.{encode_token(member)}"

    def node(self, key: str) -> str:
        return f"{self.prefix}.node.{encode_token(key)}"
