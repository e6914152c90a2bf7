"""``[bounces]``: the bounce mailbox ``digest bounces poll`` reads, and the checks of
``[email] bounce_address`` (VERP, :mod:`digest.delivery.verp`).

Bounces that come back after the SMTP session (an operator's own Postfix relays
first and reports later) land in a mailbox; ``digest bounces poll`` reads it over
IMAP or POP3 and ``digest bounces ingest`` takes one message from a Postfix pipe.
The password is never a setting: it comes from ``DIGEST_BOUNCES_PASSWORD`` only,
and an enabled section without it refuses to load. Same rules as
:mod:`digest.config.sections`; :func:`check` runs once the sections are typed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from digest.config.section_base import Section
from digest.errors import ConfigError

ENV_PASSWORD = "DIGEST_BOUNCES_PASSWORD"  # noqa: S105  (a variable name, not a secret)
MailboxKind = Literal["imap", "pop3"]
Security = Literal["tls", "starttls", "none"]
# The protocol's port for each security: implicit TLS, else the plain port.
DEFAULT_PORTS: Mapping[tuple[str, str], int] = {
    ("imap", "tls"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "tls"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
}
# A bare address (dot-atom, ASCII): it becomes an SMTP envelope sender.
_BARE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
)


class BouncesConfig(Section):
    """``[bounces]``: where asynchronous bounces and complaints are read from."""

    enabled: bool = False  # digest bounces poll (and its scheduler job) read the mailbox
    kind: MailboxKind = "imap"
    host: str = ""
    port: int = Field(default=0, ge=0, le=65535)  # 0: 993/143 (IMAP), 995/110 (POP3)
    security: Security = "tls"  # "none" only to a loopback host
    user: str = ""
    folder: str = "INBOX"
    processed_folder: str = "Processed"  # IMAP: where a handled message is moved
    unknown_folder: str = "Unknown"  # IMAP: where an unclassifiable message is moved
    delete: bool = False  # delete handled messages instead of moving them
    poll_minutes: PositiveInt = 10
    timeout_seconds: PositiveFloat = Field(default=30.0, strict=False)  # each network wait
    max_messages: PositiveInt = 500  # per poll; the rest wait for the next one
    max_message_bytes: PositiveInt = 10_000_000  # larger messages are refused, not read
    ca_file: str = ""  # a PEM to trust besides the system store (self-signed test servers)
    # Where `digest bounces ingest` keeps a message it cannot classify (never lost);
    # relative to the config file's folder unless absolute.
    unknown_dir: str = "bounces-unknown"

    @property
    def effective_port(self) -> int:
        """``port``, or the protocol's default for ``security``."""
        return self.port or DEFAULT_PORTS[(self.kind, self.security)]

    def unknown_path(self, base_dir: Path) -> Path:
        """``unknown_dir`` resolved against the config file's folder."""
        path = Path(self.unknown_dir).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()

    def ca_path(self, base_dir: Path) -> Path | None:
        """``ca_file`` resolved against the config file's folder, or None."""
        if not self.ca_file:
            return None
        path = Path(self.ca_file).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()


def password(environ: Mapping[str, str]) -> str:
    """The mailbox password: ``DIGEST_BOUNCES_PASSWORD`` ("" when unset)."""
    return environ.get(ENV_PASSWORD, "")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: plain text never leaves the machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bounce_address(value: str, source: str) -> None:
    """``[email] bounce_address``: empty (VERP off) or one bare address."""
    if value and not (_BARE.fullmatch(value) and len(value) <= 254):
        raise ConfigError(
            f"[email] key 'bounce_address' in {source}: expected a bare address such as "
            f"'bounces@example.com' (no name, no <>), got {value!r}"
        )


def check(
    bounces: BouncesConfig,
    *,
    place: Callable[[str, str], str],
    environ: Mapping[str, str],
) -> None:
    """An enabled ``[bounces]`` section: a host, a user, the password in the
    environment, and plain text only to a loopback host. ``place(section, key)``
    names where a key was set (the file, or the variable that overrode it)."""
    if not bounces.enabled:
        return
    for key in ("host", "user"):
        if not getattr(bounces, key).strip():
            raise ConfigError(
                f"[bounces] key '{key}' in {place('bounces', key)}: needed when "
                "[bounces] enabled = true"
            )
    if not password(environ):
        raise ConfigError(
            f"[bounces] enabled in {place('bounces', 'enabled')} but {ENV_PASSWORD} is not "
            "set: put the mailbox password in that environment variable"
        )
    if bounces.security == "none" and not is_loopback(bounces.host):
        raise ConfigError(
            f"[bounces] key 'security' in {place('bounces', 'security')}: 'none' sends the "
            f"password in clear text; only allowed to a loopback host, not {bounces.host!r} "
            "(use 'tls' or 'starttls')"
        )


def check_settings(
    bounce_address: str,
    bounces: BouncesConfig,
    place: Callable[[str, str], str],
    environ: Mapping[str, str],
) -> None:
    """Both checks, as :func:`digest.config.settings.read` runs them."""
    check_bounce_address(bounce_address, place("email", "bounce_address"))
    check(bounces, place=place, environ=environ)
