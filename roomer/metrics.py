"""The server's counters and their Prometheus text exposition (GET /metrics)."""

from __future__ import annotations

from typing import Any

__all__ = ["BACKPLANE_COUNTERS", "BACKPLANE_GAUGES", "COUNTERS", "ERROR_CODES", "GAUGES",
           "Metrics"]

#: Every code an ``error`` message may carry (docs/protocol.md §9); each is counted.
ERROR_CODES = (
    "malformed", "invalid_name", "join_denied", "leave_denied", "too_many_rooms",
    "reserved_event", "no_such_client", "handler_error", "forbidden", "not_member",
    "rate_limited", "no_handler", "no_such_namespace", "namespace_denied", "not_connected",
    # game rooms (docs/protocol.md §10)
    "room_full", "room_locked", "no_such_room", "no_such_room_type", "create_denied",
    "room_exists", "room_limit", "room_unavailable", "invalid_options", "too_many_watches",
    "room_busy",
)

# Codes counted by name: the ones above and those of roomer's own errors. A handler's
# error reply may carry any code (a client's, relayed from an ask of it): counting each
# as its own series would let clients grow /metrics without bound, so they are "other".
COUNTED_CODES = frozenset((*ERROR_CODES, "denied", "timeout"))

# What /metrics shows: (stats key, exposed name, help). Counters end in _total, as
# Prometheus names them; the stats keys (server.stats(), server.counters) stay short.
GAUGES = (
    ("connections", "roomer_connections", "Connected clients."),
    ("rooms", "roomer_rooms", "Rooms that have members (root included)."),
    ("game_rooms", "roomer_game_rooms", "Game rooms this node owns."),
    ("game_watches", "roomer_game_watches", "Connections watching a room list."),
    ("sessions_held", "roomer_sessions_held",
     "Dropped sessions held for their client to resume (resume_window)."),
    ("outbox_bytes", "roomer_outbox_bytes",
     "Bytes allocated for the connections' outboxes; a quiet connection holds none."),
    ("read_buffer_bytes", "roomer_read_buffer_bytes",
     "Bytes of the connections' read buffers, back to their initial size once quiet "
     "(the compiled server only: the pure-Python one cannot see them)."),
    ("http_open", "roomer_http_answers_open", "Plain-HTTP answers being written."),
    ("http_waiting", "roomer_http_answers_waiting",
     "Plain-HTTP answers waiting for their client to read (its transport buffer full)."),
)
COUNTERS = (
    ("connections_total", "roomer_connections_opened_total", "WebSocket connections opened."),
    ("messages_in", "roomer_messages_in_total", "Client messages handled."),
    ("relayed", "roomer_relayed_total", "Client messages relayed to a room."),
    ("direct", "roomer_direct_total", "Direct messages delivered."),
    ("handled", "roomer_handled_total", "Client messages given to a handler."),
    ("deliveries", "roomer_deliveries_total", "Frames queued to a receiver."),
    ("dropped", "roomer_dropped_total", "Frames a receiver lost (outbox full, or cut off)."),
    ("writes", "roomer_writes_total", "Socket writes of corked outboxes."),
    ("bytes_out", "roomer_bytes_out_total", "Bytes written to clients."),
    ("batches_in", "roomer_batches_in_total",
     "Batch frames received (protocol v2 with batches): each holds several messages."),
    ("batches_out", "roomer_batches_out_total",
     "Batch frames written: runs of two or more messages to one client in one write."),
    ("read_buffer_trims", "roomer_read_buffer_trims_total",
     "Read buffers given back after a burst."),
    ("dropped_slow_disconnects", "roomer_slow_disconnects_total",
     "Receivers disconnected for not keeping up (outbox bound, write timeout)."),
    ("abuse_closes", "roomer_abuse_closes_total",
     "Clients closed for passing their rate or error limit."),
    ("turn_holds", "roomer_turn_holds_total",
     "Times a client was read again next turn because it used up its turn."),
    ("ping_timeouts", "roomer_ping_timeouts_total",
     "Clients closed (1011) for not answering a ping within ping_timeout."),
    ("stalls", "roomer_stalls_total",
     "Times the server itself did not run for a while (a blocking handler, a paused "
     "process): what clients sent meanwhile was not charged to their rate limits."),
    ("asks_in", "roomer_asks_in_total", "Asks of v2 clients given to a handler."),
    ("asks_out", "roomer_asks_out_total", "Asks the server sent to v2 clients."),
    ("ask_timeouts", "roomer_ask_timeouts_total", "Asks of the server that got no answer."),
    ("unknown_replies", "roomer_unknown_replies_total",
     "Replies to no waiting ask of the server (unknown id, or timed out), ignored."),
    ("game_rooms_created", "roomer_game_rooms_created_total", "Game rooms created here."),
    ("game_rooms_disposed", "roomer_game_rooms_disposed_total", "Game rooms ended here."),
    ("game_messages", "roomer_game_messages_total",
     "Players' messages handed to their game room's handlers here."),
    ("game_ticks", "roomer_game_ticks_total", "Game room ticks run here."),
    ("game_ticks_late", "roomer_game_ticks_late_total",
     "Tick batches that overran their period (the ticks they missed are skipped)."),
    ("game_ticks_skipped", "roomer_game_ticks_skipped_total",
     "Game room ticks skipped: missed by a late batch, or a room still in its async "
     "on_tick."),
    ("sessions_dropped", "roomer_sessions_dropped_total",
     "Sessions whose socket dropped and that were held for a resume."),
    ("sessions_resumed", "roomer_sessions_resumed_total", "Held sessions resumed."),
    ("sessions_expired", "roomer_sessions_expired_total",
     "Held sessions ended by the end of their window."),
    ("sessions_lost", "roomer_sessions_lost_total",
     "Held sessions ended because a message their client missed was forgotten."),
    ("sessions_evicted", "roomer_sessions_evicted_total",
     "Held sessions ended early because max_held_sessions were held."),
    ("sessions_moved_in", "roomer_sessions_moved_in_total",
     "Sessions taken over from another node (a resume that landed here)."),
    ("sessions_moved_out", "roomer_sessions_moved_out_total",
     "Sessions handed over to another node (their client resumed there)."),
    ("resume_failures", "roomer_resume_failures_total",
     "Resumes refused (unknown, spent, forged, expired or lost session)."),
    ("http_answers", "roomer_http_answers_total", "Plain-HTTP requests answered."),
    ("http_timeouts", "roomer_http_timeouts_total",
     "Plain-HTTP answers cut off at http_timeout (a client that did not read them)."),
    ("http_busy", "roomer_http_busy_total",
     "Plain-HTTP requests refused with 503 (http_max_answers being written)."),
)

