"""What every route shares: the runtime, pages, the sign-up limiter and the mailer.

:func:`create_app` builds one :class:`Web` and keeps it on ``app.state.web``;
routes get it with :func:`web_of`. Also here: token checks that answer every bad
token alike (:meth:`Web.verify`) and the consent :class:`Context` of a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request

from digest.config.runtime import Runtime
from digest.web.mailer import Mailer
from digest.web.pages import Pages
from digest.web.ratelimit import SlidingWindow, client_ip
from subscribers.consent import Context
from subscribers.models import ConsentSource, Subscriber
from subscribers.tokens import BadToken, Purpose


@dataclass
class Web:
    rt: Runtime
    pages: Pages
    limiter: SlidingWindow
    mailer: Mailer

    @property
    def confirm_max_age(self) -> timedelta:
        return timedelta(hours=self.rt.config.web.confirm_token_hours)

    def verify(self, purpose: Purpose, token: str) -> int | None:
        """The subscriber id of a good token for ``purpose``; None for any bad one."""
        max_age = None
        if purpose is Purpose.confirm:
            max_age = int(self.confirm_max_age.total_seconds())
        try:
            return self.rt.signer().verify(purpose, token, max_age=max_age)
        except BadToken:
            return None

    def confirmation_current(self, subscriber: Subscriber) -> bool:
        """A confirmation link also expires by the runtime's clock, counted from the
        last confirmation email (the token's own timestamp uses the system clock)."""
        sent = subscriber.confirmation_sent_at
        return sent is not None and self.rt.now() - sent <= self.confirm_max_age

    def context(self, request: Request, source: ConsentSource) -> Context:
        """Who asked, for the consent log: source, client IP, user agent, consent text."""
        cfg = self.rt.config.web
        return Context(
            source=source,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent", ""),
            consent_version=cfg.consent_version,
        )


def web_of(request: Request) -> Web:
    web = request.app.state.web
    assert isinstance(web, Web)
    return web
