"""Plain HTTP on the WebSocket port: /healthz, /metrics, extra routes (docs/design.md, "HTTP")."""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid

import pytest
from rawclient import connect, http_get, pair_in
from rawhttp import exchange, get
from waiting import scaled

import roomer
from roomer import fanout
from roomer.cli import _parser, build_server
from roomer.config import Config
from roomer.http import HttpSide


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
    # What the two connections' buffers hold: the compiled server sees picows' read
    # buffers (each starts at read_buffer_size); the pure-Python one cannot, and says none.
    assert _metric(text, "roomer_outbox_bytes") >= 0
    if fanout.COMPILED:
        assert _metric(text, "roomer_read_buffer_bytes") >= 2 * server.config.read_buffer_size
    else:
        assert "roomer_read_buffer_bytes" not in text


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


# /healthz: the status a load balancer reads, and what the body tells ------------------------


async def test_healthz_hides_the_backplane_unless_asked(make_server) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    quiet = await make_server(backplane=url)
    assert "backplane" in quiet.health_text()  # the detail exists...
    for method in ("GET", "HEAD"):
        reply = await exchange(quiet.address[1], get("/healthz", method))
        assert reply.status == 200
        assert reply.body == (b"ok\n" if method == "GET" else b"")  # ...and is not shown
        assert reply.headers["content-length"] == "3"
        assert reply.headers["cache-control"] == "no-store"
    detailed = await make_server(backplane=url, health_detail=True)
    reply = await exchange(detailed.address[1], get("/healthz"))
    assert reply.status == 200
    assert reply.body == detailed.health_text().encode()
    assert reply.body.startswith(b"ok\nbackplane memory://")


class _Health(roomer.Server):
    """A server whose health text a test sets (as a backplane outage would)."""

    text: str | Exception = "ok\n"

    def health_text(self) -> str:
        if isinstance(self.text, Exception):
            raise self.text
        return self.text


@pytest.mark.parametrize(("text", "status", "body"), [
    ("ok\n", 200, b"ok\n"),
    ("degraded\nbackplane redis://10.0.0.5:6379/0: disconnected (local rooms only)\n",
     200, b"degraded\n"),
    ("broken\n", 503, b"broken\n"),
    ("", 503, b"\n"),
    (RuntimeError("boom"), 503, b"error\n"),
])
async def test_healthz_status_follows_the_first_line(text, status, body, caplog) -> None:
    # Another engineer's backplane outage makes health_text() start with "degraded".
    for detail in (False, True):
        server = _Health(health_detail=detail)
        server.text = text
        await server.start("127.0.0.1", 0)
        try:
            reply = await exchange(server.address[1], get("/healthz"))
            head = await exchange(server.address[1], get("/healthz", "HEAD"))
        finally:
            await server.shutdown(timeout=1.0)
        assert (reply.status, head.status, head.body) == (status, status, b"")
        if detail and isinstance(text, str):
            assert reply.body == text.encode()
        else:
            assert reply.body == body  # the first line only: no address leaks
    if isinstance(text, Exception):
        assert "health_text raised" in caplog.text


def test_healthz_while_shutting_down_is_503() -> None:
    closing = False
    side = HttpSide(Config(), {}, lambda: "", lambda: "ok\n", lambda: closing,
                    lambda *a: None)
    answer = side.answer(b"GET /healthz HTTP/1.1")
    assert answer is not None and answer.head.startswith(b"HTTP/1.1 200 ")
    answer.close()
    closing = True
    answer = side.answer(b"GET /healthz HTTP/1.1")
    assert answer is not None and answer.head.startswith(b"HTTP/1.1 503 ")
    assert answer.body is not None and bytes(answer.body.read(100)) == b"closing\n"
    answer.close()
    assert side.counters["http_open"] == 0 and side.counters["http_answers"] == 2


def test_health_detail_is_an_option() -> None:
    assert roomer.Server().config.health_detail is False
    with pytest.raises(TypeError, match="health_detail"):
        roomer.Server(health_detail="yes")
    args = _parser().parse_args(["serve", "--health-detail"])
    assert build_server(args).config.health_detail is True
