"""The outbox transport: one atomic .eml file per delivery, one preview per folder."""

from __future__ import annotations

import email
import email.policy
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.errors import TransportUnavailable
from digest.render.base import RenderedDigest, Slot
from digest.render.personalize import MessageTemplate
from digest.transports.base import Outcome, OutgoingMessage
from digest.transports.outbox import OutboxTransport

DIGEST = RenderedDigest(
    subject="This week",
    html=('<p>Grüße</p><a href="', Slot("unsubscribe_url"), '">unsubscribe</a>\n' * 2),
    text=("Grüße\n", Slot("unsubscribe_url"), "\n", Slot("preferences_url"), "\n"),
)


def messages(n: int, *, tag: str = "2026-W48", start: int = 1) -> list[OutgoingMessage]:
    template = MessageTemplate.build(
        DIGEST,
        from_header="Weekly <digest@verdicts.example.com>",
        reply_to=None,
        list_id="Weekly <weekly.verdicts.example.com>",
        edition_key=tag,
        message_id_domain=None,
    )
    out = []
    for i in range(start, start + n):
        to = f"reader+{i}@example.org"
        data = template.render(
            subscriber_id=i,
            to_email=to,
            to_name=f"Reader {i}",
            unsubscribe_url=f"https://x.example/u/{i}",
            preferences_url=f"https://x.example/p/{i}",
            date=datetime(2026, 11, 23, tzinfo=UTC),
        )
        out.append(
            OutgoingMessage(i, "digest@verdicts.example.com", to, template.message_id(i), data, tag)
        )
    return out


async def test_writes_one_parsable_file_per_message(tmp_path: Path) -> None:
    t = OutboxTransport(path=tmp_path / "outbox")
    await t.open()
    batch = messages(25)
    results = await t.send_batch(batch)
    await t.close()
    folder = tmp_path / "outbox" / "2026-W48"
    files = sorted(folder.glob("*.eml"))
    assert len(files) == 25
    assert [r.outcome for r in results] == [Outcome.sent] * 25
    assert results[0].provider_id == "0000001-reader+1@example.org.eml"
    for message, path in zip(batch, files, strict=True):
        assert path.read_bytes() == message.data
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert parsed["Message-ID"] == message.message_id
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".eml") == ["preview.html"]
    preview = (folder / "preview.html").read_text(encoding="utf-8")
    assert preview == DIGEST.html_with(
        {"unsubscribe_url": "https://x.example/u/1", "preferences_url": "https://x.example/p/1"}
    )


async def test_retry_overwrites_the_same_file(tmp_path: Path) -> None:
    t = OutboxTransport(path=tmp_path, html_preview=False)
    await t.open()
    first = messages(1)
    await t.send_batch(first)
    await t.send_batch(first)
    await t.send_batch(messages(1, tag="2026-W49"))
    assert len(list((tmp_path / "2026-W48").iterdir())) == 1
    assert len(list((tmp_path / "2026-W49").iterdir())) == 1
    assert not list(tmp_path.rglob("preview.html"))


async def test_unsafe_tag_and_recipient_stay_inside(tmp_path: Path) -> None:
    t = OutboxTransport(path=tmp_path / "o")
    msg = OutgoingMessage(
        7, "a@b.c", "../../etc/passwd", "<x@y>", b"Subject: x\r\n\r\nx\r\n", "../up"
    )
    [result] = await t.send_batch([msg])
    assert result.outcome is Outcome.sent
    written = t.file_for(msg)
    assert written.is_file()
    assert written.resolve().is_relative_to((tmp_path / "o").resolve())


async def test_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    t = OutboxTransport(path=blocker / "outbox")
    with pytest.raises(TransportUnavailable, match="not writable"):
        await t.open()
    with pytest.raises(TransportUnavailable, match="cannot write"):
        await t.send_batch(messages(1))


@pytest.mark.parametrize("kwargs", [{"path": ""}, {"path": 3}, {"path": "x", "html_preview": 1}])
def test_bad_keywords(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="key '"):
        OutboxTransport(**kwargs)  # type: ignore[arg-type]


async def test_throughput_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Measured, not asserted (target ≥ 5,000 msgs/s): 5,000 messages in batches of 200."""
    batch = messages(5000)
    t = OutboxTransport(path=tmp_path)
    await t.open()
    start = time.perf_counter()
    for i in range(0, len(batch), t.max_batch):
        await t.send_batch(batch[i : i + t.max_batch])
    elapsed = time.perf_counter() - start
    assert len(os.listdir(tmp_path / "2026-W48")) == 5001
    with capsys.disabled():
        print(f"\noutbox: {len(batch) / elapsed:.0f} msgs/s for 5,000 messages")


def notice(n: int, to: str = "ops@example.org") -> OutgoingMessage:
    """Mail outside the ledger (delivery id 0), as operator notices are."""
    data = f"Subject: notice {n}\r\nMessage-ID: <n{n}@x>\r\n\r\nnotice {n}\r\n".encode()
    return OutgoingMessage(0, "digest@verdicts.example.com", to, f"<n{n}@x>", data, "operators")


async def test_a_later_notice_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    t = OutboxTransport(path=tmp_path, html_preview=False)
    await t.open()
    sent = [notice(1), notice(2)]
    results = [*(await t.send_batch(sent[:1])), *(await t.send_batch(sent[1:]))]
    results += await OutboxTransport(path=tmp_path, html_preview=False).send_batch([notice(3)])
    files = sorted((tmp_path / "operators").iterdir())
    assert [p.read_bytes() for p in files] == [notice(i).data for i in (1, 2, 3)]  # in order
    assert [r.provider_id for r in results] == [p.name for p in files]
    assert all(p.name.endswith("-ops@example.org.eml") for p in files)


def test_a_taken_notice_name_gets_a_suffix_and_the_file_is_kept(tmp_path: Path) -> None:
    folder = str(tmp_path)
    (tmp_path / "t-ops.eml").write_bytes(b"first")
    assert OutboxTransport._write_new(folder, "t-ops.eml", b"second") == "t-ops-2.eml"
    assert OutboxTransport._write_new(folder, "t-ops.eml", b"third") == "t-ops-3.eml"
    assert (tmp_path / "t-ops.eml").read_bytes() == b"first"
    assert (tmp_path / "t-ops-2.eml").read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-ops-2.eml", "t-ops-3.eml", "t-ops.eml"]
