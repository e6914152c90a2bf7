"""The signed tokens in a digest's links: tracked links, message refs and votes.

Three shapes, each a dot-separated body and a tag (``TokenSigner.tag`` under its
own purpose, so one can never stand for another). Feed ids and tool keys are
``[a-z0-9-]`` (the feed contract), so a dot never occurs inside a part.

- **link** ``{edition}.{comparison}.{target}.{tag}``: which link of which edition
  was followed. ``target`` is ``c`` (the comparison's page) or ``t-{tool key}``
  (the tool's page). It holds no URL: the redirect looks the target up in the
  stored comparison, so no token can send a reader anywhere else (no open
  redirect, even with the key). The same for every reader of an edition.
- **ref** ``{ident}.{sent}.{tag}``: which message a click came from. ``ident`` is
  ``s{subscriber id}`` with ``[tracking] individual`` on, else a keyed pseudonym
  of edition and reader (``p…``) that counts unique clickers without naming them;
  ``sent`` is when the edition was planned (hex Unix seconds; the build time for a
  preview), for telling a mail scanner's clicks soon after sending apart: not the
  build time, so a replayed provider request is byte-identical. ``web`` is the public
  web copy's ref and is not signed (it names no one).
- **vote** ``{subscriber id}.{comparison}.{tool key}.{tag}``: one reader's vote on
  one tool; the choice (ship / skip) is the URL's last segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from subscribers.tokens import BadToken, Purpose, TokenSigner

WEB_REF = "web"
_SLUG = re.compile(r"[a-z0-9-]{1,120}")
_EDITION = re.compile(r"\d{4}-W\d{2}")
_TARGET = re.compile(r"c|t-[a-z0-9-]{1,80}")
_LINK_TAG = 12
_REF_TAG = 8
_PSEUDONYM = 9


@dataclass(frozen=True, slots=True)
class LinkTarget:
    edition_key: str
    comparison_id: str
    target: str  # "c" or "t-<tool key>"

    @property
    def tool_key(self) -> str | None:
        return self.target[2:] if self.target.startswith("t-") else None


@dataclass(frozen=True, slots=True)
class MessageRef:
    ident: str  # "s<id>" (individual), "p<pseudonym>", or "web"
    sent_at: datetime | None  # None for the web copy

    @property
    def subscriber_id(self) -> int | None:
        return int(self.ident[1:]) if self.ident.startswith("s") else None

    @property
    def counted(self) -> bool:
        """Reader 0 is the desk's sample reader (previews, test sends): never counted."""
        return self.ident != "s0"


@dataclass(frozen=True, slots=True)
class VoteTarget:
    subscriber_id: int
    comparison_id: str
    tool_key: str


class EngagementTokens:
    """Signs and checks the three shapes with one :class:`TokenSigner`."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    # -- links ---------------------------------------------------------------
    def link(self, edition_key: str, comparison_id: str, target: str) -> str:
        body = f"{edition_key}.{comparison_id}.{target}"
        if not (_EDITION.fullmatch(edition_key) and _SLUG.fullmatch(comparison_id)):
            raise ValueError(f"link token: bad edition or comparison id in {body!r}")
        if not _TARGET.fullmatch(target):
            raise ValueError(f"link token: bad target {target!r}")
        return f"{body}.{self._signer.tag(Purpose.link, body, size=_LINK_TAG)}"

    def read_link(self, token: str) -> LinkTarget:
        parts = token.split(".")
        if len(parts) != 4:
            raise BadToken("invalid")
        edition, comparison, target, tag = parts
        body = f"{edition}.{comparison}.{target}"
        ok = (
            _EDITION.fullmatch(edition)
            and _SLUG.fullmatch(comparison)
            and _TARGET.fullmatch(target)
        )
        if not ok or not self._signer.check(Purpose.link, body, tag, size=_LINK_TAG):
            raise BadToken("invalid")
        return LinkTarget(edition, comparison, target)

    # -- message refs --------------------------------------------------------
    def ref(
        self, edition_key: str, subscriber_id: int, sent_at: datetime, *, individual: bool
    ) -> str:
        if individual or subscriber_id == 0:
            ident = f"s{int(subscriber_id)}"
        else:
            ident = "p" + self._signer.tag(
                Purpose.ref, f"pseudonym:{edition_key}:{int(subscriber_id)}", size=_PSEUDONYM
            )
        body = f"{ident}.{int(sent_at.timestamp()):x}"
        return f"{body}.{self._signer.tag(Purpose.ref, body, size=_REF_TAG)}"

    def read_ref(self, ref: str) -> MessageRef:
        if ref == WEB_REF:
            return MessageRef(WEB_REF, None)
        parts = ref.split(".")
        if len(parts) != 3 or not re.fullmatch(r"s\d{1,18}|p[A-Za-z0-9_-]{12}", parts[0]):
            raise BadToken("invalid")
        ident, sent, tag = parts
        if not re.fullmatch(r"[0-9a-f]{1,12}", sent):
            raise BadToken("invalid")
        if not self._signer.check(Purpose.ref, f"{ident}.{sent}", tag, size=_REF_TAG):
            raise BadToken("invalid")
        return MessageRef(ident, datetime.fromtimestamp(int(sent, 16), UTC))

    # -- votes ---------------------------------------------------------------
    def vote(self, subscriber_id: int, comparison_id: str, tool_key: str) -> str:
        body = f"{int(subscriber_id)}.{comparison_id}.{tool_key}"
        if not (_SLUG.fullmatch(comparison_id) and _SLUG.fullmatch(tool_key)):
            raise ValueError(f"vote token: bad comparison id or tool key in {body!r}")
        return f"{body}.{self._signer.tag(Purpose.vote, body)}"

    def read_vote(self, token: str) -> VoteTarget:
        parts = token.split(".")
        if len(parts) != 4 or not parts[0].isdigit() or len(parts[0]) > 18:
            raise BadToken("invalid")
        sid, comparison, tool, tag = parts
        ok = _SLUG.fullmatch(comparison) and _SLUG.fullmatch(tool)
        if not ok or not self._signer.check(Purpose.vote, f"{sid}.{comparison}.{tool}", tag):
            raise BadToken("invalid")
        return VoteTarget(int(sid), comparison, tool)
