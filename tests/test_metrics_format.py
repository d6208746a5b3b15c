"""GET /metrics is Prometheus text that the official parser (prometheus_client) reads,
with the values the server counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from rawclient import http_get, pair_in


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
