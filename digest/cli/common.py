"""What every command shares: consoles, the config path, the runtime and exit codes.
The consoles (``out`` for results, ``err`` for logs, progress and messages) come
from :mod:`digest.cli.console`, which sets them up for a terminal or a file.

Exit codes: 0 success or nothing to do; 1 the job failed; 2 bad usage or
configuration; 3 interrupted or incomplete, resumable
(:data:`digest.delivery.sending.EXIT_INCOMPLETE`). Errors are one readable message, never a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup

from digest import config as config_mod
from digest.cli.console import err as err  # re-exported: every command prints through them
from digest.cli.console import out as out
from digest.config.runtime import Runtime
from digest.errors import ConfigError, DigestError, LeaseHeld
from subscribers.errors import SubscriberInputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


CONFIG_FLAGS = ("--config", "-c")


def config_to_front(args: list[str]) -> list[str]:
    """Move every ``--config X``, ``-c X`` and ``--config=X`` to the front of ``args`` so
    ``digest status --config X`` works like ``digest --config X status``. Only these exact
    tokens; nothing after ``--`` is touched."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 2
            continue
        if arg.startswith("--config="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class ConfigAnywhere(TyperGroup):
    """The root group: accepts ``--config`` after a subcommand (see :func:`config_to_front`)."""

    # ctx: Any, as typer vendors its own click (typer._click.core.Context)
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, config_to_front(list(args)))


class State:
    """The root options, for the command and the helper processes it starts."""

    config_path: Path | None = None
    log_format: str = "text"


def run_until_signalled(work: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(stop)``; SIGTERM (and a first Ctrl-C) set ``stop``: the command stops
    taking new work, lets in-flight sends finish and gives unsent rows back."""

    async def main() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, _stopper(stop, sig))
        return await work(stop)

    return asyncio.run(main())


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handle() -> None:
        if stop.is_set() and sig == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        err.print(f"{sig.name}: finishing the messages in flight, then stopping")
        stop.set()

    return handle


def fail(code: int, message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def runtime() -> Iterator[Runtime]:
    """Load the config and open the runtime; translate every error into an exit code."""
    try:
        rt = Runtime.open(config_mod.load(State.config_path))
    except ConfigError as exc:
        fail(EXIT_USAGE, f"configuration error: {exc}")
    try:
        yield rt
    except ConfigError as exc:
        fail(EXIT_USAGE, f"configuration error: {exc}")
    except SubscriberInputError as exc:
        fail(EXIT_USAGE, str(exc))
    except LeaseHeld as exc:
        out.print(f"Another process is working on this already: {exc}. Nothing to do.")
    except OperationalError as exc:
        fail(EXIT_FAILED, f"database error: {exc.orig}. Is [database] url right, the server up?")
    except DigestError as exc:
        fail(EXIT_FAILED, str(exc))
    finally:
        rt.close()
