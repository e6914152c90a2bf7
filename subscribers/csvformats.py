"""Which CSV an import file is, and how its columns become ours (:data:`COLUMNS`).

A file is recognised by its header row (names compared case-insensitively): a
format matches when every column of one of its ``required`` sets is there. Service
exports are checked first, our own format (any file with an ``email`` column) last:

==========  ====================================================  ==========================
format      recognised by                                         do-not-mail rows
==========  ====================================================  ==========================
mailchimp   ``Email Address`` (the audience zip's three files,     the unsubscribed file
            told apart by file name, else ``UNSUB_TIME`` /         (unsubscribed), the cleaned
            ``CLEAN_TIME``)                                        file (bounced)
substack    ``email`` + ``active_subscription``,                   ``email_disabled`` true,
            ``email_disabled`` or ``subscription_type``            ``unsubscribed_at`` set
buttondown  ``email`` + ``subscriber_type``                        unsubscribed, removed,
                                                                  spammy; undeliverable
                                                                  (bounced); complained
ghost       ``email`` + ``subscribed_to_emails``                  not subscribed to emails,
                                                                  ``deleted_at`` set
listmonk    ``uuid`` + ``email`` + ``status``                      blocklisted, disabled
digest      ``email`` (ours: email, name, categories, status, …)   its ``status`` column
==========  ====================================================  ==========================

Any other file needs a column mapping (``email=E-Mail``, ``name=First+Last``). Tags,
labels and groups are *not* mapped to categories by default: a reader's categories
narrow what they are sent, and a service's tags describe the reader, not the topics
they chose (map them explicitly with ``categories=tags`` if they are topics).

A service's export states consent itself (its readers opted in there: "imported from
Mailchimp export <file>", unless the operator says otherwise), and its do-not-mail
rows become suppressions only: no reader row is made for them. A reader present here,
active or pending, whom such an export lists as unsubscribed or bounced is unsubscribed
(or bounced) and suppressed: the export records the reader's own decision elsewhere.
Our own format keeps its rule: its status column is not applied to a present reader.
Nothing ever reactivates a suppressed address (:mod:`subscribers.csvio`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from subscribers.errors import SubscriberInputError
from subscribers.models import SubscriberStatus
from subscribers.repository import BLOCKED_STATUSES, clean_time_zone

COLUMNS = ("email", "name", "categories", "status", "created_at", "time_zone")
Status = Callable[[Mapping[str, str]], tuple[str, str]]  # cells → (our status or "", why)


class UnknownFormat(SubscriberInputError):
    """No format recognised and no mapping given; ``headers`` as the file has them."""

    def __init__(self, headers: Sequence[str]) -> None:
        self.headers = list(headers)
        found = ", ".join(repr(h) for h in headers) or "nothing"
        super().__init__(
            f"not a recognised export and no 'email' column (found headers: {found}); say "
            "which column is which with --map email=COLUMN (also name=, categories=)"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """How the rows of one file become ours."""

    key: str  # a format key, or "mapped"
    label: str  # "Mailchimp export (unsubscribed members)"
    columns: Mapping[str, tuple[str, ...]]  # our field → the file's columns (lower case)
    status: Status | None = None  # a service's per-row status; None: our ``status`` column
    service: bool = False  # a service's export: it states consent and unsubscribes
    reads: tuple[str, ...] = ()  # the columns ``status`` reads

    def used(self) -> set[str]:
        return {c for names in self.columns.values() for c in names} | set(self.reads)

    def translate(self, cells: Mapping[str, str]) -> tuple[dict[str, str], str]:
        """Our fields from the file's cells (keyed by lower-case header), and why a
        row has a do-not-mail status ("" when it has none)."""
        ours = {f: _joined(cells, names) for f, names in self.columns.items()}
        if self.status is None:
            return ours, ""
        ours["status"], why = self.status(cells)
        if ours.get("created_at") and not _is_time(ours["created_at"]):
            ours["created_at"] = ""  # a service's odd date: the import time instead
        if ours.get("time_zone") and not _is_zone(ours["time_zone"]):
            ours["time_zone"] = ""
        return ours, why


def _joined(cells: Mapping[str, str], names: Sequence[str]) -> str:
    return " ".join(v for c in names if (v := cells.get(c, "").strip()))


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_zone(text: str) -> bool:
    try:
        clean_time_zone(text)
    except SubscriberInputError:
        return False
    return True


def _yes(text: str) -> bool:
    return text.strip().lower() in ("true", "yes", "1", "t", "y")


def _fixed(status: str, why: str) -> Status:
    return lambda cells: (status, why)


def _substack(cells: Mapping[str, str]) -> tuple[str, str]:
    if _yes(cells.get("email_disabled", "")):
        return "unsubscribed", "Substack: email_disabled"
    if cells.get("unsubscribed_at", "").strip():
        return "unsubscribed", "Substack: unsubscribed_at set"
    return "", ""


_BUTTONDOWN = {
    "unsubscribed": "unsubscribed",
    "removed": "unsubscribed",
    "spammy": "unsubscribed",
    "undeliverable": "bounced",
    "complained": "complained",
    "unactivated": "pending",
}


def _buttondown(cells: Mapping[str, str]) -> tuple[str, str]:
    kind = cells.get("subscriber_type", "").strip().lower()
    status = _BUTTONDOWN.get(kind, "")
    return status, f"Buttondown subscriber_type {kind}" if status else ""


def _ghost(cells: Mapping[str, str]) -> tuple[str, str]:
    if cells.get("deleted_at", "").strip():
        return "unsubscribed", "Ghost: member deleted"
    if not _yes(cells.get("subscribed_to_emails", "")):
        return "unsubscribed", "Ghost: not subscribed to emails"
    return "", ""


def _listmonk(cells: Mapping[str, str]) -> tuple[str, str]:
    status = cells.get("status", "").strip().lower()
    if status in ("blocklisted", "disabled"):
        return "unsubscribed", f"listmonk status {status}"
    return "", ""


_MAILCHIMP = {
    "subscribed": ("", ""),
    "unsubscribed": ("unsubscribed", "Mailchimp: unsubscribed members export"),
    "cleaned": ("bounced", "Mailchimp: cleaned members export (bounced)"),
}


def _mailchimp(header: Sequence[str], file_name: str) -> Plan:
    name = file_name.lower()
    kind = next((k for k in ("unsubscribed", "cleaned", "subscribed") if name.startswith(k)), "")
    if not kind:
        kind = "unsubscribed" if "unsub_time" in header else "subscribed"
        kind = "cleaned" if "clean_time" in header else kind
    names = {"email": ("email address",), "name": ("first name", "last name")}
    names |= {"created_at": ("confirm_time",) if "confirm_time" in header else ("optin_time",)}
    names |= {"time_zone": ("timezone",)}
    label = f"Mailchimp export ({kind} members)"
    return Plan("mailchimp", label, names, _fixed(*_MAILCHIMP[kind]), service=True)


def _simple(key: str, label: str, status: Status, reads: str, created: str = "created_at") -> Plan:
    names = {"email": ("email",), "name": ("name",), "created_at": (created,)}
    return Plan(key, label, names, status, service=True, reads=tuple(reads.split()))


_OURS = Plan("digest", "digest CSV", {c: (c,) for c in COLUMNS})
FORMATS: dict[str, tuple[tuple[frozenset[str], ...], Callable[[Sequence[str], str], Plan]]] = {
    "listmonk": (
        (frozenset({"uuid", "email", "status"}),),
        lambda h, f: _simple("listmonk", "listmonk export", _listmonk, "status"),
    ),
    "ghost": (
        (frozenset({"email", "subscribed_to_emails"}),),
        lambda h, f: _simple(
            "ghost", "Ghost members export", _ghost, "subscribed_to_emails deleted_at"
        ),
    ),
    "buttondown": (
        (frozenset({"email", "subscriber_type"}),),
        lambda h, f: _simple(
            "buttondown", "Buttondown export", _buttondown, "subscriber_type", "creation_date"
        ),
    ),
    "substack": (
        tuple(
            frozenset({"email", c})
            for c in ("active_subscription", "email_disabled", "subscription_type")
        ),
        lambda h, f: _simple(
            "substack", "Substack export", _substack, "email_disabled unsubscribed_at"
        ),
    ),
    "mailchimp": ((frozenset({"email address"}),), _mailchimp),
    "digest": ((frozenset({"email"}),), lambda h, f: _OURS),
}


def choose(
    header: Sequence[str], *, file_name: str, forced: str | None, mapping: Mapping[str, str]
) -> Plan:
    """The plan for a file with ``header`` (as written). ``forced``: a key of
    :data:`FORMATS`; ``mapping``: our field → the file's column(s), ``+`` joining several,
    over the format's own. Raises :class:`UnknownFormat` or SubscriberInputError."""
    lower = [h.strip().lower() for h in header]
    plan: Plan | None = None
    if forced is not None:
        if forced not in FORMATS:
            raise SubscriberInputError(f"unknown format {forced!r} (one of: {', '.join(FORMATS)})")
        plan = FORMATS[forced][1](lower, file_name)
    else:
        for sets, build in FORMATS.values():
            if any(s <= set(lower) for s in sets):
                plan = build(lower, file_name)
                break
    if mapping:
        columns = dict(plan.columns if plan else {}) | _mapped(mapping, header, lower)
        plan = (
            replace(plan, columns=columns)
            if plan
            else Plan("mapped", "CSV with a column mapping", columns)
        )
    if plan is None:
        raise UnknownFormat(header)
    missing = [c for c in plan.columns.get("email", ()) if c not in lower]
    if missing or "email" not in plan.columns:
        raise SubscriberInputError(
            f"{plan.label}: the file has no {missing[0] if missing else 'email'!r} column "
            f"(found headers: {', '.join(header) or 'nothing'})"
        )
    return plan


