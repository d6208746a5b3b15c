"""The server's counters and their Prometheus text exposition (GET /metrics)."""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_CODES", "Metrics"]

#: Every code an ``error`` message may carry (DESIGN §3); each is counted.
ERROR_CODES = (
    "malformed", "invalid_name", "join_denied", "leave_denied", "too_many_rooms",
    "reserved_event", "no_such_client", "handler_error", "forbidden", "not_member",
    "rate_limited",
)

# Counters of the fan-out engine, shown beside the server's own.
_ENGINE_COUNTERS = ("deliveries", "dropped", "writes", "bytes_out", "read_buffer_trims")


class Metrics:
    """Plain integer counters: bumped on the loop thread, read by /metrics and stats()."""

    __slots__ = ("counters", "errors")

    def __init__(self) -> None:
        self.counters: dict[str, int] = {
            "connections_total": 0,
            "messages_in": 0,
            "relayed": 0,
            "direct": 0,
            "handled": 0,
            "dropped_slow_disconnects": 0,
            "abuse_closes": 0,
            "turn_holds": 0,
        }
        self.errors: dict[str, int] = dict.fromkeys(ERROR_CODES, 0)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def snapshot(self, gauges: dict[str, int], engine_stats: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out.update(gauges)
        out.update(engine_stats)
        out["errors"] = dict(self.errors)
        return out

    @staticmethod
    def prometheus(stats: dict[str, Any], gauges: tuple[str, ...]) -> str:
        """Prometheus text format 0.0.4 of a ``snapshot``."""
        lines = []
        for key in gauges:
            lines.append(f"# TYPE roomer_{key} gauge")
            lines.append(f"roomer_{key} {stats[key]}")
        for key in ("connections_total", "messages_in", "relayed", "direct", "handled",
                    *_ENGINE_COUNTERS, "dropped_slow_disconnects", "abuse_closes",
                    "turn_holds"):
            if key in stats:
                lines.append(f"# TYPE roomer_{key} counter")
                lines.append(f"roomer_{key} {stats[key]}")
        lines.append("# TYPE roomer_errors counter")
        for code, count in stats["errors"].items():
            lines.append(f'roomer_errors{{code="{code}"}} {count}')
        return "\n".join(lines) + "\n"
