"""Local delivery time: when each reader's copy of an edition is due.

With ``[schedule] local_delivery = true``, a reader with a time zone
(``Subscriber.time_zone``) gets the edition at the ``[schedule]`` day and time *in
their own zone*, in the edition's ISO week: with ``day = "mon"`` and ``time =
"09:00"``, edition ``2026-W48`` is due at 09:00 on Monday 23 November 2026 in New
York, in Tokyo, in Berlin. Where that moment has already passed when the ledger is
planned (Tokyo, seen from a Berlin morning), the row is due at once; its due time
is still the past instant, so the ledger says when it *would* have been due.

Readers without a zone, and every reader when the switch is off, are due at once
(``due_at`` NULL). Due times are set once, in the statement that plans the
edition's ledger (:func:`digest.delivery.ledger.plan`); a reader who changes zone
afterwards keeps this edition's time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.config import ScheduleConfig
from digest.editions.weeks import scheduled_at

DueFor = Callable[[str], datetime | None]


def due_for(schedule: ScheduleConfig, week_key: str) -> DueFor:
    """A function from an IANA zone name to the instant (UTC) the edition ``week_key``
    (``2026-W48``) is due for readers in that zone.

    It returns None (due at once) for a name :mod:`zoneinfo` cannot load: names are
    checked when stored, but the zone database of this machine may lack one that
    another machine had, and a send must not stop over it. Results are cached per
    name, so a ledger of a million rows costs one computation per distinct zone.
    """
    known: dict[str, datetime | None] = {}

    def due(zone_name: str) -> datetime | None:
        if zone_name not in known:
            try:
                zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                known[zone_name] = None
            else:
                known[zone_name] = scheduled_at(schedule, week_key, zone).astimezone(UTC)
        return known[zone_name]

    return due


def local_due(schedule: ScheduleConfig, week_key: str) -> DueFor | None:
    """:func:`due_for` when ``[schedule] local_delivery`` is on, else None (every row
    due at once): what :class:`digest.delivery.sending.SendOptions` takes as ``local_due``."""
    return due_for(schedule, week_key) if schedule.local_delivery else None
