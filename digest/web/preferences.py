"""The preferences page: categories (none chosen = all), a pause, an unsubscribe link.

Only categories seen in the feed are offered and accepted; anything else
submitted is ignored. The pause select offers none or 1, 2, 4, 8, 12 weeks, and,
while a pause runs, "keep" (preselected), so saving new categories never ends a
pause by accident.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.store.db import session_scope
from digest.web import catalog
from digest.web.forms import Fields
from digest.web.pages import Problem
from digest.web.state import Web
from subscribers import lifecycle
from subscribers.consent import Context
from subscribers.models import Subscriber
from subscribers.tokens import Purpose

PAUSE_WEEKS = (1, 2, 4, 8, 12)
KEEP = "keep"


def pause_options(paused_until: datetime | None, now: datetime) -> list[tuple[str, str]]:
    keep = [(KEEP, "Keep the current pause")] if paused_until and paused_until > now else []
    weeks = [(str(n), f"{n} week{'s' if n != 1 else ''}") for n in PAUSE_WEEKS]
    return [*keep, ("0", "No pause"), *weeks]


async def preferences_page(
    w: Web, request: Request, token: str, subscriber_id: int, *, saved: bool
) -> Response:
    found = await run_in_threadpool(_load, w, subscriber_id)
    if found is None:
        return w.pages.problem(request, Problem.invalid_link)
    subscriber, categories = found
    now = w.rt.now()
    paused = subscriber.paused_until if lifecycle.is_paused(subscriber, now) else None
    unsubscribe = w.rt.signer().sign(Purpose.unsubscribe, subscriber_id)
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return w.pages.page(
        request,
        "preferences",
        title="Preferences",
        action=f"{root}/p/{token}",
        categories=categories,
        chosen=[c for c in subscriber.categories if c in categories],
        pause_options=pause_options(paused, now),
        pause_selected=KEEP if paused else "0",
        paused_until=_day(w, paused) if paused else "",
        reader_status=str(subscriber.status),
        saved=saved,
        unsubscribe_url=f"{root}/u/{unsubscribe}",
    )


def save_preferences(w: Web, subscriber_id: int, fields: Fields, context: Context) -> bool:
    """Save categories and pause (committed on return). False for an unknown reader."""
    now = w.rt.now()
    with session_scope(w.rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return False
        known = set(catalog.feed_categories(session))
        kept = subscriber.paused_until if lifecycle.is_paused(subscriber, now) else None
        choice = fields.first("pause_weeks").strip() or KEEP
        weeks = int(choice) if choice.isdigit() and int(choice) in (0, *PAUSE_WEEKS) else None
        keep = weeks is None and kept is not None  # "keep", or an unknown value
        if keep and kept is not None:
            weeks = min(lifecycle.MAX_PAUSE_WEEKS, math.ceil((kept - now) / timedelta(weeks=1)))
        done = lifecycle.update_preferences(
            session,
            subscriber_id=subscriber_id,
            categories=[c for c in fields.all("categories") if c in known],
            pause_weeks=weeks or 0,
            context=context,
            now=now,
        )
        if done is None:
            return False
        if keep:
            # update_preferences can only start a pause now; put the exact end back.
            done.paused_until = kept
            session.add(done)
        return True


def _load(w: Web, subscriber_id: int) -> tuple[Subscriber, list[str]] | None:
    with session_scope(w.rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.email.endswith("@erased.invalid"):
            return None
        return subscriber, catalog.feed_categories(session)


def _day(w: Web, moment: datetime) -> str:
    local = moment.astimezone(w.rt.config.site.tz)
    return f"{local.day} {local:%B} {local.year}"
