"""One send run's options, report and shared state (see :mod:`digest.delivery.sending`)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from digest.delivery.group_commit import Holdings
from digest.delivery.ledger import Recipient, RetryPolicy
from digest.editions.segments import Skip
from digest.transports.base import Outcome, OutgoingMessage, SendResult, Transport

MessageFactory = Callable[[Sequence[Recipient], datetime], list[OutgoingMessage | Skip]]


@dataclass(frozen=True, slots=True)
class SendOptions:
    batch_size: int
    retry: RetryPolicy
    max_retry_wait: float
    lease_ttl: float = 120.0
    pause_error_share: float = 0.5  # pause the edition when this share of …
    pause_window: int = 200  # … the last answers (not counting deferrals) failed
    slow_down_after: int = 20  # consecutive deferred answers that make every worker wait
    max_slow_down: float = 60.0  # seconds: the longest such wait
    # Local delivery time: zone name → when its readers' rows are due (None = at once),
    # applied when the ledger is planned; None = every row due at once.
    local_due: Callable[[str], datetime | None] | None = None
    # Seconds after an unknown outcome before the provider is asked about it (its
    # message search may lag); only for transports that can ask (``reconcile``).
    settle_seconds: float = 5.0
    # The editorial revision the messages were rendered from
    # (:func:`digest.editions.shaping.revision_of`): planning refuses when the stored
    # one differs or the approval was withdrawn (:func:`digest.delivery.ledger.freeze`).
    content_revision: int | None = None


@dataclass(slots=True)
class SendReport:
    edition_key: str
    planned: int = 0
    recovered: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    throttled: int = 0  # times the run slowed down for a throttling server
    unknown: int = 0  # answers recorded ``unknown`` (maybe delivered)
    reconciled: int = 0  # unknown rows the provider's search found: sent
    resent: int = 0  # unknown rows queued again by [send] unknown_policy = "resend"
    unknown_skipped: int = 0  # unknown rows skipped by [send] unknown_policy = "skip"
    unknown_failed: int = 0  # unknown rows out of attempts
    lost: int = 0  # rows another sender took after this run's lease expired
    late: int = 0  # answers that arrived for lost rows (logged, not stored)
    pending_at_start: int = 0  # rows still to do when this run began
    pending: int = 0
    due_later: int = 0  # pending rows held for their readers' local delivery time
    finished: bool = False
    halted: bool = False  # the edition is paused, cancelled or awaits approval
    stopped_reason: str = ""
    interrupted: str = ""  # why the run stopped early (signal, lost lease): exit 3
    error: str = ""  # set when the transport failed: the run ends with exit 1
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def outstanding(self) -> int:
        """Rows still pending that this run was meant to send (not held for later)."""
        return 0 if self.finished or self.halted else max(self.pending - self.due_later, 0)

    @property
    def exit_code(self) -> int:
        """1 the transport failed (or the edition was paused for errors); 3 the run
        was interrupted or left rows pending (resumable: run it again); else 0."""
        if self.error:
            return 1
        return EXIT_INCOMPLETE if self.interrupted or self.outstanding else 0

    def then(self, later: SendReport) -> SendReport:
        """``later``'s state (a second run on the same edition), with the counts of
        both runs."""
        added = {name: getattr(self, name) + getattr(later, name) for name in _COUNTS}
        return dataclasses.replace(later, **added, planned=self.planned or later.planned)


# The SendReport fields a second run adds to (the rest are the edition's state).
_COUNTS = (
    "sent",
    "failed",
    "skipped",
    "retried",
    "throttled",
    "recovered",
    "unknown",
    "reconciled",
    "resent",
    "unknown_skipped",
    "unknown_failed",
    "lost",
    "late",
    "elapsed",
)


EXIT_INCOMPLETE = 3  # interrupted or incomplete, resumable: 'digest send' again


class Run:
    """State shared by the producer and the workers of one send run.

    Throttling slows the run down rather than failing readers: a ``Retry-After``
    from the transport, or ``slow_down_after`` deferrals in a row, make every
    worker wait (doubling up to ``max_slow_down`` while the deferrals go on).
    """

    def __init__(
        self,
        report: SendReport,
        options: SendOptions,
        *,
        edition_id: int,
        transport: Transport,
        build: MessageFactory,
        owner: str = "",
        exclusive: bool = True,
        stop: asyncio.Event | None = None,
        others_working: Callable[[], bool] | None = None,
    ) -> None:
        self.report = report
        self.options = options
        self.edition_id = edition_id
        self.transport = transport
        self.build = build
        self.owner = owner
        self.exclusive = exclusive
        self.stop_event = stop
        self.others_working = others_working  # helper processes still send (see sending)
        self.window: collections.deque[bool] = collections.deque(maxlen=options.pause_window)
        self.pause_note = ""  # set when the error share calls for pausing the edition
        self.streak = 0
        self.pause = 0.0
        self.not_before = 0.0  # time.monotonic() before which no worker sends
        self._stop = False
        self.started_at: datetime | None = None  # when the edition began sending
        self.holdings = Holdings(owner)

    def observe(self, results: Sequence[SendResult]) -> None:
        now = time.monotonic()
        for result in results:
            if result.outcome is not Outcome.deferred:
                self.window.append(result.outcome not in (Outcome.sent, Outcome.queued))
            if result.outcome in (Outcome.sent, Outcome.queued):
                self.streak, self.pause = 0, 0.0
            elif result.outcome is Outcome.deferred:
                self.streak += 1
                if result.retry_after:
                    self.not_before = max(self.not_before, now + result.retry_after)
        errors = sum(self.window)
        window = self.window.maxlen or 0
        if (
            not self.pause_note
            and len(self.window) == window
            and errors >= self.options.pause_error_share * window
        ):
            last = next((r.detail for r in reversed(results) if r.detail), "")
            self.pause_note = (
                f"paused automatically: {errors} of the last {window} messages failed "
                f"(last answer: {last or 'none'}); fix the cause, then 'digest resume'"
            )
            self.report.error = self.pause_note
            self.stop = True
        if self.streak >= self.options.slow_down_after:
            self.pause = min(max(self.pause * 2, 1.0), self.options.max_slow_down)
            self.not_before = max(self.not_before, now + self.pause)
            self.streak = 0
            self.report.throttled += 1

    @property
    def stop(self) -> bool:
        signalled = self.stop_event is not None and self.stop_event.is_set()
        return self._stop or signalled or self.holdings.lost > 0

    @stop.setter
    def stop(self, value: bool) -> None:
        self._stop = value

    def throttled_for(self) -> float:
        """Seconds every worker must still wait (0: none)."""
        return max(self.not_before - time.monotonic(), 0.0)

    async def wait_if_throttled(self) -> None:
        delay = self.throttled_for()
        if delay > 0:
            await asyncio.sleep(delay)
