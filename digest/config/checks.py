"""Checks of single config values that need more than a type: the one place for them.

:mod:`digest.config.loading` calls these once the sections are typed (pydantic has
already refused wrong types, unknown keys and numbers not greater than zero), in
the order the sections are read. Each raises :class:`~digest.errors.ConfigError`
with one line naming the key, the section and ``source``: the config file, or
``"environment variable DIGEST_<SECTION>__<KEY>"`` when an override set the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from email.utils import getaddresses
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import HttpUrl, TypeAdapter, ValidationError

from digest.errors import ConfigError

# Where a value was set: the config file's path, or "environment variable NAME".
Source = Path | str

# Gmail's Feedback Loop header (support.google.com/mail/answer/6254652):
#   Feedback-ID: a:b:c:SenderId
# Fields are separated by ':'. The right-most one, SenderId, is mandatory (Google
# asks for 5-15 characters, stable across the mail stream); a, b and c are up to
# three optional identifiers (campaign, customer, mail type) and may be left out
# or empty. Gmail aggregates the first four fields counted from the right, so a
# fifth would be silently ignored: we refuse it. A field holds no ':' (it would be
# two fields), no space and no control character (a header value, folded by
# nobody); we also keep to printable ASCII so DKIM and every provider see the
# same bytes.
FEEDBACK_ID_MAX_FIELDS = 4
_FEEDBACK_FIELD = re.compile(r"[!-9;-~]*")  # printable ASCII but ':' and space
_FEEDBACK_MAX_LENGTH = 200
# A bare address as the message builder accepts it (dot-atom, ASCII).
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class _Site(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def allow_insecure_base_url(self) -> bool: ...


class _Web(Protocol):
    @property
    def trusted_proxies(self) -> tuple[str, ...]: ...


def check_web(web: _Web, source: Source) -> None:
    """``[web] trusted_proxies``: each an IP address or a CIDR range (uvicorn's
    ``forwarded_allow_ips`` takes the same; ``"*"`` is refused: trusting every
    peer lets anyone choose their address)."""
    for entry in web.trusted_proxies:
        try:
            ipaddress.ip_network(entry.strip())
        except ValueError:
            raise ConfigError(
                f"[web] key 'trusted_proxies' in {source}: {entry!r} is not an IP address "
                "or a CIDR range such as '10.0.0.0/8' (host bits zero)"
            ) from None


def check_site(site: _Site, source: Source) -> None:
    """``base_url`` is an absolute https URL (and a URL at all: pydantic's ``HttpUrl``).
    Plain http only with ``allow_insecure_base_url = true`` (local testing): RFC 8058
    one-click unsubscribe needs an https List-Unsubscribe URI, and Gmail and Yahoo
    require one-click from bulk senders. The value stays the string as written."""
    where = f"[site] key 'base_url' in {source}"
    url = site.base_url
    if url.startswith("https://") and len(url) > len("https://") and _is_http_url(url):
        return
    if url.startswith("http://") and len(url) > len("http://") and _is_http_url(url):
        if site.allow_insecure_base_url:
            return
        raise ConfigError(
            f"{where}: must start with https:// (RFC 8058 one-click unsubscribe needs "
            "https); for local testing only, set [site] allow_insecure_base_url = true"
        )
    raise ConfigError(f"{where}: must be an absolute URL starting with https://, got {url!r}")


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _is_http_url(url: str) -> bool:
    try:
        _HTTP_URL.validate_python(url)
    except ValidationError:
        return False
    return True


def check_site_timezone(timezone: str, source: Source) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"[site] key 'timezone' in {source}: unknown time zone {timezone!r} "
            "(use an IANA name such as 'Europe/Berlin')"
        ) from None


def check_postal_address(value: str, source: Source) -> None:
    """It is printed in every footer (CAN-SPAM): not blank."""
    if not value.strip():
        raise ConfigError(f"[site] key 'postal_address' in {source}: must not be empty")


def check_mailbox(value: str, key: str, source: Source) -> None:
    """One ``"Name <addr>"`` or bare address, the address plain ASCII."""
    where = f"[email] key '{key}' in {source}"
    pairs = getaddresses([value]) if not _CONTROLS.search(value) else []
    if len(pairs) != 1 or len(pairs[0][1]) > 254 or not _ADDRESS.fullmatch(pairs[0][1]):
        raise ConfigError(
            f"{where}: expected one address such as "
            f"'The Verdict Weekly <hello@example.com>', got {value!r}"
        )


def check_feedback_id(value: str, source: Source) -> None:
    """Gmail's ``a:b:c:SenderId`` (see the comment above :data:`FEEDBACK_ID_MAX_FIELDS`)."""
    where = f"[email] key 'feedback_id' in {source}"
    fields = value.split(":")
    if len(value) > _FEEDBACK_MAX_LENGTH or not all(_FEEDBACK_FIELD.fullmatch(f) for f in fields):
        raise ConfigError(
            f"{where}: printable ASCII fields without spaces or control characters, "
            f"separated by ':', at most {_FEEDBACK_MAX_LENGTH} characters; got {value!r}"
        )
    if len(fields) > FEEDBACK_ID_MAX_FIELDS:
        raise ConfigError(
            f"{where}: at most {FEEDBACK_ID_MAX_FIELDS} fields (Gmail's a:b:c:SenderId), "
            f"got {len(fields)} in {value!r}"
        )
    if not fields[-1]:
        raise ConfigError(
            f"{where}: the last field is the SenderId and must not be empty "
            f"(Gmail's a:b:c:SenderId, e.g. 'weekly:digest:verdicts'), got {value!r}"
        )


def check_pause_share(value: float, source: Source) -> None:
    if value > 1:
        raise ConfigError(
            f"[send] key 'pause_error_share' in {source}: a share between 0 and 1, got {value}"
        )


def check_lease(seconds: int, source: Source) -> None:
    if seconds < 10:
        raise ConfigError(
            f"[send] key 'lease_seconds' in {source}: at least 10 seconds, got {seconds}"
        )


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def check_schedule_day(day: str, source: Source) -> None:
    if day not in DAYS:
        raise ConfigError(
            f"[schedule] in {source} key 'day': one of {', '.join(DAYS)}; got {day!r}"
        )


def check_schedule_time(time: str, source: Source) -> None:
    if not _TIME.fullmatch(time):
        raise ConfigError(f"[schedule] in {source} key 'time': HH:MM (24-hour), got {time!r}")


def check_schedule_zone(timezone: str, site_timezone: str, source: Source) -> None:
    """``[schedule] timezone``, or ``[site] timezone`` when it is empty."""
    try:
        ZoneInfo(timezone or site_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"[schedule] in {source} key 'timezone': unknown time zone {timezone!r} "
            "(use an IANA name such as 'America/New_York')"
        ) from None


def check_operator(address: str, source: Source) -> None:
    """``[operators] emails``: each a bare address, checked as readers' are
    (``email-validator``, syntax only: no DNS lookup), kept as written."""
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise ConfigError(
            f"[operators] key 'emails' in {source}: {address!r} is not an email address"
        ) from None


_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # a URL path segment


def check_providers(providers: Sequence[str], source: Source) -> None:
    """``[webhooks] providers``: route names (each a URL path segment), none twice."""
    where = f"[webhooks] key 'providers' in {source}"
    if len(set(providers)) != len(providers):
        raise ConfigError(f"{where}: a provider is listed twice")
    bad = [p for p in providers if not _ROUTE_NAME.fullmatch(p)]
    if bad:
        raise ConfigError(f"{where}: {bad[0]!r} is not a name such as 'postmark'")
