"""Editions: ISO-week keys in the site's time zone, idempotent composing, eligibility."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from digest.editions import lifecycle as editions
from digest.store.db import session_scope
from digest.store.models import Comparison

BERLIN = ZoneInfo("Europe/Berlin")


def _comparison(ident: str, published: datetime, seen: datetime | None = None) -> Comparison:
    return Comparison(
        id=ident,
        url=f"https://x.test/{ident}",
        title=ident,
        question="",
        category="Dev",
        published_at=published,
        updated_at=published,
        tools=[],
        reviews=[],
        first_seen_at=seen or published,
        last_seen_at=seen or published,
    )


def test_key_is_the_iso_week_in_the_site_time_zone() -> None:
    # Sunday 23:30 UTC is already Monday in Berlin: the next ISO week there.
    sunday_night = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert editions.edition_key(sunday_night, ZoneInfo("UTC")) == "2026-W48"
    assert editions.edition_key(sunday_night, BERLIN) == "2026-W49"
    assert editions.edition_key(datetime(2027, 1, 1, 12, tzinfo=UTC), BERLIN) == "2026-W53"
    assert editions.week_bounds("2026-W48") == (
        datetime(2026, 11, 23).date(),
        datetime(2026, 11, 29).date(),
    )


def test_compose_is_idempotent_and_rolls_nothing_twice(engine: Engine) -> None:
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(_comparison("a", monday - timedelta(days=3)))
        session.add(_comparison("b", monday - timedelta(days=1)))
        session.add(_comparison("future", monday + timedelta(hours=5)))
    with session_scope(engine) as session:
        first = editions.compose(session, now=monday, tz=BERLIN, max_comparisons=10)
    assert first.created and first.edition is not None and first.edition.key == "2026-W48"
    with session_scope(engine) as session:
        again = editions.compose(
            session, now=monday + timedelta(hours=1), tz=BERLIN, max_comparisons=10
        )
        chosen = [c.id for c in editions.comparisons_of(session, edition=first.edition)]
    assert not again.created and again.edition is not None
    assert again.edition.id == first.edition.id
    assert chosen == ["b", "a"]  # newest first; the future one is not published yet

    next_week = monday + timedelta(days=7)
    with session_scope(engine) as session:
        second = editions.compose(session, now=next_week, tz=BERLIN, max_comparisons=10)
        ids = [c.id for c in editions.comparisons_of(session, edition=second.edition)]  # type: ignore[arg-type]
    assert second.edition is not None and second.edition.key == "2026-W49"
    assert ids == ["future"]

    with session_scope(engine) as session:
        third = editions.compose(
            session, now=next_week + timedelta(days=7), tz=BERLIN, max_comparisons=10
        )
    assert third.edition is None and "no new comparisons" in third.reason


def test_late_arrivals_still_go_out_once(engine: Engine) -> None:
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(_comparison("on-time", monday - timedelta(days=1)))
    with session_scope(engine) as session:
        editions.compose(session, now=monday, tz=BERLIN, max_comparisons=10)
        # Published long before, but only fetched after the cutoff (the feed was down).
        late = _comparison("late", monday - timedelta(days=40), seen=monday + timedelta(days=1))
        session.add(late)
        session.add(_comparison("stale", monday - timedelta(days=40)))
    with session_scope(engine) as session:
        result = editions.compose(
            session, now=monday + timedelta(days=7), tz=BERLIN, max_comparisons=10
        )
        ids = [c.id for c in editions.comparisons_of(session, edition=result.edition)]  # type: ignore[arg-type]
    assert ids == ["late"]


def test_max_comparisons_rolls_the_rest_over(engine: Engine) -> None:
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        for i in range(5):
            session.add(_comparison(f"c{i}", monday - timedelta(hours=i + 1)))
    with session_scope(engine) as session:
        week = editions.compose(session, now=monday, tz=BERLIN, max_comparisons=3)
        taken = [c.id for c in editions.comparisons_of(session, edition=week.edition)]  # type: ignore[arg-type]
    with session_scope(engine) as session:
        later = editions.compose(
            session, now=monday + timedelta(days=7), tz=BERLIN, max_comparisons=3
        )
        rest = [c.id for c in editions.comparisons_of(session, edition=later.edition)]  # type: ignore[arg-type]
    assert taken == ["c0", "c1", "c2"]
    assert rest == ["c3", "c4"]


def test_an_old_backlog_expires_instead_of_trickling_out(engine: Engine) -> None:
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(_comparison("old", monday - timedelta(days=60)))
    with session_scope(engine) as session:
        result = editions.compose(
            session, now=monday, tz=BERLIN, max_comparisons=10, max_age=timedelta(days=14)
        )
    assert result.edition is None
