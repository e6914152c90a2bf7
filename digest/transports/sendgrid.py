"""SendGrid v3 Mail Send: one request per segment and 1,000 readers, legacy substitutions.

``POST https://api.sendgrid.com/v3/mail/send`` with ``Authorization: Bearer <key>``
and a JSON body (SendGrid "Mail Send" reference). The digest's subject, HTML and text
go in the request **once**; each reader is one entry of ``personalizations`` (at most
1,000 per request) carrying only what is theirs:

=================================  ====================================================
``to``                             ``[{"email", "name"}]``
``substitutions``                  ``-unsubscribe_url-`` → the URL (text part),
                                   ``-unsubscribe_url_html-`` → the URL HTML-escaped,
                                   likewise every other slot the digest uses.
                                   Substitutions apply to *all* content, subject and
                                   reply-to, hence distinct tags for HTML and text.
``headers``                        ``List-Unsubscribe: <url>`` (RFC 2369, per reader)
``custom_args``                    ``digest_message_id`` (our Message-ID, with <>) and
                                   ``digest_delivery_id``: echoed in every Event
                                   Webhook event, so events match delivery rows
=================================  ====================================================

Message level: ``from``, ``reply_to``, ``subject``, ``content`` (``text/plain`` then
``text/html``, the order SendGrid requires), ``headers`` (``List-Id`` and RFC 8058's
``List-Unsubscribe-Post``), ``categories`` (the edition key). We never set a
``Message-ID`` header: SendGrid assigns one per recipient, and the ``202`` answer's
``X-Message-Id`` is the same for every reader of the request (events carry it as the
prefix of ``sg_message_id``), which is why matching goes through ``custom_args``.

Answers (per request, never per recipient): ``202`` → every message ``queued`` with
``provider_id`` = ``X-Message-Id``; ``400``/``413`` → ``failed`` with SendGrid's
``errors`` — except that errors naming ``personalizations.N`` mark reader N
``rejected`` and the others of that request ``deferred`` (sent again without N);
``429`` without ``Retry-After`` gets one derived from ``X-RateLimit-Reset``; the
rest (401/403, 5xx, timeouts) is :class:`~digest.transports.http_base.HttpBatchTransport`'s.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from email.utils import quote as rfc822_quote
from typing import Any, ClassVar

from digest.transports.api import ApiRequest, ApiResponse, compact
from digest.transports.base import Outcome, OutgoingMessage, SendResult, SharedContent
from digest.transports.http_base import HttpBatchTransport
from digest.transports.substitution import TaggedCache, TaggedDigest, send_grouped, tag_digest

MAX_PERSONALIZATIONS = 1000  # "limited to 1000 personalizations per API request"
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 3.1
_CONTROL = dict.fromkeys([*range(32), *range(127, 160)])
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def sendgrid_tag(name: str, for_html: bool, salt: str) -> str:
    """``-unsubscribe_url-`` (text) / ``-unsubscribe_url_html-`` (HTML), SendGrid's
    documented ``-name-`` style; ``salt`` only when the edition's text collides."""
    return f"-{name}{'_html' if for_html else ''}{'_' + salt if salt else ''}-"


