"""One exception tree for the digest.

::

    ConfigError                 (outside the tree on purpose: nothing may swallow it)

    DigestError
    ├── FeedError               a feed could not be read at all
    │   ├── FeedUnavailable     network / HTTP failure after bounded retries
    │   └── FeedDocumentError   the document itself is not a v1 feed document
    ├── InvalidComparison       one comparison fails the contract (skipped, reported)
    ├── RenderError             templates or MJML failed
    │   └── DigestTooLarge      the HTML is over the configured clipping limit
    ├── TransportError          sending failed at the transport level
    │   └── TransportUnavailable   the server or API cannot be reached / refused us
    ├── LedgerError             the delivery ledger refuses an operation
    │   └── LeaseHeld           another live process holds the lease for this work
    └── SubscriberInputError    (re-exported from ``subscribers.errors``)

Library errors are translated at the seam (``raise TransportUnavailable(...) from
exc``); callers above the adapters only ever see this vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from subscribers.errors import SubscriberInputError


class ConfigError(Exception):
    """The configuration is wrong; the message names the key and the file.

    Deliberately *not* a :class:`DigestError`: handlers that skip a bad item and
    go on must never swallow a configuration mistake.
    """


class DigestError(Exception):
    """Base of every runtime error the digest raises on purpose."""


class FeedError(DigestError):
    """A feed could not be read."""


class FeedUnavailable(FeedError):
    """The feed server could not be reached or kept failing after retries."""


class FeedDocumentError(FeedError):
    """The document is not a valid v1 feed document (the whole document is refused)."""


class InvalidComparison(DigestError):
    """One comparison breaks the feed contract.

    ``where`` names the comparison (its ``id`` and its place in the feed);
    ``problems`` lists every bad field as (JSON path, plain-words reason), e.g.
    ``("tools[1].pricing", "'cheap' is not one of: free, paid, freemium, open-source")``;
    ``field`` and ``reason`` are the first of them.
    """

    def __init__(self, where: str, problems: Sequence[tuple[str, str]]) -> None:
        self.where = where
        self.problems = list(problems) or [("$", "is not a valid comparison")]
        self.field, self.reason = self.problems[0]
        details = "; ".join(f"{field}: {reason}" for field, reason in self.problems)
        super().__init__(f"comparison {where}: {details}")


class RenderError(DigestError):
    """A template or the MJML compiler failed."""


class DigestTooLarge(RenderError):
    """The rendered HTML part is larger than the configured limit, counted on the
    wire (quoted-printable, as sent: ``digest.render.size``)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the digest HTML is {size:,} bytes on the wire (quoted-printable, as sent), "
            f"{size - limit:,} bytes over the limit of {limit:,} ([edition] max_html_bytes); "
            "Gmail clips messages above about 102 KB: lower [edition] max_comparisons or "
            "shorten the templates"
        )


class TransportError(DigestError):
    """Sending failed at the transport level."""


class TransportUnavailable(TransportError):
    """The mail server or provider cannot be reached or refuses every attempt."""


class LedgerError(DigestError):
    """The delivery ledger refused an operation."""


class LeaseHeld(LedgerError):
    """Another live process holds the lease for this piece of work."""


__all__ = [
    "ConfigError",
    "DigestError",
    "DigestTooLarge",
    "FeedDocumentError",
    "FeedError",
    "FeedUnavailable",
    "InvalidComparison",
    "LeaseHeld",
    "LedgerError",
    "RenderError",
    "SubscriberInputError",
    "TransportError",
    "TransportUnavailable",
]
