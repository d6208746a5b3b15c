"""The tick of game rooms: one schedule per tick rate, on the rooms' node only.

Every room of one rate ticks in the same loop turn, so what the ticks send is corked per
receiver into one write per turn (and one publish per room for the other nodes). The
schedule keeps its own deadlines (``call_at``, advanced by the period): a slow batch does
not push the next ones back, and when a batch overran a whole period the ticks it missed
are skipped and counted, never run back to back. A room still in its async ``on_tick``
skips its next tick (counted in the room).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .room import GameRoom

__all__ = ["Ticker"]

log = logging.getLogger("roomer")

# A late batch is logged at most this often (it is counted every time).
LOG_EVERY = 10.0


class _Schedule:
    __slots__ = ("deadline", "handle", "period", "rooms")

    def __init__(self, period: float) -> None:
        self.period = period
        self.rooms: dict[GameRoom, None] = {}
        self.deadline = 0.0
        self.handle: asyncio.TimerHandle | None = None


class Ticker:
    """The schedules of one server's game rooms (loop thread only). ``after_tick(room)``
    runs after each room's tick (the seam where its members' outboxes are flushed when
    the fan-out delays writes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics,
                 after_tick: Callable[[GameRoom], None]) -> None:
        self._loop = loop
        self._metrics = metrics
        self._after = after_tick
        self._schedules: dict[float, _Schedule] = {}
        self._logged_at = -LOG_EVERY

    def add(self, room: GameRoom) -> None:
        rate = room.tick_rate
        assert rate is not None
        schedule = self._schedules.get(rate)
        if schedule is None:
            schedule = self._schedules[rate] = _Schedule(1.0 / rate)
        room._last_tick = self._loop.time()
        schedule.rooms[room] = None
        if schedule.handle is None:
            schedule.deadline = self._loop.time() + schedule.period
            schedule.handle = self._loop.call_at(schedule.deadline, self._fire, schedule)

    def remove(self, room: GameRoom) -> None:
        for rate, schedule in list(self._schedules.items()):
            if schedule.rooms.pop(room, None) is not None and not schedule.rooms:
                if schedule.handle is not None:
                    schedule.handle.cancel()
                del self._schedules[rate]

    def stop(self) -> None:
        for schedule in self._schedules.values():
            if schedule.handle is not None:
                schedule.handle.cancel()
        self._schedules.clear()

    def _fire(self, schedule: _Schedule) -> None:
        loop = self._loop
        start = loop.time()
        after = self._after
        counters = self._metrics.counters
        for room in list(schedule.rooms):
            room._tick(start)
            after(room)
        counters["game_ticks"] += len(schedule.rooms)
        if not schedule.rooms:
            return  # its last room ended during the batch (remove() dropped the schedule)
        now = loop.time()
        took = now - start
        deadline = schedule.deadline + schedule.period
        if deadline <= now:
            missed = int((now - deadline) / schedule.period) + 1
            deadline += missed * schedule.period
            counters["game_ticks_late"] += 1
            counters["game_ticks_skipped"] += missed * len(schedule.rooms)
            if now - self._logged_at >= LOG_EVERY:
                # Late by the batch itself (slow on_tick) or before it (the loop busy
                # elsewhere, the process not scheduled): both are said.
                self._logged_at = now
                log.warning("game tick at %g Hz started %.1f ms late and its %d rooms took "
                            "%.1f ms (period %.1f ms): %d ticks skipped",
                            1 / schedule.period, (start - schedule.deadline) * 1000,
                            len(schedule.rooms), took * 1000, schedule.period * 1000, missed)
        schedule.deadline = deadline
        schedule.handle = loop.call_at(deadline, self._fire, schedule)

    def stats(self) -> dict[str, Any]:
        return {str(round(1 / s.period, 3)): len(s.rooms) for s in self._schedules.values()}