# With a backplane (roomer.backplane.Cluster.state()).
BACKPLANE_GAUGES = (
    ("connected", "roomer_backplane_connected", "1 while the broker connection is up."),
    ("link", "roomer_backplane_link",
     "The link to the broker: 2 up, 1 degraded (a probe is late), 0 down."),
    ("nodes", "roomer_backplane_nodes", "Other nodes heard from within node_timeout."),
    ("buffered", "roomer_backplane_buffered_bytes", "Bytes waiting for the broker."),
)
BACKPLANE_COUNTERS = (
    ("reconnects", "roomer_backplane_reconnects_total", "Broker connections re-established."),
    ("published", "roomer_backplane_published_total", "Messages published to the broker."),
    ("received", "roomer_backplane_received_total", "Messages received from the broker."),
    ("dropped", "roomer_backplane_dropped_total",
     "Messages not published (broker away or message too large), counted, never queued."),
    ("nodes_lost", "roomer_backplane_nodes_lost_total",
     "Nodes declared dead (silent past node_timeout) or gone."),
    ("incarnations", "roomer_backplane_incarnations_total",
     "Times this node started over under a new key (it was declared dead after a stall)."),
    ("stale_dropped", "roomer_backplane_stale_dropped_total",
     "Messages dropped because the node that sent them was declared dead or gone."),
    ("outages", "roomer_backplane_outages_total",
     "Times the link went down (connection lost, or a probe unanswered past its deadline)."),
    ("down_seconds", "roomer_backplane_down_seconds_total",
     "Seconds the link has been down, the current outage included."),
    ("dropped_down", "roomer_backplane_dropped_down_total",
     "Messages not published because the link was down (part of dropped)."),
    ("dropped_share", "roomer_backplane_dropped_share_total",
     "Frames not published because their sender held its share of the buffer."),
    ("published_bytes", "roomer_backplane_published_bytes_total",
     "Bytes the broker took from this node."),
    ("received_bytes", "roomer_backplane_received_bytes_total",
     "Bytes the broker delivered to this node."),
    ("lists_sent", "roomer_backplane_member_lists_total",
     "Member lists this node published (answers to other nodes joining its rooms)."),
    ("lists_coalesced", "roomer_backplane_member_lists_coalesced_total",
     "Member-list requests answered by a list already due rather than one more."),
    ("id_collisions", "roomer_backplane_id_collisions_total",
     "Other live nodes seen with this node's id (the newer takes a fresh id)."),
    ("pieces_lost", "roomer_backplane_pieces_lost_total",
     "Messages sent in pieces (past the broker's payload limit) lost for a missing piece."),
)

