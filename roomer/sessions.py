"""Resume tokens: what a client presents to get its session back after a drop.

A token names one session (the client's id) at one epoch, and carries a MAC keyed by the
cluster's secret, so any node of the cluster can tell a token it issued from a forged one
without asking anyone. It is single use: the epoch advances with every resumption and the
holder of the session accepts only the current one, so a replayed token (or one of another
session) is refused. Layout, base64url without padding (43 characters):

    version (1 byte) | id (16 bytes: the UUID) | epoch (u32 big-endian) | MAC (16 bytes)

The MAC is HMAC-SHA256 of the first 21 bytes, cut to 128 bits. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid

__all__ = ["TOKEN_CHARS", "Tokens"]

VERSION = 1
MAC_SIZE = 16
_BODY = 1 + 16 + 4
#: Characters of a token (base64url of 37 bytes, no padding).
TOKEN_CHARS = 50


class Tokens:
    """Mints and verifies resume tokens with one secret (``None``: a random one, so only
    this process verifies what it minted)."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None:
            key = secrets.token_bytes(32)
        elif isinstance(secret, str):
            key = secret.encode()
        else:
            key = bytes(secret)
        # One derived key, so the secret is used for nothing else by accident.
        self._key = hashlib.sha256(b"roomer resume token\x00" + key).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:MAC_SIZE]

    def mint(self, conn_id: str, epoch: int) -> str:
        """The token of session ``conn_id`` (UUID text) at ``epoch`` (0 to 2**32 - 1)."""
        body = bytes((VERSION,)) + uuid.UUID(conn_id).bytes + epoch.to_bytes(4, "big")
        raw = body + self._mac(body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: object) -> tuple[str, int] | None:
        """(session id, epoch) of a token this cluster minted; None for anything else
        (forged, malformed, of another secret), telling nothing of why."""
        if not isinstance(token, str) or len(token) != TOKEN_CHARS or not token.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "==")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _BODY + MAC_SIZE or raw[0] != VERSION:
            return None
        body, mac = raw[:_BODY], raw[_BODY:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        return str(uuid.UUID(bytes=body[1:17])), int.from_bytes(body[17:21], "big")
