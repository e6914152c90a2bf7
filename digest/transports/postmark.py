"""Postmark: ``POST /email/batch`` with up to 500 messages per request.

Shaped from Postmark's published docs (developer/user-guide/send-email-with-api/
batch-emails, developer/api/overview#error-codes): a JSON array of messages
(``From``, ``To``, ``Subject``, ``HtmlBody``, ``TextBody``, ``ReplyTo``,
``Headers`` as ``[{Name, Value}]``, ``MessageStream``, ``Tag``, ``Metadata``),
authenticated by ``X-Postmark-Server-Token``. The answer is HTTP 200 with one
object per message, in order, each with ``ErrorCode`` (0 = accepted), ``Message``
and ``MessageID``; a whole request Postmark refuses is HTTP 422 with one
``{ErrorCode, Message}``.

======================================  ==========================================
per message ``ErrorCode`` 0             ``queued``; ``provider_id`` = ``MessageID``
per message 406 (inactive recipient:    ``rejected`` with ``bounce = "hard"``: Postmark
hard bounce, spam complaint or          will not mail the address ("You tried to send
unsubscribe recorded by Postmark)       to recipient(s) that have been marked as
                                        inactive"), so the reader is suppressed
per message 300 (invalid request, e.g.  ``rejected`` ("Postmark <code>: <message>")
the ``To``)
per message, any other code             ``failed``
422 with 10, 400, 401, 405, 412, 413    raises ``TransportUnavailable``: the token,
(token, sender signature, account)      sender signature or account must be fixed
422, any other code                     ``failed`` for the whole batch
======================================  ==========================================

Postmark documents no numeric API rate limit (a 429 exists), so requests are paced
at 5/s by default and messages are not limited. Newsletters belong on a broadcast
stream (``message_stream``, default ``"broadcast"``). Postmark does not document a
settable ``Message-ID``, so our id travels in ``Metadata`` (``delivery_id``,
``message_id``), which Postmark returns in its webhooks and filters its outbound
message search by.

A batch answered 5xx after it left may have been accepted (see
:mod:`digest.transports.http_base`): every message of it is ``unknown``, and
:meth:`PostmarkTransport.reconcile` asks Postmark's "Outbound message search"
(Messages API, ``GET /messages/outbound``; ``count`` ≤ 500 and ``offset`` required;
filters ``recipient``, ``tag``, ``messagestream`` — without it Postmark searches the
default transactional stream — ``fromdate`` in Eastern Time, and
``metadata_<key>=<value>``, one metadata field per search, per Postmark's custom
metadata FAQ). One search per message, by ``metadata_delivery_id`` and recipient;
a message found whose ``Metadata`` agrees (when Postmark shows it) is ``queued``
with its ``MessageID``. ``fromdate`` is the day before the attempt (UTC), so the
Eastern Time offset can never hide it. Bounds: :mod:`digest.transports.reconcile`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from digest.common import options
from digest.common.options import KEY
from digest.errors import TransportUnavailable
from digest.transports.api import ApiRequest, ApiResponse, compact
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult
from digest.transports.reconcile import (
    DEFAULT_DEADLINE,
    MAX_ANSWER_BYTES,
    MAX_PAGES,
    SearchingTransport,
)

# Whole-request codes that no retry or other reader can fix (developer/api/overview).
_ACCOUNT_CODES = {
    10: "bad or missing server token",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    405: "not allowed to send (account)",
    412: "account is pending approval",
    413: "account may not send",
}
_RECIPIENT_CODES = frozenset({300, 406})  # invalid email request, inactive recipient
_INACTIVE = 406  # hard-bounced, complained or unsubscribed at Postmark: do not mail again
_SEARCH_PAGE = 50  # a metadata search finds one message, or a few after resends


class PostmarkTransport(SearchingTransport):
    kind: ClassVar[str] = "postmark"
    secret_env: ClassVar[Mapping[str, str]] = {"api_key": "DIGEST_POSTMARK_SERVER_TOKEN"}
    default_base_url: ClassVar[str] = "https://api.postmarkapp.com"
    provider_max_batch: ClassVar[int] = 500
    default_requests_per_second: ClassVar[float] = 5.0
    default_messages_per_second: ClassVar[float] = 0.0
    idempotent: ClassVar[bool] = False  # Postmark has no idempotency key

    def __init__(
        self,
        *,
        message_stream: str = "broadcast",
        reconcile_seconds: float = DEFAULT_DEADLINE,
        **common: Any,
    ) -> None:
        """``message_stream``: the Postmark stream id (a broadcast stream for a newsletter);
        ``reconcile_seconds``: the most one :meth:`reconcile` call may take."""
        self.message_stream = options.text("message_stream", message_stream, style=KEY)
        self.reconcile_seconds = options.number(
            "reconcile_seconds", reconcile_seconds, inclusive=False, finite=False, style=KEY
        )
        super().__init__(**common)

    def auth_headers(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.api_key}

    def probe_request(self) -> ApiRequest:
        return ApiRequest("/server", method="GET")  # the server's settings: token check

    def build_request(self, messages: Sequence[OutgoingMessage]) -> ApiRequest:
        return ApiRequest("/email/batch", json=[self._one(m) for m in messages])

    def _one(self, message: OutgoingMessage) -> dict[str, Any]:
        parts = self.parts(message, json_bodies=True)
        body: dict[str, Any] = {
            "From": parts.from_header,
            "To": parts.to,
            "Subject": parts.subject,
            "MessageStream": self.message_stream,
            "Headers": [{"Name": k, "Value": v} for k, v in parts.headers.items()],
            "Metadata": {"delivery_id": str(message.delivery_id), "message_id": message.message_id},
        }
        if parts.html is not None:
            body["HtmlBody"] = parts.html
        if parts.text is not None:
            body["TextBody"] = parts.text
        if parts.reply_to:
            body["ReplyTo"] = parts.reply_to
        if message.tag:
            body["Tag"] = message.tag
        return body

    def parse_response(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]:
        answer = response.json()
        if response.status != 200:
            return self._refused(messages, response, answer)
        if not isinstance(answer, list) or len(answer) != len(messages):
            raise ValueError(f"expected a list of {len(messages)} results")
        return [_result(m, item) for m, item in zip(messages, answer, strict=True)]

    def _refused(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse, answer: Any
    ) -> list[SendResult]:
        code = answer.get("ErrorCode") if isinstance(answer, dict) else None
        text = answer.get("Message", "") if isinstance(answer, dict) else response.text
        if code in _ACCOUNT_CODES:
            raise TransportUnavailable(
                f"Postmark refused the batch ({code} {_ACCOUNT_CODES[code]}: {text}): check "
                "the server token (DIGEST_POSTMARK_SERVER_TOKEN), the sender signature of "
                "[email] from, and the Postmark account"
            )
        if response.status == 404:
            raise TransportUnavailable(
                f"Postmark answered 404 at {self.base_url}: check [transport] base_url"
            )
        detail = f"Postmark HTTP {response.status} {code}: {text} {response.compact()}"
        return [SendResult(m.delivery_id, Outcome.failed, detail=detail) for m in messages]

    async def _search(self, item: InDoubt) -> SendResult | None:
        """``queued`` + ``MessageID`` when Postmark's outbound message search finds the
        item (see the module docstring)."""
        params = {
            "count": str(_SEARCH_PAGE),
            "recipient": item.recipient,
            "messagestream": self.message_stream,
            "metadata_delivery_id": str(item.delivery_id),
            "fromdate": (item.attempted_at - timedelta(days=1)).date().isoformat(),
        }
        if item.tag:
            params["tag"] = item.tag
        for page in range(MAX_PAGES):
            params["offset"] = str(page * _SEARCH_PAGE)
            answer, messages = await self.search_page(
                "/messages/outbound",
                params,
                key="Messages",
                label="Postmark search",
                max_bytes=MAX_ANSWER_BYTES,
            )
            for found in messages:
                if _is_ours(found, item):
                    return _found(item, found, params)
            total = answer.get("TotalCount")
            if not messages or not isinstance(total, int) or total <= (page + 1) * _SEARCH_PAGE:
                return None
        return None


def _is_ours(found: Any, item: InDoubt) -> bool:
    """The search filters by our metadata; check what Postmark shows of it anyway."""
    if not isinstance(found, dict) or not found.get("MessageID"):
        return False
    metadata = found.get("Metadata")
    if isinstance(metadata, dict):
        if metadata.get("delivery_id", str(item.delivery_id)) != str(item.delivery_id):
            return False
        if metadata.get("message_id", item.message_id) != item.message_id:
            return False
    recipients = found.get("Recipients")
    if isinstance(recipients, list) and recipients:
        return item.recipient.lower() in {str(r).lower() for r in recipients}
    return True


def _found(item: InDoubt, found: dict[str, Any], params: Mapping[str, str]) -> SendResult:
    query = f"metadata_delivery_id={params['metadata_delivery_id']} recipient={item.recipient}"
    summary = {k: found.get(k) for k in ("MessageID", "Status", "ReceivedAt", "MessageStream")}
    detail = f"Postmark outbound message search ({query}) found it: {compact(summary)}"
    return SendResult(item.delivery_id, Outcome.queued, str(found["MessageID"]), detail)


def _result(message: OutgoingMessage, item: Any) -> SendResult:
    code = item.get("ErrorCode", 0)  # absent on delayed accepts
    raw = compact(item)
    if code == 0:
        return SendResult(message.delivery_id, Outcome.queued, str(item["MessageID"]), raw)
    outcome = Outcome.rejected if code in _RECIPIENT_CODES else Outcome.failed
    detail = f"Postmark {code}: {item.get('Message', '')} {raw}"
    bounce = "hard" if code == _INACTIVE else ""
    return SendResult(message.delivery_id, outcome, detail=detail, bounce=bounce)
