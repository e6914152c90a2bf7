"""When a week's edition is due: the ``[schedule]`` day and time, as instants.

Wall-clock times are resolved with :mod:`zoneinfo`, so 09:00 on a Monday stays
09:00 local across daylight-saving changes (the instant moves, the reading does
not). A wall time that falls in a spring-forward gap or a fall-back fold cannot
happen on a weekday morning in any real zone, but it is handled the way
``zoneinfo`` does (``fold=0``: the first reading).

With ``[schedule] local_delivery`` an edition may start up to :data:`EARLY` (a day)
before the site's scheduled instant, as Mailchimp's Timewarp does: readers in zones
ahead of the site reach the scheduled local time first. The ledger's ``due_at``
(:mod:`digest.delivery.localtime`) then holds each reader to their own hour; this
module only says from when an edition may start and which week's edition the
weekly job works on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.config import ScheduleConfig
from digest.store.models import Edition


def edition_key(now: datetime, tz: ZoneInfo) -> str:
    """The ISO week of ``now`` in ``tz``, e.g. ``2026-W48``."""
    year, week, _ = now.astimezone(tz).isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(key: str) -> tuple[date, date]:
    """Monday and Sunday of the ISO week ``key``. Raises ValueError for a bad key."""
    year, _, week = key.partition("-W")
    monday = date.fromisocalendar(int(year), int(week), 1)
    return monday, monday + timedelta(days=6)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How early an edition with local delivery may start: the widest gap between the
# site's zone and a reader's that is served at the reader's own hour. Zones further
# ahead are clamped (their hour has passed when the edition starts: due at once).
EARLY = timedelta(hours=24)
# A day before the scheduled time on the wall clock is 23 or 25 hours around a
# daylight-saving change: the weekly job's early fire may come an hour before EARLY.
_DST_SLACK = timedelta(hours=1)


def wall_time(schedule: ScheduleConfig) -> time:
    hours, minutes = schedule.time.split(":")
    return time(int(hours), int(minutes))


def day_of(schedule: ScheduleConfig, week_key: str) -> date:
    """The scheduled day of ISO week ``week_key`` (``2026-W48``)."""
    year, _, week = week_key.partition("-W")
    return date.fromisocalendar(int(year), int(week), DAYS.index(schedule.day) + 1)


def day_before(schedule: ScheduleConfig) -> str:
    """The ``[schedule] day`` before the scheduled one (``"mon"`` → ``"sun"``,
    ``"sun"`` → ``"sat"``): when the scheduler's weekly job fires with local delivery."""
    return DAYS[(DAYS.index(schedule.day) - 1) % len(DAYS)]


def scheduled_at(schedule: ScheduleConfig, week_key: str, zone: ZoneInfo) -> datetime:
    """The instant the week's edition is due: the scheduled day and time in ``zone``."""
    return datetime.combine(day_of(schedule, week_key), wall_time(schedule), tzinfo=zone)


def last_due(schedule: ScheduleConfig, now: datetime, zone: ZoneInfo) -> datetime:
    """The most recent scheduled instant at or before ``now`` (this week's or last)."""
    due = scheduled_at(schedule, edition_key(now, zone), zone)
    if due > now:
        due = scheduled_at(schedule, edition_key(now - timedelta(days=7), zone), zone)
    return due


def starts_at(schedule: ScheduleConfig, week_key: str, zone: ZoneInfo) -> datetime:
    """The earliest instant the week's edition may start sending: the scheduled
    instant, or, with ``local_delivery``, :data:`EARLY` (24 elapsed hours: in UTC,
    since arithmetic on a zoned datetime keeps the wall time) before it."""
    due = scheduled_at(schedule, week_key, zone)
    return due.astimezone(UTC) - EARLY if schedule.local_delivery else due


def due_week(schedule: ScheduleConfig, now: datetime, tz: ZoneInfo, zone: ZoneInfo) -> str:
    """The week whose edition the weekly job composes and sends at ``now``: ``now``'s
    ISO week in the site's zone ``tz``, or, with ``local_delivery``, the next week's
    when its scheduled instant (in the schedule's ``zone``) is at most a day ahead.

    So the early fire on Sunday 09:00 for a Monday 09:00 edition composes Monday's
    week, not the Sunday's (an ISO week ends on Sunday)."""
    key = edition_key(now, tz)
    if not schedule.local_delivery:
        return key
    ahead = edition_key(now + EARLY + _DST_SLACK, tz)
    until = scheduled_at(schedule, ahead, zone).astimezone(UTC) - now.astimezone(UTC)
    if ahead > key and until <= EARLY + _DST_SLACK:
        return ahead
    return key


def not_yet_due(
    edition: Edition,
    *,
    now: datetime,
    tz: ZoneInfo,
    schedule: ScheduleConfig,
    zone: ZoneInfo | None = None,
) -> bool:
    """True while ``edition`` must wait for its week (senders leave it alone).

    An edition of ``now``'s ISO week (in the site's zone ``tz``) or an earlier one is
    due. One of a later week (composed early from the desk, or by the early weekly
    job) waits for its week, or, with ``local_delivery``, until :data:`EARLY` before
    its scheduled instant in ``zone`` (the schedule's zone; default ``tz``): from then
    on its ledger's due times hold each reader to their own hour."""
    if edition.key <= edition_key(now, tz):
        return False
    if not schedule.local_delivery:
        return True
    return now < starts_at(schedule, edition.key, zone or tz)
