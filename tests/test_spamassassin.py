"""SpamAssassin's local rules on a delivered digest (Debian's ``spamassassin``).

A real ``digest run`` (the sample feed, five sample readers, the outbox transport)
writes the messages; ``spamassassin -t -L`` (test mode, local tests only: no DNS,
no network) scores one of them with HOME in ``tmp_path`` and Bayes and auto-learning
off: nothing is learnt, no user_prefs is written (SpamAssassin 4 still makes sure the
account's own ``~/.spamassassin`` exists, as an empty directory). The score and every
rule hit are in each assertion's message.

The control test puts back what MJML's ``<mj-preview>`` emits (white text, one pixel
high: ``HTML_FONT_LOW_CONTRAST``, +0.7) and checks the rule is then reported: the
first test cannot pass just because the report went unread.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support import REPO, run_digest, write_config

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        SPAMASSASSIN is None,
        reason="no spamassassin binary on PATH (Debian: apt-get install spamassassin)",
    ),
]

LOW_CONTRAST = "HTML_FONT_LOW_CONTRAST"
SECONDS = 120  # at most: the three digest commands together, or one SpamAssassin run
# What MJML's <mj-preview> renders right after <body>: white text on the white default.
MJ_PREVIEW = (
    '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
    'max-width:0px;opacity:0;overflow:hidden;">3 new comparisons this week: Claude 4 API'
    "… vs Codestral 2.0; Lumen Notebook vs Quill Agents</div>"
)
_ROW = re.compile(r"^ *(-?\d+(?:\.\d+)?) +([A-Z][A-Z0-9_]+)\b", re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    score: float  # X-Spam-Status score=
    hits: dict[str, float]  # rule → points, from the content analysis table

    def __str__(self) -> str:
        rules = ", ".join(f"{rule} {points:+.1f}" for rule, points in self.hits.items())
        return f"SpamAssassin score {self.score:.1f} ({rules or 'no rules hit'})"


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            pytest.fail(f"the test ran out of its {SECONDS} s")
        return left


def delivered_digest(tmp_path: Path, deadline: Deadline) -> bytes:
    """One .eml of a real ``digest run`` to the outbox."""
    config = write_config(tmp_path)
    env = {
        **os.environ,
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": "test-key",
        "COLUMNS": "200",
    }
    readers = str(REPO / "examples" / "subscribers.csv")
    for args in (
        ("init",),
        ("subscribers", "import", readers, "--consented", "--source", "sample list"),
        ("run",),
    ):
        done = run_digest(config, *args, env=env, timeout=deadline.left())
        assert done.returncode == 0, done.stdout + done.stderr
    emls = sorted((tmp_path / "outbox").glob("*/*.eml"))
    assert len(emls) == 5, emls
    return emls[0].read_bytes()


def spamassassin(message: bytes, home: Path, deadline: Deadline) -> Verdict:
    """``spamassassin -t -L`` on ``message``: its score and rule hits."""
    assert SPAMASSASSIN is not None
    home.mkdir(exist_ok=True)
    command = [SPAMASSASSIN, "-x", "-t", "-L", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0"]
    done = subprocess.run(
        command,
        input=message,
        capture_output=True,
        timeout=deadline.left(),
        env={**os.environ, "HOME": str(home)},
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    return parse_report(done.stdout)


def parse_report(output: bytes) -> Verdict:
    """The X-Spam-Status header (score, rule names) and the "Content analysis
    details" table (points per rule) of ``spamassassin -t`` output; both must agree."""
    checked = message_from_bytes(output, policy=policy.default)
    status = " ".join(str(checked.get("X-Spam-Status", "")).split())
    score = re.search(r"\bscore=(-?\d+(?:\.\d+)?)\b", status)
    tests = re.search(r"\btests=([\w, ]*?)(?= \w+=|$)", status)  # folded after commas
    assert score and tests, f"no score or tests in X-Spam-Status: {status!r}"
    text = output.decode("utf-8", "replace").replace("\r\n", "\n")
    _, found, table = text.partition("Content analysis details:")
    assert found, "no 'Content analysis details' in the output"
    rows = table.split("\n\n", 2)[1]  # after the total line, up to the blank line
    hits = {rule: float(points) for points, rule in _ROW.findall(rows)}
    names = tests[1].replace(" ", "")
    named = set() if names == "none" else set(names.split(","))
    assert named == set(hits), f"header {sorted(named)} vs table {sorted(hits)}"
    return Verdict(float(score[1]), hits)


def with_mj_preview(message: bytes) -> bytes:
    """``message`` with MJML's preview block put back at the top of the HTML body."""
    parsed = message_from_bytes(message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    html = parsed.get_body(("html",))
    assert html is not None
    content = html.get_content()
    changed, count = re.subn(r"(<body\b[^>]*>)", lambda m: m[1] + MJ_PREVIEW, content, count=1)
    assert count == 1, "no <body> in the HTML part"
    html.set_content(changed, subtype="html", cte="quoted-printable")
    return parsed.as_bytes(policy=policy.SMTP)


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return delivered_digest(tmp_path_factory.mktemp("digest"), Deadline(SECONDS))


def test_the_digest_has_no_low_contrast_text(delivered: bytes, tmp_path: Path) -> None:
    verdict = spamassassin(delivered, tmp_path / "home", Deadline(SECONDS))
    assert LOW_CONTRAST not in verdict.hits, str(verdict)


def test_the_check_sees_low_contrast_text_when_it_is_there(
    delivered: bytes, tmp_path: Path
) -> None:
    verdict = spamassassin(with_mj_preview(delivered), tmp_path / "home", Deadline(SECONDS))
    assert verdict.hits.get(LOW_CONTRAST, 0) > 0, str(verdict)
