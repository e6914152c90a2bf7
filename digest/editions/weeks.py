"""When a week's edition is due: the ``[schedule]`` day and time, as instants.

Wall-clock times are resolved with :mod:`zoneinfo`, so 09:00 on a Monday stays
09:00 local across daylight-saving changes (the instant moves, the reading does
not). A wall time that falls in a spring-forward gap or a fall-back fold cannot
happen on a weekday morning in any real zone, but it is handled the way
``zoneinfo`` does (``fold=0``: the first reading).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.config import ScheduleConfig
from digest.editions.lifecycle import edition_key

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def wall_time(schedule: ScheduleConfig) -> time:
    hours, minutes = schedule.time.split(":")
    return time(int(hours), int(minutes))


def day_of(schedule: ScheduleConfig, week_key: str) -> date:
    """The scheduled day of ISO week ``week_key`` (``2026-W48``)."""
    year, _, week = week_key.partition("-W")
    return date.fromisocalendar(int(year), int(week), DAYS.index(schedule.day) + 1)


def scheduled_at(schedule: ScheduleConfig, week_key: str, zone: ZoneInfo) -> datetime:
    """The instant the week's edition is due: the scheduled day and time in ``zone``."""
    return datetime.combine(day_of(schedule, week_key), wall_time(schedule), tzinfo=zone)


def last_due(schedule: ScheduleConfig, now: datetime, zone: ZoneInfo) -> datetime:
    """The most recent scheduled instant at or before ``now`` (this week's or last)."""
    due = scheduled_at(schedule, edition_key(now, zone), zone)
    if due > now:
        due = scheduled_at(schedule, edition_key(now - timedelta(days=7), zone), zone)
    return due
