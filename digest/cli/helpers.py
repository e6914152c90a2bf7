"""``digest send --workers N``: helper processes, reaped and watched; exit codes.

The parent starts ``N - 1`` helpers (``digest worker --exit-when-idle``) and sends
beside them. One thread per helper waits for it, so a helper that dies (SIGKILL,
the OOM killer) is reaped at once: no zombie keeps looking alive to
``os.kill(pid, 0)``, and the parent takes its rows over (its claims are released,
its rows in ``sending`` become ``unknown`` and are resolved). The parent keeps
working while helpers run, checks again after they end, and finishes what is left
itself. SIGTERM is passed on to the helpers. On a terminal the helpers' log lines
come through this process (:func:`_relay`), so they go above its progress bar.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO

import typer
from rich.markup import escape
from rich.text import Text

from digest.cli import console
from digest.cli.common import State, err
from digest.config.runtime import Runtime
from digest.delivery.sending import EXIT_INCOMPLETE, SendReport
from digest.store.models import Edition


class Helpers:
    """``count`` helper senders for one ``digest send``; a context manager."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Helpers:
        command = [sys.executable, "-m", "digest", "--log-format", State.log_format]
        if State.config_path is not None:
            command += ["--config", str(State.config_path)]
        relay = console.live()  # a helper writing to the terminal would break the bar
        for _ in range(self.count):
            proc = subprocess.Popen(  # noqa: S603  (our own command, no shell)
                [*command, "worker", "--exit-when-idle"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE if relay else None,
            )
            self.procs.append(proc)
            if proc.stderr is not None:
                threading.Thread(target=_relay, args=(proc.stderr,), daemon=True).start()
            threading.Thread(target=proc.wait, daemon=True, name=f"reap-{proc.pid}").start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def alive(self) -> bool:
        """True while any helper runs (the reaper threads collect the dead ones)."""
        return any(p.poll() is None for p in self.procs)

    def terminate(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def notes(self) -> list[str]:
        """One line per helper that did not end well."""
        out = []
        for proc in self.procs:
            code = proc.poll()
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                out.append(
                    f"helper process {proc.pid} was killed ({name}); its deliveries were "
                    "taken over by the other senders"
                )
            elif code:
                out.append(f"helper process {proc.pid} exited with code {code}")
        return out

    async def send_with(
        self,
        rt: Runtime,
        edition: Edition,
        *,
        progress: Callable[[SendReport], None] | None,
        stop: asyncio.Event,
    ) -> SendReport:
        """Send beside the helpers; when they have all ended, finish what is left."""
        from digest import pipeline

        forward = asyncio.create_task(_forward(stop, self))
        try:
            others = self.alive if self.procs else None
            report = await pipeline.send(
                rt, edition=edition, progress=progress, stop=stop, others_working=others
            )
            # A helper that died after this run last looked leaves rows behind: take
            # them over now that every helper has ended (at most twice: a second
            # pass that leaves rows pending is reported, exit 3).
            for _ in range(2):
                if stop.is_set() or not self.procs or self.alive():
                    break
                if report.error or report.lost or not report.outstanding:
                    break
                found = pipeline.find_edition(rt, edition.key)
                if found is None:
                    break
                report = report.then(await pipeline.send(rt, edition=found, stop=stop))
            return report
        finally:
            forward.cancel()


def _relay(stream: IO[bytes]) -> None:
    """Print a helper's stderr lines (plain: its stderr is a pipe) on this terminal."""
    with stream:
        for raw in stream:
            err.print(Text(raw.decode("utf-8", "replace").rstrip()), highlight=False)


async def _forward(stop: asyncio.Event, helpers: Helpers) -> None:
    await stop.wait()
    helpers.terminate()


def finish(report: SendReport) -> None:
    """Exit with the report's code; an incomplete run says how to resume."""
    code = report.exit_code
    if code == EXIT_INCOMPLETE:
        why = report.interrupted or report.stopped_reason or "the run ended early"
        err.print(
            f"[bold yellow]incomplete:[/] {report.outstanding} deliveries of edition "
            f"{report.edition_key} are still pending ({escape(why)}). Run 'digest send' "
            "again to finish them: nobody is sent a second copy.",
            highlight=False,
        )
    if code:
        raise typer.Exit(code)
