"""Mailgun batch sending: one request per segment and 1,000 readers, recipient variables.

``POST {base}/v3/{domain}/messages`` with HTTP Basic ``api:<key>`` and form fields
(``application/x-www-form-urlencoded``; Mailgun takes it as well as multipart). Base
URL ``https://api.mailgun.net``, or ``https://api.eu.mailgun.net`` for a domain in
the EU region. Mailgun's "Batch Sending" guide: many ``to`` fields plus a
``recipient-variables`` JSON object (keyed by the plain address) make Mailgun send
each reader their own copy, with ``%recipient.KEY%`` replaced everywhere — body,
subject and header fields — by that reader's value. Up to 1,000 recipients a request.

=================================  ====================================================
``from``, ``subject``              once, from the segment's shared content
``text`` / ``html``                once, with ``%recipient.unsubscribe_url%`` (text) and
                                   ``%recipient.unsubscribe_url_html%`` (HTML-escaped
                                   value) where each personal slot is
``to`` (repeated)                  ``Name <addr>`` per reader
``recipient-variables``            per reader: those slot values, plus
                                   ``digest_message_id`` and ``digest_delivery_id``
``h:List-Unsubscribe``             ``%recipient.list_unsubscribe%`` = ``<url>``
``h:List-Unsubscribe-Post``        ``List-Unsubscribe=One-Click`` (RFC 8058)
``h:List-Id``, ``h:Reply-To``      once
``v:digest_message_id``,           ``%recipient.digest_message_id%`` …: Mailgun custom
``v:digest_delivery_id``           variables, echoed per event as ``user-variables``;
                                   this is how webhooks match events to delivery rows
``o:tag``                          the edition key
=================================  ====================================================

Message-ID: a batch answer carries one ``id`` for the whole request and Mailgun's
events report that id for every reader, so it cannot tell readers apart. Mailgun
honours ``h:Message-Id`` for a single message, but nothing documents substituting a
recipient variable into it, so we do not set it; matching goes through the ``v:``
variables above (note: Mailgun puts them in an ``X-Mailgun-Variables`` header that
readers can see — our Message-ID and a delivery row number, nothing secret).

Answers, per request: ``200 {"id", "message"}`` → every message ``queued`` with
``provider_id`` = the id without ``<>``; ``404`` (unknown domain: wrong ``domain`` or
``region``) and a ``200`` "Mailgun Magnificent API" page (a wrong URL) raise
``TransportUnavailable``; other ``4xx`` → ``failed`` with Mailgun's ``message``. The
rest (401/403, 429/503 and ``Retry-After``, 5xx, timeouts) is the base's: a 500,
502 or 504 (Mailgun: "something is wrong on Mailgun's end") or a lost answer makes
every reader of the request ``unknown``, never resent blindly. Mailgun answers no
suppressed address at send time (it accepts the request and later reports a
``failed`` event, "previously bounced"), so hard bounces come through webhooks.

:meth:`MailgunTransport.reconcile` asks the Events API (``GET /v3/<domain>/events``:
``begin``/``end`` in epoch seconds, ``limit`` ≤ 300, filters ``event`` and
``recipient``; pages through ``paging.next`` until an empty page) for the
``accepted`` event of each message in doubt, from 15 minutes before the attempt to
an hour after it. The documented filters include no custom variable, so the event
must carry our ``user-variables.digest_delivery_id`` (and ``digest_message_id``,
when present) to count: then ``queued`` with the Mailgun message id. Only
``paging.next`` URLs on our ``base_url`` are followed (the credentials go nowhere
else). Bounds: :mod:`digest.transports.reconcile`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from digest.common import options
from digest.common.options import KEY
from digest.errors import TransportUnavailable
from digest.transports.api import ApiRequest, ApiResponse, compact
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult, SharedContent
from digest.transports.parts import to_header
from digest.transports.reconcile import (
    DEFAULT_DEADLINE,
    MAX_ANSWER_BYTES,
    MAX_PAGES,
    SearchingTransport,
)
from digest.transports.substitution import TaggedCache, TaggedDigest, send_grouped, tag_digest

MAX_RECIPIENTS = 1000  # "The maximum number of recipients allowed for batch is 1,000"
REGIONS: Mapping[str, str] = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 3.1
MESSAGE_ID_VAR = "digest_message_id"
DELIVERY_ID_VAR = "digest_delivery_id"
LIST_UNSUBSCRIBE_VAR = "list_unsubscribe"  # "<url>": the List-Unsubscribe header's value
# Recipient variables used outside the content: they must not occur in it either.
EXTRA_VARS = (LIST_UNSUBSCRIBE_VAR, MESSAGE_ID_VAR, DELIVERY_ID_VAR)
_PREFIX = "%recipient."
EVENTS_LIMIT = 300  # "The number of entries to return (300 max)"
_SEARCH_BEFORE = timedelta(minutes=15)  # clocks differ; the event is near the attempt
_SEARCH_AFTER = timedelta(hours=1)


def mailgun_tag(name: str, for_html: bool, salt: str) -> str:
    """``%recipient.unsubscribe_url%`` / ``%recipient.unsubscribe_url_html%``."""
    return f"{_PREFIX}{variable(name, for_html, salt)}%"


def variable(name: str, for_html: bool, salt: str = "") -> str:
    return f"{name}{'_html' if for_html else ''}{'_' + salt if salt else ''}"


def _key(tag: str) -> str:
    """The recipient-variables key of ``%recipient.KEY%``."""
    return tag[len(_PREFIX) : -1]


class MailgunTransport(SearchingTransport):
    kind: ClassVar[str] = "mailgun"
    secret_env: ClassVar[Mapping[str, str]] = {"api_key": "DIGEST_MAILGUN_API_KEY"}
    default_base_url: ClassVar[str] = REGIONS["us"]
    provider_max_batch: ClassVar[int] = MAX_RECIPIENTS

    def __init__(
        self,
        *,
        domain: str | None = None,
        region: str = "us",
        reconcile_seconds: float = DEFAULT_DEADLINE,
        **common: Any,
    ) -> None:
        """``domain``: the Mailgun sending domain (required); ``region``: "us" or "eu"
        (picks the base URL unless ``base_url`` is given); ``reconcile_seconds``: the
        most one :meth:`reconcile` call may take. ``ValueError`` names the key."""
        self.reconcile_seconds = options.number(
            "reconcile_seconds", reconcile_seconds, inclusive=False, finite=False, style=KEY
        )
        if not isinstance(domain, str) or not domain.strip():
            raise ValueError("key 'domain': required for kind 'mailgun' (your sending domain)")
        if any(c in domain for c in "/\\ %?#") or domain != domain.strip():
            # A '/' makes Mailgun answer 200 with its "Magnificent API" page, not an error.
            raise ValueError(f"key 'domain': expected a domain name, got {domain!r}")
        options.one_of("region", region, REGIONS, style=KEY, what="'us' or 'eu'")
        common.setdefault("base_url", REGIONS[region])
        super().__init__(**common)
        self.domain = domain
        self.region = region
        self.path = f"/v3/{quote(domain, safe='')}/messages"
        self._tagged = TaggedCache()

    def auth_headers(self) -> dict[str, str]:
        token = base64.b64encode(f"api:{self.api_key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request per segment group of up to 1,000 readers; results in order."""
        return await send_grouped(self, messages, self._send_chunk)

    def build_request(self, messages: Sequence[OutgoingMessage]) -> ApiRequest:
        first = messages[0]
        if first.shared is None or first.personal is None:
            return ApiRequest(self.path, form=self._single(first))
        shared = first.shared
        tagged = self.tagged(shared)
        form: dict[str, str | list[str]] = {
            "from": shared.from_header,
            "to": [to_header(m.personal.to_name, m.recipient) for m in messages if m.personal],
            "subject": tagged.subject,
            "text": tagged.text,
            "html": tagged.html,
            "recipient-variables": json.dumps(
                {m.recipient: self._variables(m, tagged) for m in messages},
                separators=(",", ":"),
                ensure_ascii=False,
            ),
            "h:List-Id": shared.list_id,
            "h:List-Unsubscribe-Post": ONE_CLICK,
            f"v:{MESSAGE_ID_VAR}": tagged.extra[MESSAGE_ID_VAR],
            f"v:{DELIVERY_ID_VAR}": tagged.extra[DELIVERY_ID_VAR],
        }
        if any("unsubscribe_url" in m.personal.values for m in messages if m.personal):
            form["h:List-Unsubscribe"] = tagged.extra[LIST_UNSUBSCRIBE_VAR]
        if shared.reply_to:
            form["h:Reply-To"] = shared.reply_to
        if first.tag:
            form["o:tag"] = first.tag
        return ApiRequest(self.path, form=form)

    def parse_response(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]:
        if response.status == 404 or "Mailgun Magnificent API" in response.text:
            raise TransportUnavailable(
                f"mailgun HTTP {response.status} for {self.base_url}{self.path}: "
                f"{response.compact()}: check [transport] domain ({self.domain!r}) and "
                f'region ({self.region!r}; EU domains need region = "eu")'
            )
        body = response.json()
        if 200 <= response.status < 300:
            provider_id = str(body["id"]).strip().strip("<>")
            detail = f"mailgun HTTP {response.status}: {response.compact()}"
            return [
                SendResult(m.delivery_id, Outcome.queued, provider_id=provider_id, detail=detail)
                for m in messages
            ]
        detail = f"mailgun HTTP {response.status}: {response.compact()}"
        return [SendResult(m.delivery_id, Outcome.failed, detail=detail) for m in messages]

    async def _search(self, item: InDoubt) -> SendResult | None:
        """``queued`` + Mailgun's id when an ``accepted`` event carries the item's
        delivery id (see the module docstring)."""
        url: str | None = f"/v3/{quote(self.domain, safe='')}/events"
        params: dict[str, str] | None = {
            "event": "accepted",
            "recipient": item.recipient,
            "begin": str(int((item.attempted_at - _SEARCH_BEFORE).timestamp())),
            "end": str(int((item.attempted_at + _SEARCH_AFTER).timestamp())),
            "limit": str(EVENTS_LIMIT),
        }
        for _ in range(MAX_PAGES):
            if url is None:
                return None
            body, events = await self.search_page(
                url, params, key="items", label="mailgun events", max_bytes=MAX_ANSWER_BYTES
            )
            for event in events:
                if _is_ours(event, item):
                    return _found(item, event)
            url, params = (self._next_page(body) if events else None), None
        return None

    def _next_page(self, body: Mapping[str, Any]) -> str | None:
        """``paging.next`` when it is on our base URL (our key goes nowhere else)."""
        paging = body.get("paging")
        url = paging.get("next") if isinstance(paging, dict) else None
        if isinstance(url, str) and url.startswith(self.base_url.rstrip("/") + "/"):
            return url
        return None

    def tagged(self, shared: SharedContent) -> TaggedDigest:
        """The segment's content with ``%recipient.…%`` tags, built once per key."""
        return self._tagged.get(shared, lambda d: tag_digest(d, mailgun_tag, extra=EXTRA_VARS))

    def _variables(self, message: OutgoingMessage, tagged: TaggedDigest) -> dict[str, str]:
        assert message.personal is not None
        values = message.personal.values
        out = {_key(tag): value for tag, value in tagged.values_for(values).items()}
        if "unsubscribe_url" in values:
            out[_key(tagged.extra[LIST_UNSUBSCRIBE_VAR])] = f"<{values['unsubscribe_url']}>"
        out[_key(tagged.extra[MESSAGE_ID_VAR])] = message.message_id
        out[_key(tagged.extra[DELIVERY_ID_VAR])] = str(message.delivery_id)
        return out

    def _single(self, message: OutgoingMessage) -> dict[str, str | list[str]]:
        """A transactional message: its own content and headers, no variables."""
        parts = self.parts(message)
        form: dict[str, str | list[str]] = {
            "from": parts.from_header,
            "to": parts.to,
            "subject": parts.subject,
            f"v:{MESSAGE_ID_VAR}": message.message_id,
            f"v:{DELIVERY_ID_VAR}": str(message.delivery_id),
        }
        if parts.text:
            form["text"] = parts.text
        if parts.html:
            form["html"] = parts.html
        if parts.reply_to:
            form["h:Reply-To"] = parts.reply_to
        for name, value in parts.headers.items():
            if name.lower() != "message-id":
                form[f"h:{name}"] = value
        if message.tag:
            form["o:tag"] = message.tag
        return form


def _is_ours(event: Any, item: InDoubt) -> bool:
    if not isinstance(event, dict) or event.get("event") != "accepted":
        return False
    if str(event.get("recipient", "")).lower() != item.recipient.lower():
        return False
    variables = event.get("user-variables")
    if not isinstance(variables, dict):
        return False
    if str(variables.get(DELIVERY_ID_VAR)) != str(item.delivery_id):
        return False
    return str(variables.get(MESSAGE_ID_VAR, item.message_id)) == item.message_id


def _found(item: InDoubt, event: dict[str, Any]) -> SendResult:
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    provider_id = str(headers.get("message-id", "")) if isinstance(headers, dict) else ""
    summary = {k: event.get(k) for k in ("id", "event", "timestamp", "recipient")}
    detail = (
        f"mailgun events API (event=accepted recipient={item.recipient} "
        f"{DELIVERY_ID_VAR}={item.delivery_id}) found it: {compact(summary)}"
    )
    return SendResult(item.delivery_id, Outcome.queued, provider_id.strip("<>"), detail)
