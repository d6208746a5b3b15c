"""GET /metrics is Prometheus text that the official parser (prometheus_client) reads,
with the values the server counted."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families
from rawclient import http_get, pair_in
from v2client import ASK, ERROR_REPLY, connect2

from roomer.metrics import ERROR_CODES, Metrics


async def test_metrics_parse_with_the_official_parser(make_server) -> None:
    server = await make_server()
    a, b = await pair_in(server, "r")
    await a.send("r", "chat", payload="hi")
    await b.expect("chat")
    await a.send("root", "chat")
    await a.expect_error("forbidden", "root", "chat")
    await a.send("nowhere", "chat")
    await a.expect_error("not_member", "nowhere", "chat")

    status, headers, body = await http_get(server, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(body.decode()))  # raises on bad text

    kinds = {(f.name, f.type) for f in families}
    for name in ("roomer_connections", "roomer_rooms"):
        assert (name, "gauge") in kinds, kinds
    for name in ("roomer_connections_opened", "roomer_messages_in", "roomer_relayed",
                 "roomer_direct", "roomer_handled", "roomer_deliveries", "roomer_dropped",
                 "roomer_writes", "roomer_bytes_out", "roomer_errors"):
        assert (name, "counter") in kinds, kinds

    def value(family: str, kind: str, **labels: str) -> float:
        found = [s.value for f in families if (f.name, f.type) == (family, kind)
                 for s in f.samples if s.labels == labels]
        assert len(found) == 1, (family, kind, labels, found)
        return found[0]

    assert value("roomer_connections", "gauge") == 2
    assert value("roomer_rooms", "gauge") == 2
    assert value("roomer_connections_opened", "counter") == 2
    assert value("roomer_messages_in", "counter") == 5  # 2 joins + 3 sends
    assert value("roomer_relayed", "counter") == 1
    assert value("roomer_errors", "counter", code="forbidden") == 1
    assert value("roomer_errors", "counter", code="not_member") == 1
    assert value("roomer_errors", "counter", code="malformed") == 0
    codes = {s.labels["code"] for f in families if f.name == "roomer_errors"
             for s in f.samples}
    assert codes == set(server.stats()["errors"])


async def test_every_metric_has_help_and_a_conventional_name(make_server) -> None:
    server = await make_server()
    _, _, body = await http_get(server, "/metrics")
    families = list(text_string_to_metric_families(body.decode()))
    assert len({f.name for f in families}) == len(families)  # no two share a family
    for family in families:
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family


async def test_client_chosen_error_codes_neither_break_nor_grow_the_page(make_server) -> None:
    # A handler answering an ask may fail with the ClientError of its own ask of the
    # client: that code is the client's choice, and ends up in the handler's error reply.
    server = await make_server()

    @server.on("relay")
    async def relay(conn, msg):  # type: ignore[no-untyped-def]
        return await conn.ask("question")

    client = await connect2(server)
    for i in range(5):
        code = f'evil"{i}\\\n}} 1\nroomer_fake_total 9'
        asked = asyncio.ensure_future(client.ask("", "root", "relay"))
        question = await client.expect("question")
        assert question.kind == ASK
        await client.send("", "root", "question", kind=ERROR_REPLY, id=question.id,
                          payload=json.dumps({"code": code, "message": "no"}))
        answer = await asked
        assert answer.kind == ERROR_REPLY and json.loads(answer.payload)["code"] == code

    _, _, body = await http_get(server, "/metrics")
    families = list(text_string_to_metric_families(body.decode()))  # raises on bad text
    assert "roomer_fake" not in {f.name for f in families}
    codes = {s.labels["code"]: s.value for f in families if f.name == "roomer_errors"
             for s in f.samples}
    assert set(codes) == set(ERROR_CODES) | {"other"}
    assert codes["other"] == 5


def test_label_values_are_escaped() -> None:
    text = Metrics.prometheus({"errors": {'a\\b"c\nd': 1}})
    [family] = text_string_to_metric_families(text)
    assert [s.labels["code"] for s in family.samples] == ['a\\b"c\nd']
