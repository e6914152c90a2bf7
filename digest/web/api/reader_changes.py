"""What ``PATCH /api/v1/subscribers/{email}`` changes, and the consent context of a call.

The preferences page lets a reader choose categories (those seen in the feed) and
a pause; the API also sets the name and the time zone (an IANA name, as
``digest subscribers add --time-zone`` takes). A pause ends at a given time, at
most :data:`~subscribers.lifecycle.MAX_PAUSE_WEEKS` weeks ahead; ``null`` ends it
now. Changes to categories, pause or zone are one ``preferences_changed`` event in
the consent log (the name is not a consent matter and is not logged there).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session
from starlette.requests import Request

from digest.web.api.auth import ApiError
from digest.web.api.models import ReaderChange
from digest.web.ratelimit import client_ip
from digest.web.state import Web
from subscribers import consent, lifecycle, repository
from subscribers.addresses import clean_name
from subscribers.consent import Context
from subscribers.errors import SubscriberInputError
from subscribers.models import ConsentAction, ConsentSource, Subscriber

# Which key made the change: the event's detail and the audit log name it.
API_SOURCE = ConsentSource.api


def context_of(w: Web, request: Request) -> Context:
    """The consent context of an API call: the caller's address and user agent."""
    return Context(
        source=API_SOURCE,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        consent_version=w.rt.config.web.consent_version,
    )


def change_reader(
    w: Web, session: Session, reader: Subscriber, body: ReaderChange, context: Context
) -> dict[str, Any]:
    """Apply ``body`` to ``reader``; returns what changed (field → new value, the
    name as ``"changed"``). Raises ApiError (400) for a bad zone or pause."""
    now = w.rt.now()
    changed: dict[str, Any] = {}
    if body.name is not None and clean_name(body.name) != reader.name:
        reader.name = clean_name(body.name)
        changed["name"] = "changed"
    if body.categories is not None:
        categories = repository.clean_categories(body.categories)
        if categories != list(reader.categories):
            reader.categories = categories
            changed["categories"] = categories
    if "paused_until" in body.model_fields_set:
        until = _pause_end(body.paused_until, now)
        if until != reader.paused_until:
            reader.paused_until = until
            changed["paused_until"] = until.isoformat() if until else None
    if body.time_zone is not None:
        try:
            zone = repository.clean_time_zone(body.time_zone)
        except SubscriberInputError as exc:
            raise ApiError(400, str(exc)) from None
        if zone != reader.time_zone:
            reader.time_zone = zone
            changed["time_zone"] = zone
    if not changed:
        return changed
    reader.updated_at = now
    session.add(reader)
    preferences = {k: v for k, v in changed.items() if k != "name"}
    if preferences:
        consent.record(
            session,
            subscriber_id=reader.id,
            email=reader.email,
            action=ConsentAction.preferences_changed,
            context=context,
            now=now,
            detail=json.dumps({**preferences, "via": "api"}),
        )
    return changed


def _pause_end(until: datetime | None, now: datetime) -> datetime | None:
    if until is None:
        return None
    if until.tzinfo is None:
        raise ApiError(400, "paused_until needs a UTC offset, e.g. 2026-12-24T00:00:00Z")
    if until <= now:
        raise ApiError(400, "paused_until is in the past: null ends a pause")
    if until > now + timedelta(weeks=lifecycle.MAX_PAUSE_WEEKS):
        raise ApiError(400, f"a pause lasts at most {lifecycle.MAX_PAUSE_WEEKS} weeks")
    return until
