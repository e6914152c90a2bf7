"""Resend: ``POST /emails/batch`` with up to 100 emails per request.

Shaped from Resend's published docs (api-reference, emails/send-batch-emails,
dashboard/emails/idempotency-keys, changelog "Batch Validation Modes", custom
headers): a JSON array of emails (``from``, ``to`` [list], ``subject``, ``html``,
``text``, ``reply_to``, ``headers`` {name: value}, ``tags`` [{name, value}]),
authenticated by ``Authorization: Bearer``. The answer is ``{"data": [{"id"}…]}``,
plus ``"errors": [{"index", "message"}]`` in *permissive* validation mode
(``x-batch-validation: permissive``), where valid emails go out and invalid ones
are listed; in *strict* mode (Resend's default) one invalid email fails the whole
batch with a 4xx. We default to permissive so one bad address fails alone.

Every request carries ``Idempotency-Key: digest-batch/<sha256 of the batch's delivery
and message ids>``: the same batch sent again (a retry after a timeout, when the
outcome is unknown) is dropped by Resend as a duplicate for 24 hours. So timeouts
after sending are retried inside the call (``idempotent = True``).

==========================================  =======================================
200, email in ``data``                      ``queued``; ``provider_id`` = its ``id``
200, email listed in ``errors``             ``rejected`` with Resend's message
400 / 422 (strict mode, bad payload)        ``failed`` for the whole batch
409 ``concurrent_idempotent_requests``      ``deferred`` (the same key is in flight)
409 ``invalid_idempotent_request``          ``unknown`` (the key was used with other
                                            content: an earlier send may have gone)
403 / 401 (key invalid or restricted)       raises ``TransportUnavailable``
==========================================  =======================================

Resend's default limit is 2 requests per second per team (api-reference, "Rate
limit"); 429 answers carry ``retry-after``. Resend does not document a settable
``Message-ID``: our delivery id travels as a tag (returned in webhooks), our message
id as ``X-Entity-Ref-ID`` (documented; it also keeps Gmail from threading editions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from email.charset import QP, Charset
from email.utils import formataddr, parseaddr
from typing import Any, ClassVar

from digest.common import options
from digest.common.options import KEY_MUST
from digest.transports.api import ApiRequest, ApiResponse, compact
from digest.transports.base import Outcome, OutgoingMessage, SendResult
from digest.transports.http_base import HttpBatchTransport

VALIDATION_MODES = ("permissive", "strict")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # tags: ASCII letters, digits, _ and - only
_QP = Charset("utf-8")
_QP.header_encoding = QP


class ResendTransport(HttpBatchTransport):
    kind: ClassVar[str] = "resend"
    secret_env: ClassVar[Mapping[str, str]] = {"api_key": "DIGEST_RESEND_API_KEY"}
    default_base_url: ClassVar[str] = "https://api.resend.com"
    provider_max_batch: ClassVar[int] = 100
    default_requests_per_second: ClassVar[float] = 2.0
    default_messages_per_second: ClassVar[float] = 0.0
    idempotent: ClassVar[bool] = True

    def __init__(self, *, batch_validation: str = "permissive", **common: Any) -> None:
        """``batch_validation``: ``"permissive"`` (bad emails fail alone) or ``"strict"``."""
        self.batch_validation = options.one_of(
            "batch_validation", batch_validation, VALIDATION_MODES, style=KEY_MUST
        )
        super().__init__(**common)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def build_request(self, messages: Sequence[OutgoingMessage]) -> ApiRequest:
        headers = {
            "Idempotency-Key": f"digest-batch/{self.batch_key(messages)}",
            "x-batch-validation": self.batch_validation,
        }
        return ApiRequest("/emails/batch", json=[self._one(m) for m in messages], headers=headers)

    def _one(self, message: OutgoingMessage) -> dict[str, Any]:
        parts = self.parts(message, json_bodies=True)
        headers = dict(parts.headers)
        headers["X-Entity-Ref-ID"] = message.message_id
        tags = [{"name": "delivery_id", "value": str(message.delivery_id)}]
        if message.tag:
            tags.append({"name": "edition", "value": _TAG_UNSAFE.sub("_", message.tag)})
        body: dict[str, Any] = {
            "from": parts.from_header,
            "to": [_address(parts.to)],
            "subject": parts.subject,
            "headers": headers,
            "tags": tags,
        }
        if parts.html is not None:
            body["html"] = parts.html
        if parts.text is not None:
            body["text"] = parts.text
        if parts.reply_to:
            body["reply_to"] = [parts.reply_to]
        return body

    def parse_response(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]:
        answer = response.json()
        if response.status == 409:
            return _conflict(messages, response, answer)
        if response.status != 200:
            detail = f"Resend HTTP {response.status}: {response.compact()}"
            return [SendResult(m.delivery_id, Outcome.failed, detail=detail) for m in messages]
        errors = {int(e["index"]): e for e in answer.get("errors") or []}
        ids = [str(item["id"]) for item in answer["data"]]
        accepted = [i for i in range(len(messages)) if i not in errors]
        if len(ids) == len(messages):  # one entry per email, in order
            id_of = dict(enumerate(ids))
        elif len(ids) == len(accepted):  # only the accepted emails, in order
            id_of = dict(zip(accepted, ids, strict=True))
        else:
            raise ValueError(f"{len(ids)} ids and {len(errors)} errors for {len(messages)}")
        results = []
        for i, m in enumerate(messages):
            if i in errors:
                detail = f"Resend: {errors[i].get('message', '')} {compact(errors[i])}"
                results.append(SendResult(m.delivery_id, Outcome.rejected, detail=detail))
            else:
                raw = compact({"id": id_of[i]})
                results.append(SendResult(m.delivery_id, Outcome.queued, id_of[i], raw))
        return results


def _conflict(
    messages: Sequence[OutgoingMessage], response: ApiResponse, answer: Any
) -> list[SendResult]:
    name = answer.get("name", "") if isinstance(answer, dict) else ""
    detail = f"Resend HTTP 409: {response.compact()}"
    if name == "concurrent_idempotent_requests":
        outcome, wait = Outcome.deferred, 1.0
    else:
        outcome, wait = Outcome.unknown, None
    return [SendResult(m.delivery_id, outcome, detail=detail, retry_after=wait) for m in messages]


def _address(formatted: str) -> str:
    """Resend refuses a quoted display name in ``to`` (see django-anymail's Resend
    backend): send such a name as an RFC 2047 encoded word instead."""
    if not formatted.startswith('"'):
        return formatted
    name, address = parseaddr(formatted)
    return formataddr((_QP.header_encode(name), address))
