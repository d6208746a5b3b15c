"""Plain HTTP on the WebSocket port: /healthz, /metrics, extra routes (DESIGN §7)."""

from __future__ import annotations

import asyncio
import re
import urllib.request

from rawclient import connect, http_get, pair_in
from waiting import scaled


async def test_healthz(make_server) -> None:
    server = await make_server()
    status, _, body = await http_get(server, "/healthz")
    assert status == 200
    assert body.strip() == b"ok"
    status, _, _ = await http_get(server, "/healthz?probe=1")
    assert status == 200


async def test_healthz_with_urllib_in_a_thread(make_server) -> None:
    server = await make_server()
    host, port = server.address

    def get() -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=scaled(5)) as resp:
            return resp.status, resp.read()

    status, body = await asyncio.wait_for(asyncio.to_thread(get), scaled(10))
    assert status == 200 and body.strip() == b"ok"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics:\n{text}"
    return float(match.group(1))


async def test_metrics_counters(make_server) -> None:
    server = await make_server()
    a, b = await pair_in(server, "r")
    await a.send("r", "chat")
    await b.expect("chat")
    await a.send("root", "dm", dst=b.id)
    await b.expect("dm")
    await a.send_raw(b"\x00" * 3)
    await a.expect_error("malformed", "root", "")
    await a.send("root", "chat")
    await a.expect_error("forbidden", "root", "chat")
    await a.send("root", "chat")
    await a.expect_error("forbidden", "root", "chat")

    status, headers, body = await http_get(server, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert _metric(text, "roomer_connections") == 2
    assert _metric(text, "roomer_rooms") == 2
    assert _metric(text, "roomer_connections_opened_total") == 2
    assert _metric(text, "roomer_messages_in_total") == 7  # 2 joins + 5 sends
    assert _metric(text, "roomer_relayed_total") == 1
    assert _metric(text, "roomer_direct_total") == 1
    assert _metric(text, 'roomer_errors_total{code="malformed"}') == 1
    assert _metric(text, 'roomer_errors_total{code="forbidden"}') == 2
    assert _metric(text, 'roomer_errors_total{code="not_member"}') == 0
    assert "# TYPE roomer_messages_in_total counter" in text


async def test_every_error_code_is_counted(make_server) -> None:
    import roomer

    server = await make_server(max_rooms_per_connection=1, rate_limit=(100, 60))

    @server.on_join
    def on_join(conn, room) -> None:
        if room == "no":
            raise roomer.Deny("no")

    @server.on_leave
    def on_leave(conn, room) -> None:
        if room == "stay":
            raise roomer.Deny("stay")

    @server.on("fail")
    def fail(conn, msg) -> None:
        raise roomer.Deny("fail")

    a = await connect(server)
    sends = [
        (b"short", "malformed"),
        (("", "x"), "invalid_name"),
        (("no", "join"), "join_denied"),
        (("stay", "join"), None),
        (("stay", "leave"), "leave_denied"),
        (("two", "join"), "too_many_rooms"),
        (("stay", "error"), "reserved_event"),
        (("root", "dm", "nobody"), "no_such_client"),
        (("root", "fail"), "handler_error"),
        (("root", "chat"), "forbidden"),
        (("elsewhere", "chat"), "not_member"),
    ]
    for data, code in sends:
        if isinstance(data, bytes):
            await a.send_raw(data)
        else:
            await a.send(*data)
        msg = await a.recv()
        if code is None:
            assert msg.event == "join_ack"
        else:
            assert msg.event == "error" and msg.json()["code"] == code, msg
    limited = await make_server(rate_limit=(1, 60))
    b = await connect(limited)
    await b.send("r", "join")
    await b.send("r", "join")
    await b.expect("join_ack")
    await b.expect_error("rate_limited", "r", "join")
    counts = server.stats()["errors"]
    assert all(counts[code] == 1 for _, code in sends if code), counts
    assert limited.stats()["errors"]["rate_limited"] == 1
    _, _, body = await http_get(limited, "/metrics")
    assert 'roomer_errors_total{code="rate_limited"} 1' in body.decode()


async def test_extra_routes_and_unknown_paths(make_server) -> None:
    server = await make_server(routes={"/hello.txt": ("text/plain", b"hi there")})
    status, headers, body = await http_get(server, "/hello.txt")
    assert (status, headers["content-type"], body) == (200, "text/plain", b"hi there")
    status, _, _ = await http_get(server, "/nope")
    assert 400 <= status < 500
    a = await connect(server)  # the WebSocket upgrade still works on any path
    assert server.members("root") == [a.id]
