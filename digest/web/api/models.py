"""The bodies and answers of ``/api/v1`` (pydantic), and the rows they are made from.

Request bodies refuse unknown fields (a typo is a 422, not a silent no-op).
Answers carry no token and no secret: a reader is their address, name, status
and preferences; an edition its lineup, editorial content and approval.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from digest.editions.shaping import (
    NOTE_LIMIT,
    PREHEADER_LIMIT,
    SPONSOR_TEXT_LIMIT,
    SUBJECT_LIMIT,
    Edit,
    LineupEntry,
    Sponsor,
)
from digest.store.models import Edition, EditionEditorial
from subscribers.models import Subscriber


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong, in one sentence.")


class NewReader(Body):
    email: str = Field(max_length=320, examples=["ada@example.com"])
    name: str = Field(default="", max_length=200)
    categories: list[str] = Field(default_factory=list, max_length=50)
    consented: bool = Field(
        default=False,
        description="true: the reader already consented elsewhere (say where in `source`): "
        "active at once, no confirmation mail. false (default): double opt-in.",
    )
    source: str = Field(
        default="", max_length=200, description="Where the consent came from (with consented)."
    )


class ReaderChange(Body):
    name: str | None = Field(default=None, max_length=200)
    categories: list[str] | None = Field(default=None, max_length=50, description="[] = all")
    paused_until: datetime | None = Field(
        default=None, description="An ISO 8601 time with offset, at most 52 weeks on; null ends it"
    )
    time_zone: str | None = Field(
        default=None, max_length=64, description="IANA name, '' = the site's"
    )


class ReaderOut(BaseModel):
    id: int
    email: str
    name: str
    status: str
    categories: list[str]
    time_zone: str
    paused_until: datetime | None
    confirmed_at: datetime | None
    created_at: datetime
    source: str

    @classmethod
    def of(cls, s: Subscriber) -> ReaderOut:
        assert s.id is not None
        return cls(
            id=s.id,
            email=s.email,
            name=s.name,
            status=str(s.status),
            categories=list(s.categories),
            time_zone=s.time_zone,
            paused_until=s.paused_until,
            confirmed_at=s.confirmed_at,
            created_at=s.created_at,
            source=s.source,
        )


class SponsorIn(Body):
    text: str = Field(max_length=SPONSOR_TEXT_LIMIT)
    url: str = Field(max_length=2000)
    label: str = Field(default="Sponsor", max_length=40)


class EditionChange(Body):
    """What to change; a field left out stays as it is, ``""`` clears a text."""

    note: str | None = Field(default=None, max_length=NOTE_LIMIT, description="Markdown")
    subject: str | None = Field(default=None, max_length=SUBJECT_LIMIT)
    preheader: str | None = Field(default=None, max_length=PREHEADER_LIMIT)
    sponsor: SponsorIn | None = Field(default=None, description="null removes the sponsor")
    exclude: list[str] = Field(default_factory=list, max_length=200)
    include: list[str] = Field(default_factory=list, max_length=200)
    order: list[str] | None = Field(default=None, max_length=200)

    def as_edit(self) -> Edit:
        s = self.sponsor
        return Edit(
            note=self.note,
            subject=self.subject,
            preheader=self.preheader,
            sponsor=Sponsor(s.text, s.url, s.label) if s is not None else None,
            clear_sponsor="sponsor" in self.model_fields_set and s is None,
            exclude=tuple(self.exclude),
            include=tuple(self.include),
            order=tuple(self.order) if self.order is not None else None,
        )


class ApproveIn(Body):
    force: bool = Field(default=False, description="approve despite pre-flight errors")


class EditResultOut(BaseModel):
    key: str
    revision: int
    changes: list[str]
    approval_withdrawn: bool


class ApprovalOut(BaseModel):
    needed: bool
    approved_at: datetime | None
    approved_by: str
    deadline: datetime | None


class EditionOut(BaseModel):
    key: str
    status: str
    composed_at: datetime
    planned_at: datetime | None
    finished_at: datetime | None
    planned_count: int
    status_note: str
    approval: ApprovalOut
    deliveries: dict[str, int] = Field(description="ledger rows per state")

    @classmethod
    def of(cls, e: Edition, deliveries: dict[str, int]) -> EditionOut:
        return cls(
            key=e.key,
            status=str(e.status),
            composed_at=e.composed_at,
            planned_at=e.planned_at,
            finished_at=e.finished_at,
            planned_count=e.planned_count,
            status_note=e.status_note,
            approval=ApprovalOut(
                needed=e.needs_approval,
                approved_at=e.approved_at,
                approved_by=e.approved_by,
                deadline=e.approval_deadline,
            ),
            deliveries=deliveries,
        )


class LineupOut(BaseModel):
    id: str
    title: str
    category: str
    url: str
    excluded: bool

    @classmethod
    def of(cls, entry: LineupEntry) -> LineupOut:
        c = entry.comparison
        return cls(id=c.id, title=c.title, category=c.category, url=c.url, excluded=entry.excluded)


class EditorialOut(BaseModel):
    note: str = ""
    subject: str = ""
    preheader: str = ""
    sponsor: SponsorIn | None = None
    revision: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""

    @classmethod
    def of(cls, ed: EditionEditorial | None) -> EditorialOut:
        if ed is None:
            return cls()
        sponsor = SponsorIn(text=ed.sponsor_text, url=ed.sponsor_url, label=ed.sponsor_label)
        return cls(
            note=ed.note,
            subject=ed.subject,
            preheader=ed.preheader,
            sponsor=sponsor if ed.sponsor_text else None,
            revision=ed.revision,
            updated_at=ed.updated_at,
            updated_by=ed.updated_by,
        )


class EditionDetailOut(EditionOut):
    lineup: list[LineupOut]
    editorial: EditorialOut


class StatusOut(BaseModel):
    ok: bool = Field(description="no incident")
    now: datetime
    incidents: list[dict[str, str]]
    subscribers: dict[str, int] = Field(description="readers per status")
    editions: list[EditionOut] = Field(description="the newest editions first")
