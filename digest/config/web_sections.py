"""The sections of ``config.toml`` the web side reads: ``[web]``, ``[tracking]``
(what the links in a digest count) and ``[votes]`` (readers' votes and the
outgoing webhook). Same rules as :mod:`digest.config.sections`."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from digest.config.section_base import Section, string_list
from digest.errors import ConfigError

# An origin: http(s), a host name or [IPv6] address, an optional port; nothing else.
_ORIGIN = re.compile(
    r"(?i)https?://(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?"
)


class WebConfig(Section):
    """The public web side (``digest serve``)."""

    confirm_token_hours: PositiveInt = 72  # a confirmation link works this long
    confirm_resend_minutes: PositiveInt = 60  # one confirmation mail per address per window
    signups_per_minute: PositiveInt = 10  # per client IP; more get 429
    welcome_email: bool = True  # send the latest edition when a reader confirms
    consent_version: str = "1"  # version of the consent text shown on the sign-up form
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (addresses or CIDR ranges); the client is the right-most address not in here.
    trusted_proxies: tuple[str, ...] = string_list()
    proof_of_work: bool = False  # sign-ups must solve an ALTCHA challenge (self-hosted)
    proof_of_work_max_number: PositiveInt = 100_000  # the challenge's search space (difficulty)
    proof_of_work_minutes: PositiveInt = 10  # a challenge expires after this long
    block_disposable_domains: bool = False  # refuse sign-ups from throwaway-mail domains
    # Origins (https://host[:port]) whose pages may POST /subscribe with fetch() (CORS).
    allowed_origins: tuple[str, ...] = string_list()

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(origin_of(entry) for entry in value)


def origin_of(entry: str) -> str:
    """``entry`` as a browser sends it in ``Origin``: scheme and host lower-cased, no
    default port, no trailing slash. Raises ConfigError (not a ValueError: pydantic
    would swallow the message) for anything but ``http(s)://host[:port]``."""
    text = entry.strip().rstrip("/")
    if _ORIGIN.fullmatch(text):
        parts = urlsplit(text.lower())
        try:
            port = parts.port
        except ValueError:  # out of range
            port = -1
        if port != -1 and parts.hostname:
            default = {"http": 80, "https": 443}[parts.scheme]
            host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
            return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")
    raise ConfigError(
        f"[web] key 'allowed_origins': {entry!r} is not an origin; write the scheme and host "
        "(and a port if not the default) and nothing else, e.g. 'https://verdicts.example.com'"
    )


class TrackingConfig(Section):
    """``[tracking]``: what the links in a digest count (docs/TRACKING.md).

    By default clicks are counted per edition × comparison × link, never per
    reader; ``individual`` attributes clicks to readers (the footer says so);
    ``opens`` adds an open pixel. Scanner clicks are counted apart."""

    clicks: bool = True  # links go through /r/{token}; false: links point at their targets
    individual: bool = False  # per-reader clicks (stated in the footer)
    opens: bool = False  # a 1x1 open pixel per message
    # A message whose links are hit this soon after it was sent is a mail scanner's.
    scanner_seconds: PositiveInt = 20
    # This many distinct links of one message within scanner_seconds: a scanner too.
    scanner_links: PositiveInt = 3
    flush_seconds: PositiveFloat = 1.0  # counts are written in batches this often


VoteChoice = Literal["ship", "skip"]


class VotesConfig(Section):
    """``[votes]``: "Ship it" / "Skip it" links under each tool, and where counts go."""

    enabled: bool = True
    # POSTed (HMAC-SHA256 signed with DIGEST_VOTES_WEBHOOK_SECRET) when counts change.
    webhook_url: str = ""
    webhook_attempts: PositiveInt = 5
    webhook_timeout_seconds: PositiveFloat = 10.0
    public_cache_seconds: int = Field(default=60, ge=0)  # Cache-Control of /votes.json
