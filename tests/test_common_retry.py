"""The shared helpers of digest.common: one Retry-After reader, one backoff, one retry
loop, one set of option checks, and the adapters that use them keeping their ways."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from digest.common import options
from digest.common.retry import Again, Backoff, retry, retry_after
from digest.delivery.ledger import RetryPolicy
from digest.feeds.http import retry_after_seconds
from digest.transports import api

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
IN_30_S = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
LONG_AGO = "Sun, 06 Nov 1994 08:49:37 GMT"
FAR_FUTURE = "Fri, 31 Dec 9999 23:59:59 GMT"
TOO_MANY_DIGITS = "9" * 400  # float() reads it as inf

# --- Retry-After ---------------------------------------------------------------------

STRICT = [  # the feed: RFC 9110's delta-seconds (digits) or an HTTP-date, no cap
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    (IN_30_S, 30.0),
    (LONG_AGO, 0.0),  # a date in the past: now
    ("Sun, 06 Nov 1994 08:49:37 -0000", 0.0),  # no zone: UTC
    (FAR_FUTURE, (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - NOW).total_seconds()),
    ("1e12", None),  # not delta-seconds
    ("1.5", None),
    ("-5", None),
    ("+5", None),
    ("inf", None),
    ("nan", None),
    ("soon", None),
    ("", None),
    ("   ", None),
    (None, None),
    ("²", None),  # str.isdigit() says yes, float() says no
    ("Mon, 01 Jan 2020 00:00:00 +99999999999999999999", None),  # OverflowError inside
    ("Mon, 32 Jan 2020 00:00:00 GMT", None),
    (TOO_MANY_DIGITS, float("inf")),  # longer than any limit: the feed refuses it
]

LENIENT = [  # the providers: any number float() reads, 0 … a day, never non-finite
    ("120", 120.0),
    ("2.5", 2.5),
    ("-5", 0.0),
    ("1e3", 1000.0),
    ("1e12", api.MAX_RETRY_AFTER),
    (IN_30_S, 30.0),
    (LONG_AGO, 0.0),
    (FAR_FUTURE, api.MAX_RETRY_AFTER),
    ("inf", None),
    ("-inf", None),
    ("nan", None),
    ("1e400", None),
    (TOO_MANY_DIGITS, None),
    ("soon", None),
    ("", None),
    (None, None),
    ("²", None),
    ("Mon, 01 Jan 2020 00:00:00 +99999999999999999999", None),
]


@pytest.mark.parametrize(("header", "seconds"), STRICT)
def test_retry_after_strict(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, now=NOW) == seconds
    if header is not None:
        assert retry_after_seconds(header, NOW) == seconds  # the feed's name for it


@pytest.mark.parametrize(("header", "seconds"), LENIENT)
def test_retry_after_lenient_and_capped(header: str | None, seconds: float | None) -> None:
    read = retry_after(header, now=NOW, lenient=True, cap=api.MAX_RETRY_AFTER)
    assert read == seconds
    assert api.retry_after(header, now=NOW) == seconds  # the providers' name for it


def test_a_cap_applies_to_dates_and_numbers_alike() -> None:
    assert retry_after("600", now=NOW, cap=60) == 60
    assert retry_after(IN_30_S, now=NOW, cap=10) == 10
    assert retry_after("5", now=NOW, cap=60) == 5


def test_without_now_a_date_counts_from_the_current_time() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
    seconds = retry_after(soon)
    assert seconds is not None and 90 < seconds <= 100


# --- Backoff -------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 6])
def test_full_jitter_stays_between_0_and_the_ceiling(attempt: int) -> None:
    backoff = Backoff(0.5, jitter="full")
    ceiling = 0.5 * 2 ** (attempt - 1)
    assert backoff.ceiling(attempt) == ceiling
    waits = [backoff.delay(attempt) for _ in range(500)]
    assert all(0 <= w <= ceiling for w in waits)
    assert min(waits) < ceiling / 4 and max(waits) > ceiling * 3 / 4  # the whole range


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 6, 12])
def test_equal_jitter_stays_between_half_and_all_of_the_capped_ceiling(attempt: int) -> None:
    backoff = Backoff(1.0, cap=30.0, jitter="equal")
    ceiling = min(2.0 ** (attempt - 1), 30.0)
    assert backoff.ceiling(attempt) == ceiling
    waits = [backoff.delay(attempt) for _ in range(500)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)


def test_no_cap_by_default_and_zero_base_never_waits() -> None:
    assert Backoff(1.0).ceiling(21) == 2.0**20
    assert Backoff(0.0, jitter="equal").delay(5) == 0.0


@pytest.mark.parametrize("attempt", [1, 2, 4, 7])
def test_the_schedules_draw_the_same_waits_as_the_formulas_they_replace(attempt: int) -> None:
    """Seeded alike, the helper gives exactly the numbers each caller computed before."""
    random.seed(attempt)
    feed = random.uniform(0, 0.25 * 2 ** (attempt - 1))
    provider = min(2.0 * 2 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2)
    ledger = min(30.0 * 2 ** min(max(attempt - 1, 0), 30), 900.0) * (0.5 + random.random() / 2)
    random.seed(attempt)
    assert Backoff(0.25, jitter="full").delay(attempt) == feed
    assert Backoff(2.0, cap=30.0, jitter="equal").delay(attempt) == provider
    policy = RetryPolicy(max_attempts=3, backoff_seconds=30.0, unknown_policy="resend")
    assert policy.delay(attempt, None) == ledger


def test_the_ledger_delay_honours_retry_after_and_stops_doubling() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=30.0, unknown_policy="resend")
    assert policy.delay(1, 500.0) == 500.0  # never sooner than the server asks
    assert 15.0 <= policy.delay(0, None) <= 30.0  # attempt 0 reads as the first
    huge = RetryPolicy(3, 1e-12, "resend", max_backoff_seconds=float("inf"))
    assert huge.delay(10_000, None) <= 1e-12 * 2**30  # the exponent stops at 30


def test_the_adapters_keep_their_schedules() -> None:
    from digest.feeds.http_get import Getter, Limits
    from digest.transports.postmark import PostmarkTransport

    provider = PostmarkTransport(api_key="k", backoff_seconds=20.0)
    assert provider.backoff == Backoff(20.0, cap=30.0, jitter="equal")
    limits = Limits(timeout=1, max_attempts=2, backoff_seconds=0.5, max_retry_after=1, max_bytes=1)
    getter = Getter(clients=None, limits=limits, budget=None)  # type: ignore[arg-type]
    assert getter.backoff == Backoff(0.5, jitter="full")


# --- the retry loop ------------------------------------------------------------------


class Script:
    """An attempt function that raises the given ``Again``s, then returns "done"."""

    def __init__(self, *agains: Again) -> None:
        self.agains = list(agains)
        self.calls: list[int] = []
        self.waits: list[float] = []

    async def attempt(self, number: int) -> str:
        self.calls.append(number)
        if self.agains:
            raise self.agains.pop(0)
        return "done"

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def run(script: Script, attempts: int = 4, **kwargs: Any) -> str:
    kwargs.setdefault("backoff", Backoff(1.0, jitter="equal"))
    kwargs.setdefault("exhausted", lambda last: f"gave up: {last.detail}")
    result: str = asyncio.run(
        retry(script.attempt, attempts=attempts, sleep=script.sleep, **kwargs)
    )
    return result


def test_retry_waits_as_asked_and_returns_the_first_result() -> None:
    script = Script(Again("busy", 7.0), Again("down"), Again("gated", held=True))
    assert run(script) == "done"
    assert script.calls == [1, 2, 3, 4]
    assert script.waits[0] == 7.0  # the server's wait
    assert 1.0 <= script.waits[1] <= 2.0  # attempt 2's backoff: ceiling 2, equal jitter
    assert len(script.waits) == 2  # held: no sleep here


def test_retry_gives_up_after_the_last_attempt_without_waiting() -> None:
    script = Script(Again("one"), Again("two"), Again("three"))
    assert run(script, attempts=3) == "gave up: three"
    assert script.calls == [1, 2, 3] and len(script.waits) == 2


def test_a_wait_past_the_time_left_is_not_started() -> None:
    script = Script(Again("busy", 5.0))
    late = run(script, time_left=lambda: 5.0, late=lambda last: f"late: {last.detail}")
    assert late == "late: busy" and script.waits == []
    script = Script(Again("busy", 5.0))
    assert run(script, time_left=lambda: 5.0) == "gave up: busy"  # late defaults to exhausted
    script = Script(Again("busy", 4.9))
    assert run(script, time_left=lambda: 5.0) == "done" and script.waits == [4.9]


def test_other_exceptions_go_through_and_attempts_must_be_positive() -> None:
    async def broken(_: int) -> str:
        raise KeyError("x")

    with pytest.raises(KeyError):
        asyncio.run(
            retry(
                broken,
                attempts=3,
                backoff=Backoff(1.0),
                sleep=asyncio.sleep,
                exhausted=lambda last: "",
            )
        )
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        run(Script(), attempts=0)


# --- option checks -------------------------------------------------------------------


def refused(check: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValueError, match=r".") as caught:
        check(*args, **kwargs)
    return str(caught.value)


def test_numbers() -> None:
    assert options.number("t", 3) == 3.0 and isinstance(options.number("t", 3), float)
    assert options.number("t", 0) == 0.0
    assert refused(options.number, "t", 0, inclusive=False) == (
        "'t' must be a number greater than 0, got 0"
    )
    assert (
        refused(options.number, "d", 0.5, minimum=1.0) == "'d' must be a number at least 1, got 0.5"
    )
    for bad in (True, "5", None, float("inf"), float("nan"), -1):
        assert refused(options.number, "t", bad).startswith("'t' must be a number at least 0")
    key = options.KEY
    assert refused(options.number, "t", -1, style=key) == "key 't': expected a number ≥ 0, got -1"
    assert refused(options.number, "t", 0, inclusive=False, style=key) == (
        "key 't': expected a number > 0, got 0"
    )
    assert refused(options.number, "delay", -1, unit="seconds", style=options.KEY_MUST) == (
        "key 'delay': must be a number of seconds ≥ 0, got -1"
    )
    # finite=False: inf and nan pass, as the transports' keys always let them.
    assert options.number("t", float("inf"), finite=False) == float("inf")
    assert options.number("t", float("nan"), finite=False) != 0
    assert refused(options.number, "t", float("-inf"), finite=False).startswith("'t' must be")
    assert refused(options.number, "t", -0.0, inclusive=False, finite=False).endswith("got -0.0")


def test_counts() -> None:
    assert options.count("n", 5) == 5
    assert refused(options.count, "n", 0) == "'n' must be a whole number of at least 1, got 0"
    assert refused(options.count, "n", 1.0) == "'n' must be a whole number of at least 1, got 1.0"
    assert refused(options.count, "n", True) == "'n' must be a whole number of at least 1, got True"
    assert refused(options.count, "n", 0, style=options.KEY_MUST) == (
        "key 'n': must be a whole number ≥ 1, got 0"
    )
    assert refused(options.count, "n", 21, maximum=20, style=options.KEY) == (
        "key 'n': expected a whole number from 1 to 20, got 21"
    )
    what = "1…86400"
    assert refused(options.count, "s", 0, maximum=86400, style=options.KEY_BARE, what=what) == (
        "key 's': 1…86400, got 0"
    )
    assert options.count("s", -3, minimum=None) == -3
    assert refused(options.count, "s", "x", minimum=None, style=options.KEY, what="seconds") == (
        "key 's': expected seconds, got 'x'"
    )


def test_flags_text_and_choices() -> None:
    assert options.flag("f", False) is False
    assert refused(options.flag, "f", "yes", style=options.KEY) == (
        "key 'f': expected true or false, got 'yes'"
    )
    assert refused(options.flag, "f", 1, show_value=False) == "'f' must be true or false"
    assert options.text("s", " x ") == " x "
    assert refused(options.text, "s", " ", style=options.KEY) == (
        "key 's': expected a non-empty string, got ' '"
    )
    assert refused(options.text, "s", "a\nb", line=True) == (
        "'s' must be a non-empty line of text, got 'a\\nb'"
    )
    assert options.text("s", "a\nb") == "a\nb"
    assert options.one_of("c", "b", ("a", "b")) == "b"
    assert refused(options.one_of, "c", "z", ("a", "b"), style=options.KEY_MUST) == (
        "key 'c': must be one of ('a', 'b'), got 'z'"
    )
    assert refused(options.one_of, "c", ["a"], {"a": 1}, style=options.KEY, what="'a'") == (
        "key 'c': expected 'a', got ['a']"
    )


def make(adapter: str, **keys: Any) -> None:
    """Build ``adapter`` with ``keys`` (and whatever else it needs to get that far)."""
    from digest.feeds.files import FilesFeed
    from digest.feeds.http import HttpFeed
    from digest.transports.mailgun import MailgunTransport
    from digest.transports.memory import MemoryTransport
    from digest.transports.outbox import OutboxTransport
    from digest.transports.postmark import PostmarkTransport
    from digest.transports.resend import ResendTransport
    from digest.transports.smtp import SmtpTransport
    from digest.webhooks.mailgun import MailgunWebhook
    from digest.webhooks.sendgrid import SendGridWebhook
    from digest.webhooks.ses import SesWebhook

    topics = ["arn:aws:sns:eu-west-1:123456789012:digest"]
    makers: dict[str, Any] = {
        "http": lambda: HttpFeed("https://feed.example/v1", **keys),
        "files": lambda: FilesFeed("x", **keys),
        "postmark": lambda: PostmarkTransport(api_key="k", **keys),
        "mailgun": lambda: MailgunTransport(api_key="k", domain="mg.example", **keys),
        "resend": lambda: ResendTransport(api_key="k", **keys),
        "smtp": lambda: SmtpTransport(**{"host": "mx.example", **keys}),
        "memory": lambda: MemoryTransport(**keys),
        "outbox": lambda: OutboxTransport(path="out", **keys),
        "mailgun-hook": lambda: MailgunWebhook(signing_key="k", **keys),
        "sendgrid-hook": lambda: SendGridWebhook(public_key="k", **keys),
        "ses-hook": lambda: SesWebhook(topics=topics, **keys),
    }
    makers[adapter]()


ADAPTER_MESSAGES: list[tuple[str, dict[str, Any], str]] = [
    ("http", {"timeout": 0}, "'timeout' must be a number greater than 0, got 0"),
    ("http", {"deadline_seconds": 0.5}, "'deadline_seconds' must be a number at least 1, got 0.5"),
    ("http", {"max_pages": True}, "'max_pages' must be a whole number of at least 1, got True"),
    ("http", {"allow_private_addresses": "yes"}, "'allow_private_addresses' must be true or false"),
    ("http", {"user_agent": "a\tb"}, "'user_agent' must be a non-empty line of text, got 'a\\tb'"),
    ("files", {"max_bytes": 1.5}, "'max_bytes' must be a whole number of at least 1, got 1.5"),
    ("postmark", {"timeout": 0}, "key 'timeout': expected a number > 0, got 0"),
    (
        "postmark",
        {"max_attempts": 21},
        "key 'max_attempts': expected a whole number from 1 to 20, got 21",
    ),
    (
        "postmark",
        {"batch_size": 501},
        "key 'batch_size': expected a whole number from 1 to 500, got 501",
    ),
    ("postmark", {"backoff_seconds": -1}, "key 'backoff_seconds': expected a number ≥ 0, got -1"),
    (
        "postmark",
        {"requests_per_second": "2"},
        "key 'requests_per_second': expected a number ≥ 0, got '2'",
    ),
    (
        "postmark",
        {"message_stream": " "},
        "key 'message_stream': expected a non-empty string, got ' '",
    ),
    ("postmark", {"reconcile_seconds": 0}, "key 'reconcile_seconds': expected a number > 0, got 0"),
    ("postmark", {"base_url": ""}, "key 'base_url': expected a non-empty string, got ''"),
    ("mailgun", {"region": "ap"}, "key 'region': expected 'us' or 'eu', got 'ap'"),
    (
        "resend",
        {"batch_validation": "lax"},
        "key 'batch_validation': must be one of ('permissive', 'strict'), got 'lax'",
    ),
    ("smtp", {"port": 0}, "key 'port': expected a whole number from 1 to 65535, got 0"),
    (
        "smtp",
        {"security": "ssl"},
        "key 'security': must be one of ('none', 'starttls', 'tls'), got 'ssl'",
    ),
    ("smtp", {"data_timeout": 0}, "key 'data_timeout': expected a number > 0, got 0"),
    ("smtp", {"validate_certs": "no"}, "key 'validate_certs': expected true or false, got 'no'"),
    (
        "smtp",
        {"auth": "cram-md5", "username": "u"},
        "key 'auth': must be one of ('auto', 'plain', 'login', 'xoauth2'), got 'cram-md5'",
    ),
    ("smtp", {"host": ""}, "key 'host': expected a non-empty string, got ''"),
    ("memory", {"max_batch": 0}, "key 'max_batch': must be a whole number ≥ 1, got 0"),
    ("memory", {"delay": -1}, "key 'delay': must be a number of seconds ≥ 0, got -1"),
    ("outbox", {"html_preview": "yes"}, "key 'html_preview': expected true or false, got 'yes'"),
    ("mailgun-hook", {"tolerance_seconds": 0}, "key 'tolerance_seconds': 1…86400, got 0"),
    (
        "mailgun-hook",
        {"retry_window_seconds": 299},
        "key 'retry_window_seconds': 300…259200 (at least tolerance_seconds), got 299",
    ),
    ("sendgrid-hook", {"tolerance_seconds": 86401}, "key 'tolerance_seconds': 1…86400, got 86401"),
    ("ses-hook", {"max_age_seconds": "1h"}, "key 'max_age_seconds': expected seconds, got '1h'"),
    ("ses-hook", {"max_age_seconds": 0}, "key 'max_age_seconds': must be positive"),
]


@pytest.mark.parametrize(("adapter", "keys", "message"), ADAPTER_MESSAGES)
def test_the_adapters_keep_their_messages(adapter: str, keys: dict[str, Any], message: str) -> None:
    """Word for word what each adapter said before the checks were shared."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make(adapter, **keys)
