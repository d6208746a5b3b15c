"""The bytes the cluster protocol puts on the broker (version 2: frames carry a sequence
number; nodes of version 1 cannot share a broker with it).

Every message is ``kind (1 byte) | n (1 byte) | origin (n bytes) | body``. ``origin`` is the
sending node's key, ``<node id>:<incarnation>`` in ASCII. The body by kind:

====  ===================  ====================================================  ===========
kind  name                 body                                                  channel
====  ===================  ====================================================  ===========
F     room frame           ``seq (8 bytes) | e (1 byte) | exclude id (e bytes)   room
                           | frame``
A     frame to all         ``seq | e | exclude id | frame``                      all
D     direct frame         ``seq | frame`` (the client is named by the channel)  client
J     member joined        the member id (UTF-8)                                 room
L     member left          the member id                                         room
W     member dropped       the member id: its session is held (it may be back)   room
N     member here          the member id: back on this node, or moved here from  room
                           another (the others forget it there)
T     session claim        JSON: a node asks the holder of the session           client
                           (``id``, ``nonce``, ``received``, ``v2``, ``claims``)
O     session offer        JSON: the holder's answer (``id``, ``ok``, ``rooms``)  node
Y     ready to take over   JSON ``{"id"}``: the claimer follows the rooms now     node
Z     session handed over  ``u32 length | JSON | missed bytes``: the cut and      node
                           the bytes the client has not received
S     members (last part)  a name list: the sender's local members of the room   room
s     members (more)       a name list; an ``S`` follows with the rest           room
H     heartbeat            empty on ``ctl``; on a node channel (the answer to a  ctl, node
                           probe or a hello) ``p`` or ``i`` and the count of
                           other nodes the sender knows (ASCII digits)
P     probe                empty: "I am starting: who is alive?" (answered, but   ctl
                           the sender is not counted as a node yet)
I     hello                empty: "I (re)joined, tell me who is alive"           ctl
B     goodbye              empty: the sender stops; its members left             ctl
G     going                empty: the sender shuts down and hands its sessions   ctl
                           over; it takes none any more
Q     member-list request  a name list of rooms (empty on a room channel: that    ctl, node,
                           room)                                                 room
E     no members there     a name list of rooms the sender has no members in     node
C     check                empty: "I have members here again (my join is before   room
                           this): say you heard it"; the asker kept the lists
K     heard                a name list of rooms whose check the sender handled   node
X     declared dead        the key the sender declared dead (it still talks):    node
                           that node starts over under a new key
p     piece                ``id (4 bytes) | index (2) | count (2) | part``: one  room, all,
                           of ``count`` parts of a message (any of the kinds      client,
                           above, header included) larger than the broker takes  node
====  ===================  ====================================================  ===========

A name list is ``len (1 byte) | name (len bytes)`` repeated, so a name is at most
:data:`MAX_NAME` bytes: the server's Config refuses a ``max_room_name`` (and namespace
names) whose rooms, as the cluster names them (``namespace\x00room``), would not fit; member
ids are generated UUIDs. ``frame`` is the finished WebSocket frame, passed on as
it came: a receiving node parses the header (two length bytes) and slices once. ``seq``
counts a node's frames (F, A and D together, big-endian): on one channel a node's frames
arrive in its order, so the last ``seq`` a node got from each origin on a channel says
exactly which of them it delivered; a session moving between nodes is cut so (see
``roomer/sessions.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ALL", "BYE", "CHECK", "CHUNK", "CLAIM", "DEAD", "DIRECT", "DROPPED", "GOING", "HANDOVER",
    "HEARD", "HEARTBEAT", "HELLO", "HERE", "JOINED", "LEFT", "LENGTH", "MAX_NAME", "MEMBERS",
    "MEMBERS_MORE", "NONE_HERE", "OFFER", "PIECE", "PROBE", "READY", "REQUEST", "ROOM", "SEQ",
    "header", "pack_names", "unpack_names",
]

ROOM = ord("F")
ALL = ord("A")
DIRECT = ord("D")
JOINED = ord("J")
LEFT = ord("L")
MEMBERS = ord("S")
MEMBERS_MORE = ord("s")
HEARTBEAT = ord("H")
HELLO = ord("I")
BYE = ord("B")
REQUEST = ord("Q")
NONE_HERE = ord("E")
CHECK = ord("C")
HEARD = ord("K")
DEAD = ord("X")
PROBE = ord("P")
PIECE = ord("p")
DROPPED = ord("W")
HERE = ord("N")
CLAIM = ord("T")
OFFER = ord("O")
READY = ord("Y")
HANDOVER = ord("Z")
GOING = ord("G")

#: Bytes of a frame's sequence number.
SEQ = 8

#: Largest name-list body of one message: well under NATS' default 1 MiB max_payload.
CHUNK = 60_000

#: Longest name (room, member id) in bytes: its length is one byte.
MAX_NAME = 255

#: ``LENGTH[n]`` is the one byte that says ``n``.
LENGTH = [bytes((n,)) for n in range(256)]


def header(kind: int, origin: bytes) -> bytes:
    """``kind | n | origin``: what every message of this node and kind starts with."""
    if not 0 < len(origin) < 256:
        raise ValueError("a node key is 1-255 bytes")
    return bytes((kind, len(origin))) + origin


def pack_names(names: Iterable[str], chunk: int = CHUNK) -> list[bytes]:
    """Name lists of at most ``chunk`` bytes each (one empty list for no names)."""
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for name in names:
        raw = name.encode()
        if len(raw) > MAX_NAME:
            raise ValueError(f"name of {len(raw)} bytes: at most {MAX_NAME} fit the envelope")
        if size + 1 + len(raw) > chunk and part:
            out.append(b"".join(part))
            part, size = [], 0
        part.append(LENGTH[len(raw)])
        part.append(raw)
        size += 1 + len(raw)
    out.append(b"".join(part))
    return out


def unpack_names(data: bytes, pos: int) -> list[str]:
    """The name list in ``data`` from ``pos`` to the end; ``ValueError`` if it is cut."""
    names = []
    end = len(data)
    while pos < end:
        size = data[pos]
        pos += 1
        if pos + size > end:
            raise ValueError("name list cut short")
        names.append(data[pos:pos + size].decode())
        pos += size
    return names
