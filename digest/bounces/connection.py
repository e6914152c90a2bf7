"""What the IMAP and POP3 clients of the bounce mailbox share: the poll's deadline,
the TLS context, the refusal to send a password in clear text, and the one-line
error an operator sees.

Every network wait is bounded twice: each operation by ``[bounces]
timeout_seconds`` (the socket timeout, set again before each command), and the
whole poll by its :class:`Deadline`, which shortens the last timeouts so that
no single command outlives it.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from digest.config.bounce_sections import BouncesConfig, is_loopback
from digest.errors import DigestError


class MailboxError(DigestError):
    """The bounce mailbox cannot be read: unreachable, TLS refused, login refused.
    Its text is one line for the operator, never the password."""


class DeadlineReached(MailboxError):
    """The poll's total deadline passed; what is left waits for the next poll."""


@dataclass(frozen=True, slots=True)
class Item:
    """One message in the mailbox: the server's key for it (an IMAP UID, a POP3
    message number with its UIDL) and its size as the server reports it."""

    key: str
    size: int
    uidl: str = ""


class Box(Protocol):
    """One open, logged-in mailbox session (IMAP folder or POP3 maildrop)."""

    where: str

    def listing(self) -> list[Item]: ...

    def fetch(self, item: Item) -> bytes: ...

    def settle(self, item: Item, outcome: str) -> str: ...

    def close(self) -> None: ...


class Deadline:
    """The poll's end, on the monotonic clock; :meth:`timeout` is what the next
    network operation may wait."""

    def __init__(self, total_seconds: float, per_operation: float) -> None:
        self.ends = time.monotonic() + total_seconds
        self.per_operation = per_operation
        self.total_seconds = total_seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def timeout(self) -> float:
        """Seconds the next operation may wait; raises once the deadline has passed."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineReached(f"the poll's deadline of {self.total_seconds:g} s passed")
        return min(self.per_operation, left)


# Outcomes of one message, as Box.settle receives them: the ingest kinds, plus
# "too-big" (over max_message_bytes, never read).
HANDLED = frozenset({"applied", "duplicate"})  # go to Processed, or are deleted
KEPT = frozenset({"unknown", "unmatched", "too-big"})  # go to Unknown, never deleted


def tls_context(cfg: BouncesConfig, base_dir: Path) -> ssl.SSLContext:
    """Certificates verified against the system store, plus ``ca_file`` when set."""
    ca = cfg.ca_path(base_dir)
    if ca is not None and not ca.is_file():
        raise MailboxError(f"[bounces] ca_file {str(ca)!r} does not exist")
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise MailboxError(f"[bounces] ca_file {str(ca)!r} cannot be read: {exc}") from None


def check_plain_text(cfg: BouncesConfig, encrypted: bool) -> None:
    """Refuse to log in over an unencrypted connection unless ``security = "none"``
    to a loopback host (the config refuses it elsewhere; checked again here)."""
    if encrypted:
        return
    if cfg.security != "none" or not is_loopback(cfg.host):
        raise MailboxError(
            f"refusing to send the bounce-mailbox password to {cfg.host} in clear text "
            f"([bounces] security = {cfg.security!r} but the connection is not encrypted)"
        )


def describe(exc: BaseException) -> str:
    """An exception as one line: its class and text (a server's answer, decoded),
    with a hint when the certificate was not trusted."""
    if exc.args and all(isinstance(a, bytes | str) for a in exc.args):
        text = " ".join(a.decode(errors="replace") if isinstance(a, bytes) else a for a in exc.args)
    else:
        text = str(exc)
    line = f"{type(exc).__name__}: {' '.join(text.split())}"[:300]
    if isinstance(exc, ssl.SSLCertVerificationError):
        line += " (a private CA or self-signed certificate: set [bounces] ca_file)"
    return line


def unreachable(cfg: BouncesConfig, exc: BaseException) -> MailboxError:
    """The one line for a mailbox that cannot be reached (IMAP and POP3 alike)."""
    where = f"{cfg.host}:{cfg.effective_port}"
    return MailboxError(f"cannot reach the bounce mailbox at {where}: {describe(exc)}")


def no_starttls(cfg: BouncesConfig, command: str) -> MailboxError:
    """A server that does not offer ``command`` (STARTTLS, STLS): nothing is sent."""
    return MailboxError(
        f"{cfg.host}:{cfg.effective_port} does not offer {command}: refusing to send the "
        "password in clear text (use security = 'tls' and its port)"
    )