def _mapped(
    mapping: Mapping[str, str], header: Sequence[str], lower: list[str]
) -> dict[str, tuple[str, ...]]:
    columns: dict[str, tuple[str, ...]] = {}
    for field, given in mapping.items():
        if field not in COLUMNS:
            raise SubscriberInputError(f"cannot map {field!r}: our fields are {', '.join(COLUMNS)}")
        names = tuple(n.strip().lower() for n in given.split("+") if n.strip())
        for name in names or ("",):
            if name not in lower:
                raise SubscriberInputError(
                    f"{field}={given}: the file has no column {name!r} "
                    f"(found headers: {', '.join(header) or 'nothing'})"
                )
        columns[field] = names
    return columns


def initial_status(status: SubscriberStatus | None, consent_source: str | None) -> SubscriberStatus:
    """The status a new reader gets: do-not-mail as the file says; else pending
    without stated consent; else the file's status, or active."""
    if status is not None and status in BLOCKED_STATUSES:
        return status
    if consent_source is None:
        return SubscriberStatus.pending
    return status or SubscriberStatus.active


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """``["email=E-Mail", "name=First+Last"]`` → ``{"email": "E-Mail", …}``."""
    mapping: dict[str, str] = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise SubscriberInputError(f"--map {item!r}: write FIELD=COLUMN, e.g. email=E-Mail")
        mapping[field.strip().lower()] = column.strip()
    return mapping
