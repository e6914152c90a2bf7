"""Errors of the subscribers package."""

from __future__ import annotations


class SubscriberInputError(ValueError):
    """An address, a name or a CSV row that cannot be accepted; the message says why."""
