"""A reader's life through subscribers.lifecycle: sign-up, confirm, preferences,
unsubscribe, erasure, data export; the consent log and suppression list behind them."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine

from digest.store.db import session_scope
from subscribers import consent, csvio, lifecycle, repository
from subscribers.consent import Context
from subscribers.models import ConsentAction, ConsentSource, SubscriberStatus

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
WINDOW = timedelta(hours=1)
FORM = Context(ConsentSource.form, ip="203.0.113.7", user_agent="Firefox/140", consent_version="3")
LINK = Context(ConsentSource.link, ip="203.0.113.8", user_agent="Mail/1", consent_version="3")


def _signup(engine: Engine, email: str, at: datetime) -> lifecycle.SignupResult:
    with session_scope(engine) as session:
        return lifecycle.request_subscription(
            session,
            email=email,
            name="Ada",
            categories=["coding", " coding ", "images"],
            context=FORM,
            now=at,
            resend_after=WINDOW,
        )


def _confirm(engine: Engine, subscriber_id: int | None, at: datetime = NOW) -> None:
    assert subscriber_id is not None
    with session_scope(engine) as session:
        assert lifecycle.confirm(session, subscriber_id=subscriber_id, context=LINK, now=at)


def _history(engine: Engine, email: str) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        events = consent.history(session, email=email)
        return [(e.action, e.source, e.detail) for e in events]


def test_sign_up_asks_for_confirmation_at_most_once_per_window(engine: Engine) -> None:
    first = _signup(engine, "Ada@Example.com", NOW)
    assert first.send_confirmation
    assert first.subscriber.status == SubscriberStatus.pending
    assert first.subscriber.categories == ["coding", "images"]
    assert not _signup(engine, "ada@example.com", NOW + timedelta(minutes=5)).send_confirmation
    later = _signup(engine, "ada@example.com", NOW + WINDOW + timedelta(seconds=1))
    assert later.send_confirmation
    _confirm(engine, first.subscriber.id)
    active = _signup(engine, "ada@example.com", NOW + 3 * WINDOW)
    assert not active.send_confirmation and active.reason == "already active"


def test_confirm_activates_and_logs_ip_user_agent_and_consent_version(engine: Engine) -> None:
    result = _signup(engine, "ada@example.com", NOW)
    _confirm(engine, result.subscriber.id)
    _confirm(engine, result.subscriber.id)  # twice is harmless
    with session_scope(engine) as session:
        subscriber = repository.get_by_email(session, email="ada@example.com")
        events = consent.history(session, email="ada@example.com")
    assert subscriber is not None and subscriber.status == SubscriberStatus.active
    assert subscriber.confirmed_at == NOW
    assert [(e.action, e.source) for e in events] == [("subscribed", "form"), ("confirmed", "link")]
    assert (events[0].ip, events[0].user_agent, events[0].consent_version) == (
        "203.0.113.7",
        "Firefox/140",
        "3",
    )
    assert events[1].ip == "203.0.113.8"


def test_unsubscribe_suppresses_and_repeating_it_is_harmless(engine: Engine) -> None:
    result = _signup(engine, "ada@example.com", NOW)
    _confirm(engine, result.subscriber.id)
    assert result.subscriber.id is not None
    for _ in range(2):
        with session_scope(engine) as session:
            gone = lifecycle.unsubscribe(
                session, subscriber_id=result.subscriber.id, context=LINK, now=NOW
            )
            assert gone is not None and gone.status == SubscriberStatus.unsubscribed
    with session_scope(engine) as session:
        entry = consent.suppression_of(session, email="ada@example.com")
        assert lifecycle.unsubscribe(session, subscriber_id=999, context=LINK, now=NOW) is None
    assert entry is not None and entry.reason == "unsubscribed"
    actions = [a for a, _, _ in _history(engine, "ada@example.com")]
    assert actions.count("unsubscribed") == 1


def test_a_suppressed_address_may_sign_up_again_but_only_confirming_lifts_it(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        repository.add(session, email="ada@example.com", now=NOW)
        repository.remove(session, email="ada@example.com", now=NOW)
    again = _signup(engine, "ada@example.com", NOW + timedelta(days=1))
    assert again.send_confirmation
    assert "suppressed (unsubscribed) until confirmed" in again.reason
    with session_scope(engine) as session:
        assert consent.suppression_of(session, email="ada@example.com") is not None
        still = repository.get_by_email(session, email="ada@example.com")
    assert still is not None and still.status == SubscriberStatus.unsubscribed
    _confirm(engine, again.subscriber.id, NOW + timedelta(days=1))
    with session_scope(engine) as session:
        assert consent.suppression_of(session, email="ada@example.com") is None
        active = repository.get_by_email(session, email="ada@example.com")
    assert active is not None and active.status == SubscriberStatus.active
    last = _history(engine, "ada@example.com")[-1]
    assert last[0] == "confirmed" and "lifts the suppression (unsubscribed)" in last[2]


def test_a_never_seen_suppressed_address_gets_a_pending_row_only(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.suppress(
            session,
            email="eve@example.com",
            reason=consent.SuppressionReason.complained,
            source="webhook",
            now=NOW,
        )
    result = _signup(engine, "eve@example.com", NOW)
    assert result.send_confirmation
    assert result.subscriber.status == SubscriberStatus.pending


def test_preferences_and_pause(engine: Engine) -> None:
    result = _signup(engine, "ada@example.com", NOW)
    assert result.subscriber.id is not None
    with session_scope(engine) as session:
        s = lifecycle.update_preferences(
            session,
            subscriber_id=result.subscriber.id,
            categories=["images", "", "images"],
            pause_weeks=2,
            context=LINK,
            now=NOW,
        )
    assert s is not None and s.categories == ["images"]
    assert lifecycle.is_paused(s, NOW + timedelta(weeks=1))
    assert not lifecycle.is_paused(s, NOW + timedelta(weeks=2, seconds=1))
    last = _history(engine, "ada@example.com")[-1]
    assert last[0] == "preferences_changed"
    assert json.loads(last[2]) == {"categories": ["images"], "pause_weeks": 2}
    with session_scope(engine) as session, pytest.raises(ValueError, match="0 to 52 weeks"):
        lifecycle.update_preferences(
            session,
            subscriber_id=result.subscriber.id,
            categories=[],
            pause_weeks=53,
            context=LINK,
            now=NOW,
        )


def test_forget_erases_personal_data_but_the_suppression_stays(engine: Engine) -> None:
    result = _signup(engine, "ada@example.com", NOW)
    _confirm(engine, result.subscriber.id)
    with session_scope(engine) as session:
        assert lifecycle.forget(session, email="ADA@example.com", context=LINK, now=NOW)
        assert not lifecycle.forget(session, email="ada@example.com", context=LINK, now=NOW)
    with session_scope(engine) as session:
        assert repository.get_by_email(session, email="ada@example.com") is None
        erased = repository.list_subscribers(session)[0]
        events = consent.history(session, email="ada@example.com")
        entry = consent.suppression_of(session, email="ada@example.com")
    assert erased.email.endswith("@erased.invalid") and erased.name == "" and not erased.categories
    assert all(e.ip == "" and e.user_agent == "" for e in events)
    assert events[-1].action == ConsentAction.erased
    assert entry is not None and entry.reason == "erased"
    # A later import of the address stays suppressed, and says so in the log.
    with session_scope(engine) as session:
        report = csvio.import_csv(
            session,
            stream=io.StringIO("email\nada@example.com\n"),
            source="import:old.csv",
            now=NOW,
            consent_source="old list",
        )
        assert repository.get_by_email(session, email="ada@example.com") is None
    assert report.added == 0 and [n.line for n in report.skipped] == [2]
    assert _history(engine, "ada@example.com")[-1][0] == "import_skipped"
    with session_scope(engine) as session, pytest.raises(repository.AddressSuppressed):
        repository.add(session, email="ada@example.com", now=NOW)


def test_export_data_holds_the_row_the_log_and_the_suppression(engine: Engine) -> None:
    result = _signup(engine, "ada@example.com", NOW)
    assert result.subscriber.id is not None
    with session_scope(engine) as session:
        lifecycle.unsubscribe(session, subscriber_id=result.subscriber.id, context=LINK, now=NOW)
        data = lifecycle.export_data(session, email="Ada@Example.com")
        assert lifecycle.export_data(session, email="nobody@example.com") is None
    assert data is not None
    json.dumps(data)  # JSON-ready
    assert data["subscriber"]["email"] == "ada@example.com"
    assert data["subscriber"]["created_at"] == NOW.isoformat()
    assert [e["action"] for e in data["consent_log"]] == ["subscribed", "unsubscribed"]
    assert data["consent_log"][0]["ip"] == "203.0.113.7"
    assert data["suppression"]["reason"] == "unsubscribed"


def test_an_old_confirmation_link_cannot_undo_an_unsubscribe(engine: Engine) -> None:
    result = _signup(engine, "undo@example.com", NOW)
    _confirm(engine, result.subscriber.id)
    # A second request (e.g. a retyped form) mails a new link; then the reader leaves.
    later = NOW + 2 * WINDOW
    again = _signup(engine, "undo@example.com", later)
    assert not again.send_confirmation  # already active: nothing sent
    with session_scope(engine) as session:
        lifecycle.unsubscribe(
            session, subscriber_id=result.subscriber.id or 0, context=LINK, now=later
        )
    with session_scope(engine) as session:
        confirmed = lifecycle.confirm(
            session,
            subscriber_id=result.subscriber.id or 0,
            context=LINK,
            now=later + timedelta(minutes=5),
        )
        subscriber = repository.get_by_email(session, email="undo@example.com")
        suppressed = consent.suppression_of(session, email="undo@example.com")
    assert confirmed is None
    assert subscriber is not None and subscriber.status == SubscriberStatus.unsubscribed
    assert suppressed is not None
    # A fresh sign-up and its confirmation may bring the reader back, and the log says so.
    fresh = _signup(engine, "undo@example.com", later + 2 * WINDOW)
    assert fresh.send_confirmation
    _confirm(engine, fresh.subscriber.id, later + 2 * WINDOW)
    with session_scope(engine) as session:
        back = repository.get_by_email(session, email="undo@example.com")
    assert back is not None and back.status == SubscriberStatus.active


def test_concurrent_sign_ups_send_one_confirmation(engine: Engine) -> None:
    """B asks while A's decision is not committed yet: B must wait and then see it."""
    import threading
    import time

    _signup(engine, "race@example.com", NOW - 2 * WINDOW)  # a pending reader, window over
    answers: dict[str, bool] = {}
    with session_scope(engine) as session_a:
        answers["a"] = lifecycle.request_subscription(
            session_a,
            email="race@example.com",
            name="",
            categories=[],
            context=FORM,
            now=NOW,
            resend_after=WINDOW,
        ).send_confirmation
        b = threading.Thread(
            target=lambda: answers.__setitem__(
                "b", _signup(engine, "race@example.com", NOW).send_confirmation
            )
        )
        b.start()
        time.sleep(0.3)  # B is now blocked on A's lock (or, without one, already done)
    b.join(timeout=30)
    assert answers == {"a": True, "b": False}


