"""DKIM: what a real SMTP server receives verifies against the published key."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.errors import ConfigError
from digest.store.db import session_scope, upgrade
from subscribers import repository
from tests.smtp_sink import SmtpSink
from tests.support import write_config


def _key_pair(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return path, record


def test_signed_messages_verify_and_cover_the_unsubscribe_headers(tmp_path: Path) -> None:
    key_path, record = _key_pair(tmp_path)
    with SmtpSink() as sink:
        path = write_config(
            tmp_path,
            transport={
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": sink.port,
                "security": "none",
                "dkim_domain": "test.example",
                "dkim_selector": "news",
                "dkim_key_path": str(key_path),
            },
            email={"from": "Test Weekly <digest@test.example>", "feedback_id": "w48:digest:tw"},
        )
        cfg = config.load(path, environ={"DIGEST_SECRET_KEY": "k"})
        rt = Runtime.open(cfg)
        upgrade(rt.engine)
        with session_scope(rt.engine) as session:
            repository.add(session, email="ada@example.com", name="Ada", now=rt.now())
        pipeline.fetch(rt)
        edition = pipeline.compose(rt).edition
        assert edition is not None
        asyncio.run(pipeline.send(rt, edition=edition))
        rt.close()
        (received,) = sink.handler.messages

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"news._domainkey.test.example."
        return record

    assert dkim.verify(received.data, dnsfunc=dns)
    signature = received.parsed()["DKIM-Signature"].replace(" ", "").replace("\r\n", "")
    signed = signature.split("h=", 1)[1].split(";", 1)[0].lower().split(":")
    for header in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post", "feedback-id"):
        assert header in signed
    assert received.parsed()["Feedback-ID"] == "w48:digest:tw"
    tampered = received.data.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <x", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_keys_go_together(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, transport={"kind": "smtp", "host": "127.0.0.1", "dkim_domain": "test.example"}
    )
    with pytest.raises(ConfigError, match="go together"):
        Runtime.open(config.load(path, environ={}))
