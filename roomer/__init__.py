"""roomer: room-based real-time messaging over WebSockets, with a compiled fan-out.

Serve with `Server`; connect from Python with `connect`.
"""

from __future__ import annotations

from .client import ClientError, Room, RoomWatch, connect
from .codec import COMPILED as _CODEC_COMPILED
from .config import Config
from .connection import Connection, NamespaceConnection
from .errors import AskTimeout, Deny, ExtensionMismatch, ProtocolError, RoomerError
from .fanout import COMPILED as _FANOUT_COMPILED
from .games import GAME_EVENTS, GameRoom, Player, RoomListing, on_message
from .handlers import RESERVED_EVENTS, register_handler
from .message import Message
from .namespaces import Namespace
from .server import Server

__all__ = [
    "COMPILED",
    "GAME_EVENTS",
    "RESERVED_EVENTS",
    "AskTimeout",
    "ClientError",
    "Config",
    "Connection",
    "Deny",
    "ExtensionMismatch",
    "GameRoom",
    "Message",
    "Namespace",
    "NamespaceConnection",
    "Player",
    "ProtocolError",
    "Room",
    "RoomListing",
    "RoomWatch",
    "RoomerError",
    "Server",
    "__version__",
    "connect",
    "on_message",
    "register_handler",
]

__version__ = "0.1.0"

#: True when both compiled extensions (roomer._codec, roomer._fanout) are in use.
COMPILED = _CODEC_COMPILED and _FANOUT_COMPILED