# roomer_backplane_link's values.
LINK_VALUES = {"up": 2, "degraded": 1, "down": 0}


class Metrics:
    """Plain integer counters: bumped on the loop thread, read by /metrics and stats()."""

    __slots__ = ("counters", "errors")

    def __init__(self) -> None:
        self.counters: dict[str, int] = {
            "connections_total": 0,
            "messages_in": 0,
            "batches_in": 0,
            "relayed": 0,
            "direct": 0,
            "handled": 0,
            "dropped_slow_disconnects": 0,
            "abuse_closes": 0,
            "turn_holds": 0,
            "stalls": 0,
            "ping_timeouts": 0,
            "asks_in": 0,
            "asks_out": 0,
            "ask_timeouts": 0,
            "unknown_replies": 0,
            "game_rooms_created": 0,
            "game_rooms_disposed": 0,
            "game_messages": 0,
            "game_ticks": 0,
            "game_ticks_late": 0,
            "game_ticks_skipped": 0,
            "sessions_dropped": 0,
            "sessions_resumed": 0,
            "sessions_expired": 0,
            "sessions_lost": 0,
            "sessions_evicted": 0,
            "sessions_moved_in": 0,
            "sessions_moved_out": 0,
            "resume_failures": 0,
            # plain HTTP (roomer.http): answers, and two gauges kept here with them
            "http_answers": 0,
            "http_open": 0,
            "http_waiting": 0,
            "http_timeouts": 0,
            "http_busy": 0,
        }
        self.errors: dict[str, int] = dict.fromkeys(ERROR_CODES, 0)

    def error(self, code: str) -> None:
        if code not in COUNTED_CODES:
            code = "other"
        self.errors[code] = self.errors.get(code, 0) + 1

    def snapshot(self, gauges: dict[str, int], engine_stats: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out.update(gauges)
        out.update(engine_stats)
        out["errors"] = dict(self.errors)
        return out

    @staticmethod
    def prometheus(stats: dict[str, Any]) -> str:
        """Prometheus text format 0.0.4 of a ``snapshot``."""
        lines = []
        tables = [("gauge", GAUGES, stats), ("counter", COUNTERS, stats)]
        backplane = stats.get("backplane")
        if backplane is not None:
            backplane = dict(backplane, connected=int(backplane["connected"]),
                             nodes=len(backplane["nodes"]),
                             link=LINK_VALUES.get(backplane.get("link", ""), 0))
            tables += [("gauge", BACKPLANE_GAUGES, backplane),
                       ("counter", BACKPLANE_COUNTERS, backplane)]
        for kind, table, values in tables:
            for key, name, help_text in table:
                if key in values:
                    lines.append(f"# HELP {name} {help_text}")
                    lines.append(f"# TYPE {name} {kind}")
                    lines.append(f"{name} {values[key]}")
        lines.append("# HELP roomer_errors_total Error replies sent, by code.")
        lines.append("# TYPE roomer_errors_total counter")
        for code, count in stats["errors"].items():
            lines.append(f'roomer_errors_total{{code="{label(code)}"}} {count}')
        return "\n".join(lines) + "\n"


def label(value: str) -> str:
    """A Prometheus label value, escaped: one quote or newline would break the page."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
