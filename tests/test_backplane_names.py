"""Channel names and the envelope: any room name or id maps to one NATS-safe token and back,
distinct names never share a channel, name lists survive chunking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomer.backplane import envelope as env
from roomer.backplane.names import Names, decode_token, encode_token, valid_prefix

TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@given(st.text(min_size=1, max_size=128))
def test_any_name_is_one_safe_token_and_back(name: str) -> None:
    token = encode_token(name)
    assert TOKEN.fullmatch(token)  # no '.', '*', '>', space: never a separator or wildcard
    assert decode_token(token) == name
    assert len(token) <= 3 * len(name.encode())


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_distinct_names_distinct_channels(a: str, b: str) -> None:
    if a != b:
        assert Names().room(a) != Names().room(b)


def test_examples_from_the_readme() -> None:
    assert encode_token("lobby") == "lobby"
    assert encode_token("eu.lobby 1") == "eu_2Elobby_201"
    assert encode_token("a_b") == "a_5Fb"
    assert encode_token("*") == "_2A" and encode_token(">") == "_3E"
    names = Names("game.prod")
    assert names.room("lobby") == "game.prod.room.lobby"
    assert names.client("5f0c-9a") == "game.prod.client.5f0c-9a"
    assert names.all == "game.prod.all" and names.ctl == "game.prod.ctl"


def test_prefixes_and_empty_names() -> None:
    assert valid_prefix("roomer") and valid_prefix("a.b-c_d")
    for bad in ("", "a..b", "a.*", "a b", ".a", "a>"):
        assert not valid_prefix(bad), bad
    with pytest.raises(ValueError):
        encode_token("")


@given(st.lists(st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255),
                max_size=200), st.integers(min_value=300, max_value=5000))
def test_name_lists_survive_chunking(names: list[str], chunk: int) -> None:
    parts = env.pack_names(names, chunk)
    assert all(len(part) <= chunk for part in parts)
    back = [name for part in parts for name in env.unpack_names(part, 0)]
    assert back == names


def test_envelope_header_and_limits() -> None:
    assert env.header(env.ROOM, b"n1:0a") == b"F\x05n1:0a"
    with pytest.raises(ValueError):
        env.pack_names(["x" * 256])
    with pytest.raises(ValueError, match="cut"):
        env.unpack_names(b"\x05abc", 0)
