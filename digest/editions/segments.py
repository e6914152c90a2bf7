"""Segments: the distinct sets of categories readers get from one edition.

A reader's segment is the edition's categories they chose (no choice = all of
them). The digest is rendered once per segment, never per reader; a reader whose
segment is empty, or who paused the newsletter, gets no message and a
``skipped`` row saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")
Segment = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Skip:
    """A reader who gets nothing from this edition, and why (kept on the delivery row)."""

    delivery_id: int
    reason: str


def segment_for(chosen: Sequence[str], available: Sequence[str]) -> Segment:
    """The categories of ``available`` this reader gets, in edition order."""
    if not chosen:
        return tuple(available)
    wanted = set(chosen)
    return tuple(c for c in available if c in wanted)


def skip_reason(
    *,
    chosen: Sequence[str],
    available: Sequence[str],
    paused_until: datetime | None,
    now: datetime,
) -> str | None:
    """Why this reader gets nothing now, or None when they get a message."""
    if paused_until is not None and paused_until > now:
        return f"paused by the reader until {paused_until:%Y-%m-%d}"
    if not segment_for(chosen, available):
        return (
            f"none of this edition's categories ({', '.join(available)}) is among the "
            f"reader's choices ({', '.join(chosen)})"
        )
    return None


class PerSegment(Generic[T]):
    """Build a value (a rendered template) once per segment, on first use."""

    def __init__(self, build: Callable[[Segment], T]) -> None:
        self._build = build
        self._cache: dict[Segment, T] = {}

    def get(self, segment: Segment) -> T:
        value = self._cache.get(segment)
        if value is None:
            value = self._cache[segment] = self._build(segment)
        return value

    def __len__(self) -> int:
        return len(self._cache)


def distinct_categories(categories: Sequence[str]) -> list[str]:
    """Categories in first-seen order, without repeats."""
    return list(dict.fromkeys(categories))