# -- soft bounces: at most once per message and once per day (Mailman's rule) ----------


def _soft(hours: float, message: str) -> lifecycle.SoftBounce:
    return lifecycle.SoftBounce(NOW + timedelta(hours=hours), message)


@pytest.mark.parametrize(
    ("bounces", "counted"),
    [
        ([], 0),
        # one message retried by the provider for three days: one failure
        ([_soft(0, "m1"), _soft(24, "m1"), _soft(48, "m1")], 1),
        # three messages refused on one day: a full mailbox, once
        ([_soft(0, "m1"), _soft(1, "m2"), _soft(2, "m3")], 1),
        # three messages on three days: three
        ([_soft(0, "m1"), _soft(24, "m2"), _soft(48, "m3")], 3),
        # m1 counts on day 1, its retry on day 2 does not, m2 on day 2 does
        ([_soft(0, "m1"), _soft(24, "m1"), _soft(25, "m2")], 2),
        # the order given does not matter: time order decides
        ([_soft(25, "m2"), _soft(24, "m1"), _soft(0, "m1")], 2),
    ],
    ids=["none", "one-message", "one-day", "three-days", "retry-and-other", "unordered"],
)
def test_soft_bounces_count_once_per_message_and_once_per_day(
    bounces: list[lifecycle.SoftBounce], counted: int
) -> None:
    assert lifecycle.count_soft_bounces(bounces) == counted


def test_a_soft_bounce_day_is_the_utc_day() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    late = lifecycle.SoftBounce(datetime(2026, 11, 23, 23, 30, tzinfo=UTC), "m1")
    # 00:15 in Berlin is 23:15 UTC: the same UTC day as ``late``
    same_day = lifecycle.SoftBounce(datetime(2026, 11, 24, 0, 15, tzinfo=berlin_winter), "m2")
    next_day = lifecycle.SoftBounce(datetime(2026, 11, 24, 0, 30, tzinfo=UTC), "m3")
    naive = lifecycle.SoftBounce(datetime(2026, 11, 24, 12, 0), "m4")  # taken as UTC
    assert lifecycle.count_soft_bounces([late, same_day]) == 1
    assert lifecycle.count_soft_bounces([late, next_day]) == 2
    assert lifecycle.count_soft_bounces([next_day, naive]) == 1
