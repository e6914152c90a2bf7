"""Checks of single ``[site]``, ``[email]`` and ``[web]`` values that need more than a type.

:func:`digest.config.parse` calls :func:`check_site` and :func:`check_email` once
the sections are typed. Each raises :class:`~digest.errors.ConfigError` with one
line naming the key, the section and the file. Kept apart from ``config.py`` so
that module stays about loading and typing.
"""

from __future__ import annotations

import ipaddress
import re
from email.utils import getaddresses
from pathlib import Path
from typing import Protocol

from digest.errors import ConfigError

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


class _Email(Protocol):
    @property
    def transactional_from(self) -> str | None: ...
    @property
    def feedback_id(self) -> str | None: ...


class _Web(Protocol):
    @property
    def trusted_proxies(self) -> tuple[str, ...]: ...


def check_web(web: _Web, source: Path) -> None:
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


def check_site(site: _Site, source: Path) -> None:
    """``base_url`` is an absolute https URL. Plain http only with
    ``allow_insecure_base_url = true`` (local testing): RFC 8058 one-click
    unsubscribe needs an https List-Unsubscribe URI, and Gmail and Yahoo require
    one-click from bulk senders."""
    where = f"[site] key 'base_url' in {source}"
    url = site.base_url
    if url.startswith("https://") and len(url) > len("https://"):
        return
    if url.startswith("http://") and len(url) > len("http://"):
        if site.allow_insecure_base_url:
            return
        raise ConfigError(
            f"{where}: must start with https:// (RFC 8058 one-click unsubscribe needs "
            "https); for local testing only, set [site] allow_insecure_base_url = true"
        )
    raise ConfigError(f"{where}: must be an absolute URL starting with https://, got {url!r}")


def check_email(email: _Email, source: Path) -> None:
    """``transactional_from`` is one mailbox; ``feedback_id`` has Gmail's shape."""
    if email.transactional_from is not None:
        check_mailbox(email.transactional_from, "transactional_from", source)
    if email.feedback_id is not None:
        check_feedback_id(email.feedback_id, source)


def check_mailbox(value: str, key: str, source: Path) -> None:
    """One ``"Name <addr>"`` or bare address, the address plain ASCII."""
    where = f"[email] key '{key}' in {source}"
    pairs = getaddresses([value]) if not _CONTROLS.search(value) else []
    if len(pairs) != 1 or len(pairs[0][1]) > 254 or not _ADDRESS.fullmatch(pairs[0][1]):
        raise ConfigError(
            f"{where}: expected one address such as "
            f"'The Verdict Weekly <hello@example.com>', got {value!r}"
        )


def check_feedback_id(value: str, source: Path) -> None:
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
