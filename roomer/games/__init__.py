"""Game rooms (docs/design.md §10; the user's side in the game rooms guide): room types
an app defines as `GameRoom` subclasses, their players, seats, ticks and timers,
matchmaking over the socket a client has, and the cluster's room list."""

from __future__ import annotations

from .listing import RoomListing
from .manager import GAME_EVENTS, Games
from .room import GameRoom, Player, Timer, on_message

__all__ = ["GAME_EVENTS", "GameRoom", "Games", "Player", "RoomListing", "Timer",
           "on_message"]
