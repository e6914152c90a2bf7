"""VERP: each digest message's envelope sender names its delivery row.

With ``[email] bounce_address = "bounces@example.com"`` the message for delivery row
42 leaves with ``MAIL FROM:<bounces+16-k3v9q2m7xa@example.com>``. A bounce that
comes back after the SMTP session is addressed there, so whatever the remote
server's report looks like, the address alone says which delivery (and reader)
it is about (Mailman's VERP; listmonk's bounce mailbox).

The token is ``base36(id) "-" tag``: the tag is the first
:data:`TAG_CHARS` characters of the lower-case base32 HMAC-SHA256 over
``digest-verp/<id>`` with a key derived from the instance's signing secret under
its own purpose (:func:`verp_keys`). Lower case and digits only, so an MTA that
lower-cases the local part changes nothing; 50 bits of tag, so a forged or
guessed address matches nothing (:func:`delivery_of` compares in constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from digest.config.runtime import Runtime

TAG_CHARS = 10  # 50 bits: a forger gets nowhere, the local part stays short
SEPARATOR = "+"  # Postfix's recipient_delimiter default; Exim and qmail accept it too
_PURPOSE = "digest-verp/"
_KEY_PURPOSE = b"digest-token/verp"  # distinct from every subscribers.tokens purpose
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_ID_CHARS = 13  # base36 of 2**63


def verp_keys(rt: Runtime) -> tuple[bytes, ...]:
    """The VERP keys: one per ``DIGEST_SECRET_KEY`` key (the first signs, all verify:
    rotating keys does not orphan bounces in flight), else one from the secret kept
    in the database, the one :meth:`Runtime.signer` uses."""
    secrets = rt.secret_keys()
    return tuple(hmac.new(s.encode(), _KEY_PURPOSE, hashlib.sha256).digest() for s in secrets)


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("a delivery id is not negative")
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


def _tag(delivery_id: int, key: bytes) -> str:
    mac = hmac.new(key, f"{_PURPOSE}{delivery_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii").lower()[:TAG_CHARS]


def token(delivery_id: int, key: bytes) -> str:
    """The VERP token of ``delivery_id``: ``base36(id)-tag``."""
    return f"{_base36(delivery_id)}-{_tag(delivery_id, key)}"


def verp_sender(bounce_address: str, delivery_id: int, key: bytes) -> str:
    """``bounces@example.com`` → ``bounces+<token>@example.com`` for ``delivery_id``."""
    local, at, domain = bounce_address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"bounce_address {bounce_address!r} is not an address")
    return f"{local}{SEPARATOR}{token(delivery_id, key)}@{domain}"


def delivery_of(address: str, bounce_address: str, key: bytes) -> int | None:
    """The delivery id ``address`` names, if it is ``bounce_address`` with a token
    signed by ``key``; None for anything else (another address, a bad or forged
    token). Case-insensitive: MTAs may lower-case the local part or the domain."""
    local, at, domain = address.strip().strip("<>").lower().rpartition("@")
    base_local, base_at, base_domain = bounce_address.strip().lower().rpartition("@")
    if not at or not base_at or domain != base_domain:
        return None
    prefix = base_local + SEPARATOR
    if not local.startswith(prefix):
        return None
    ident, dash, tag = local[len(prefix) :].partition("-")
    if not dash or not ident or len(ident) > _MAX_ID_CHARS or len(tag) != TAG_CHARS:
        return None
    if any(c not in _DIGITS for c in ident):
        return None
    delivery_id = int(ident, 36)
    if _base36(delivery_id) != ident:  # no leading zeros: one spelling per id
        return None
    if not hmac.compare_digest(_tag(delivery_id, key).encode(), tag.encode("ascii", "replace")):
        return None
    return delivery_id


def delivery_of_any(address: str, bounce_address: str, keys: tuple[bytes, ...]) -> int | None:
    """:func:`delivery_of` under each of ``keys`` (key rotation), first match wins."""
    for key in keys:
        found = delivery_of(address, bounce_address, key)
        if found is not None:
            return found
    return None