class SendGridTransport(HttpBatchTransport):
    kind: ClassVar[str] = "sendgrid"
    secret_env: ClassVar[Mapping[str, str]] = {"api_key": "DIGEST_SENDGRID_API_KEY"}
    default_base_url: ClassVar[str] = "https://api.sendgrid.com"  # EU subusers: api.eu.…
    provider_max_batch: ClassVar[int] = MAX_PERSONALIZATIONS
    path: ClassVar[str] = "/v3/mail/send"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self._tagged = TaggedCache()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request per segment group of up to 1,000 readers; results in order."""
        return await send_grouped(self, messages, self._send_chunk)

    def build_request(self, messages: Sequence[OutgoingMessage]) -> ApiRequest:
        first = messages[0]
        if first.shared is None or first.personal is None:
            return ApiRequest(self.path, json=self._single(first))
        tagged = self.tagged(first.shared)
        body: dict[str, Any] = {
            "personalizations": [self._personalization(m, tagged) for m in messages],
            **_sender(first.shared.from_header, first.shared.reply_to),
            "subject": tagged.subject,
            "content": _content(tagged.text, tagged.html),
            "headers": {"List-Id": first.shared.list_id, "List-Unsubscribe-Post": ONE_CLICK},
        }
        if first.tag:
            body["categories"] = [first.tag]
        return ApiRequest(self.path, json=body)

    def parse_response(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]:
        if 200 <= response.status < 300:
            provider_id = response.headers.get("x-message-id", "")
            detail = f"sendgrid HTTP {response.status}; X-Message-Id: {provider_id or '-'}"
            if response.text.strip():
                detail += f"; {response.compact()}"
            return [
                SendResult(m.delivery_id, Outcome.queued, provider_id=provider_id, detail=detail)
                for m in messages
            ]
        detail = f"sendgrid HTTP {response.status}: {response.compact()}"
        refused = _refused_indexes(response.json(), len(messages))
        if not refused:
            return [SendResult(m.delivery_id, Outcome.failed, detail=detail) for m in messages]
        others = f"not sent: SendGrid refused other readers of the same request ({detail})"
        return [
            SendResult(m.delivery_id, Outcome.rejected, detail=detail)
            if i in refused
            else SendResult(m.delivery_id, Outcome.deferred, detail=compact(others))
            for i, m in enumerate(messages)
        ]

    async def _request(self, request: ApiRequest, count: int) -> ApiResponse:
        # SendGrid's 429 documents X-RateLimit-Reset (a Unix time), not Retry-After:
        # translate it so the base's "not before" gate applies.
        response = await super()._request(request, count)
        reset = response.headers.get("x-ratelimit-reset")
        if response.status != 429 or "retry-after" in response.headers or not reset:
            return response
        try:
            wait = max(float(reset) - time.time(), 0.0)
        except ValueError:
            return response
        headers = {**response.headers, "retry-after": f"{wait:.3f}"}
        return dataclasses.replace(response, headers=headers)

    def tagged(self, shared: SharedContent) -> TaggedDigest:
        """The segment's content with tags, built once per ``shared.key``."""
        return self._tagged.get(shared, lambda d: tag_digest(d, sendgrid_tag))

    def _personalization(self, message: OutgoingMessage, tagged: TaggedDigest) -> dict[str, Any]:
        assert message.personal is not None
        values = message.personal.values
        entry: dict[str, Any] = {"to": [_address(message.recipient, message.personal.to_name)]}
        substitutions = tagged.values_for(values)
        if substitutions:
            entry["substitutions"] = substitutions
        if "unsubscribe_url" in values:
            entry["headers"] = {"List-Unsubscribe": f"<{values['unsubscribe_url']}>"}
        entry["custom_args"] = _custom_args(message)
        return entry

    def _single(self, message: OutgoingMessage) -> dict[str, Any]:
        """A transactional message: its own content, one personalization."""
        parts = self.parts(message)
        name, address = parseaddr(parts.to)
        headers = {k: v for k, v in parts.headers.items() if k.lower() != "message-id"}
        personalization: dict[str, Any] = {
            "to": [_address(address or message.recipient, name)],
            "custom_args": _custom_args(message),
        }
        body: dict[str, Any] = {
            "personalizations": [personalization],
            **_sender(parts.from_header, parts.reply_to),
            "subject": parts.subject,
            "content": _content(parts.text, parts.html),
        }
        if headers:
            body["headers"] = headers
        if message.tag:
            body["categories"] = [message.tag]
        return body


def _address(email: str, name: str) -> dict[str, str]:
    entry = {"email": email}
    clean = name.translate(_CONTROL).strip()
    if clean:
        # SendGrid fails to quote display names with "," or ";" in personalizations
        # (sendgrid/sendgrid-python#291, worked around the same way by django-anymail).
        entry["name"] = f'"{rfc822_quote(clean)}"' if any(c in clean for c in ",;") else clean
    return entry


def _sender(from_header: str, reply_to: str | None) -> dict[str, Any]:
    name, address = parseaddr(from_header)
    out: dict[str, Any] = {"from": {"email": address, **({"name": name} if name else {})}}
    if reply_to:
        r_name, r_address = parseaddr(reply_to)
        out["reply_to"] = {"email": r_address, **({"name": r_name} if r_name else {})}
    return out


def _content(text: str | None, html_body: str | None) -> list[dict[str, str]]:
    # "text/plain, text/html": the order SendGrid requires; empty values are refused.
    content = [{"type": "text/plain", "value": text}] if text else []
    return content + ([{"type": "text/html", "value": html_body}] if html_body else [])


def _custom_args(message: OutgoingMessage) -> dict[str, str]:
    # custom_args values must be strings (a number is a 400 "Bad Request").
    return {"digest_message_id": message.message_id, "digest_delivery_id": str(message.delivery_id)}


def _refused_indexes(body: Any, count: int) -> set[int]:
    """Personalization indexes named by a 400's ``errors[].field``, when every error
    names one (else the whole request is at fault: empty set)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return set()
    found: set[int] = set()
    for error in errors:
        field = error.get("field") if isinstance(error, dict) else None
        match = _PERSONALIZATION_FIELD.match(field) if isinstance(field, str) else None
        if match is None or int(match.group(1)) >= count:
            return set()
        found.add(int(match.group(1)))
    return found
