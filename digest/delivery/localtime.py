"""Local delivery time: when each reader's copy of an edition is due.

With ``[schedule] local_delivery = true``, a reader with a time zone
(``Subscriber.time_zone``) gets the edition at the ``[schedule]`` day and time *in
their own zone*, in the edition's ISO week: with ``day = "mon"`` and ``time =
"09:00"``, edition ``2026-W48`` is due at 09:00 on Monday 23 November 2026 in New
York, in Tokyo, in Berlin. Where that moment has already passed when the ledger is
planned (Tokyo, seen from a Berlin morning), the row is due at once; its due time
is still the past instant, so the ledger says when it *would* have been due.

The edition itself may start a day before the site's scheduled instant
(:func:`digest.editions.weeks.not_yet_due`), so readers in zones ahead of the site
get it at their hour too. Readers without a zone, and readers whose zone this
machine cannot load, are then due at the *site's* scheduled instant (``due_for("")``),
not at once: started early, the edition must not reach them a day early.

Every reader is due at once (``due_at`` NULL) when the switch is off. Due times are
set once, in the statement that plans the edition's ledger
(:func:`digest.delivery.ledger.plan`); a reader who changes zone afterwards keeps
this edition's time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.config import ScheduleConfig
from digest.editions.weeks import scheduled_at

DueFor = Callable[[str], datetime | None]
NO_ZONE = ""  # Subscriber.time_zone of a reader who set none: the site's time


def due_for(schedule: ScheduleConfig, week_key: str, site: ZoneInfo | None = None) -> DueFor:
    """A function from an IANA zone name to the instant (UTC) the edition ``week_key``
    (``2026-W48``) is due for readers in that zone.

    ``""`` (no zone) and a name :mod:`zoneinfo` cannot load (names are checked when
    stored, but this machine's zone database may lack one that another machine had,
    and a send must not stop over it) are due at the scheduled instant in ``site``
    (the schedule's zone), or at once (None) without ``site``. Results are cached
    per name, so a ledger of a million rows costs one computation per distinct zone.
    """
    known: dict[str, datetime | None] = {}
    fallback = scheduled_at(schedule, week_key, site).astimezone(UTC) if site else None

    def due(zone_name: str) -> datetime | None:
        if zone_name not in known:
            try:
                zone = ZoneInfo(zone_name) if zone_name != NO_ZONE else None
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
            known[zone_name] = (
                scheduled_at(schedule, week_key, zone).astimezone(UTC) if zone else fallback
            )
        return known[zone_name]

    return due


def local_due(
    schedule: ScheduleConfig, week_key: str, site: ZoneInfo | None = None
) -> DueFor | None:
    """:func:`due_for` when ``[schedule] local_delivery`` is on, else None (every row
    due at once): what :class:`digest.delivery.sending.SendOptions` takes as ``local_due``."""
    return due_for(schedule, week_key, site) if schedule.local_delivery else None
