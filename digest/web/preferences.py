"""The preferences page: categories (none chosen = all), a pause, a time zone, an
unsubscribe link.

Only categories seen in the feed are offered and accepted; anything else
submitted is ignored. The pause select offers none or 1, 2, 4, 8, 12 weeks, and,
while a pause runs, "keep" (preselected), so saving new categories never ends a
pause by accident.

The time zone (``[schedule] local_delivery`` sends at the scheduled hour in it) is a
select of every IANA zone this machine knows, grouped by region, first "Not set"
(the site's time). For a reader who set none, ``static/time-zone.js`` preselects
the browser's zone (``Intl.DateTimeFormat().resolvedOptions().timeZone``) and says
so; nothing is stored until the reader saves. It runs inline, allowed by its
SHA-256 in this page's ``Content-Security-Policy`` (every other page allows no
script), so no route serves it. Without JavaScript the select stays on "Not set".
A zone that :func:`subscribers.repository.clean_time_zone` (the API's check)
refuses rejects the whole form: nothing is saved, and the page says why (400).
"""

from __future__ import annotations

import math
from base64 import b64encode
from datetime import datetime, timedelta
from functools import lru_cache
from hashlib import sha256
from importlib.resources import files
from zoneinfo import available_timezones

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.store.db import session_scope
from digest.web import catalog
from digest.web.forms import BadBody, Fields, read_fields
from digest.web.pages import Problem
from digest.web.security import DEFAULT_CSP
from digest.web.state import Web
from subscribers import lifecycle
from subscribers.consent import Context
from subscribers.errors import SubscriberInputError
from subscribers.models import Subscriber
from subscribers.repository import clean_time_zone
from subscribers.tokens import Purpose

PAUSE_WEEKS = (1, 2, 4, 8, 12)
KEEP = "keep"
DAY_NAMES = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday"}
DAY_NAMES |= {"fri": "Friday", "sat": "Saturday", "sun": "Sunday"}
OTHER = "Other"  # zones without a region ("UTC", "EST5EDT")


def pause_options(paused_until: datetime | None, now: datetime) -> list[tuple[str, str]]:
    keep = [(KEEP, "Keep the current pause")] if paused_until and paused_until > now else []
    weeks = [(str(n), f"{n} week{'s' if n != 1 else ''}") for n in PAUSE_WEEKS]
    return [*keep, ("0", "No pause"), *weeks]


@lru_cache(maxsize=1)
def zone_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every zone :mod:`zoneinfo` offers, sorted, grouped by region (the part before
    the first "/"), regions sorted, :data:`OTHER` last: the select's ``<optgroup>``s."""
    groups: dict[str, list[str]] = {}
    for name in sorted(available_timezones()):
        region = name.split("/", 1)[0] if "/" in name else OTHER
        groups.setdefault(region, []).append(name)
    order = sorted(groups, key=lambda region: (region == OTHER, region))
    return tuple((region, tuple(groups[region])) for region in order)


@lru_cache(maxsize=1)
def zone_script() -> tuple[Markup, str]:
    """``static/time-zone.js`` for inlining, and the page's CSP allowing its hash."""
    text = files("digest.web").joinpath("static", "time-zone.js").read_text("utf-8")
    digest = b64encode(sha256(text.encode("utf-8")).digest()).decode("ascii")
    # Our packaged file, never input: safe to insert unescaped.
    return Markup(text), f"{DEFAULT_CSP}; script-src 'sha256-{digest}'"  # noqa: S704


def _with_own(
    groups: tuple[tuple[str, tuple[str, ...]], ...], own: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``groups``, with the reader's stored zone first when this machine does not list
    it (stored elsewhere): saving the page must not drop it."""
    listed = not own or any(own in zones for _, zones in groups)
    return groups if listed else (("Yours", (own,)), *groups)


def posted_zone(fields: Fields, stored: str) -> str:
    """The posted ``time_zone``, checked like the API's (``stored`` unchanged passes:
    a zone saved elsewhere that this machine lacks). Raises SubscriberInputError."""
    value = fields.first("time_zone")
    return stored if value == stored else clean_time_zone(value)


def zone_problem(fields: Fields, stored: str) -> str:
    """Why the posted ``time_zone`` cannot be saved ("" when it can)."""
    try:
        posted_zone(fields, stored)
    except SubscriberInputError as exc:
        return f"Nothing was saved: {exc}. Choose your time zone from the list."
    return ""


def delivery_hint(w: Web) -> str:
    """When the digest arrives, in the reader's words."""
    schedule, site = w.rt.config.schedule, w.rt.config.site
    when = f"{schedule.time} {DAY_NAMES.get(schedule.day, schedule.day)}"
    if schedule.local_delivery:
        return f"The digest arrives at {when} your time."
    return f"The digest goes out at {when}, {schedule.timezone or site.timezone} time."


async def preferences_page(
    w: Web, request: Request, token: str, subscriber_id: int, *, saved: bool
) -> Response:
    """The page; after a save (``saved``), the posted form is read again (Starlette
    keeps it) to tell a refused time zone from a save."""
    found = await run_in_threadpool(_load, w, subscriber_id)
    if found is None:
        return w.pages.problem(request, Problem.invalid_link)
    subscriber, categories = found
    problem = ""
    if saved and request.method == "POST":
        try:
            problem = zone_problem(await read_fields(request), subscriber.time_zone)
        except BadBody:
            problem = "Nothing was saved: the form could not be read."
    script, csp = zone_script()
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
        saved=saved and not problem,
        problem=problem,
        time_zone=subscriber.time_zone,
        time_zones=_with_own(zone_groups(), subscriber.time_zone),
        site_zone=w.rt.config.site.timezone,
        delivery_hint=delivery_hint(w),
        time_zone_script=script,
        unsubscribe_url=f"{root}/u/{unsubscribe}",
        status=400 if problem else 200,
        headers={"Content-Security-Policy": csp},
    )


def save_preferences(w: Web, subscriber_id: int, fields: Fields, context: Context) -> bool:
    """Save categories, pause and time zone (committed on return). False for an
    unknown reader. A time zone :func:`zone_problem` refuses saves nothing (True: the
    reader exists; :func:`preferences_page` then shows the problem)."""
    now = w.rt.now()
    with session_scope(w.rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return False
        if zone_problem(fields, subscriber.time_zone):
            return True
        zone = posted_zone(fields, subscriber.time_zone)
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
        done.time_zone = zone
        session.add(done)
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
