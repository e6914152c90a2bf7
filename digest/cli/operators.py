"""``digest operators add|list|set-role|disable|enable|reset-totp`` and ``digest audit``.

Operators sign in to the desk with email, password and a TOTP code
(:mod:`digest.desk.operators`); once the first one exists the shared
``DIGEST_ADMIN_PASSWORD`` no longer signs in. A password is never an argument: it
is asked twice (hidden), or read from standard input with ``--password-stdin``.
Every change is recorded in the audit log (actor ``cli:<login>``). Bad input (a
short password, an unknown role or operator, the last enabled admin) is one line
and exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from digest.cli.common import EXIT_USAGE, fail, out, runtime
from digest.desk import operators
from digest.store import audit
from digest.store.db import ensure_current, session_scope
from digest.store.desk_models import Operator

operators_app = typer.Typer(help="Manage the operators of the desk (/admin).", no_args_is_help=True)
Email = Annotated[str, typer.Argument(help="The operator's email address.")]
ROLE_HELP = "viewer (looks), editor (edits, tests, approves, readers) or admin (also operators)."


def register(app: typer.Typer) -> None:
    app.add_typer(operators_app, name="operators")
    app.command("audit")(audit_log)


def _change(
    email: str, change: Callable[[Session, Operator, dict[str, Any]], None], done: str
) -> None:
    with runtime() as rt:
        ensure_current(rt.engine)
        how = {"actor": audit.cli_actor(), "via": "cli", "now": rt.now()}
        try:
            with session_scope(rt.engine) as session:
                op = operators.named(session, email)
                change(session, op, how)
                address = op.email
        except operators.OperatorError as exc:
            fail(EXIT_USAGE, str(exc))
    out.print(f"{escape(address)}: {done}.")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return entered


@operators_app.command("add")
def add(
    email: Email,
    role: Annotated[str, typer.Option(help=ROLE_HELP)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add an operator. They set up their authenticator app at their first sign-in."""
    try:
        operators.check_role(role)
        operators.normalise_email(email)
    except operators.OperatorError as exc:
        fail(EXIT_USAGE, str(exc))
    password = _password(password_stdin)
    with runtime() as rt:
        ensure_current(rt.engine)
        try:
            with session_scope(rt.engine) as session:
                op = operators.add(
                    session, email=email, role=role, password=password,
                    actor=audit.cli_actor(), via="cli", now=rt.now(),
                )  # fmt: skip
                address = op.email
        except operators.OperatorError as exc:
            fail(EXIT_USAGE, str(exc))
    out.print(
        f"Added operator {escape(address)} ({role}). At their first sign-in at /admin/login "
        "they set up an authenticator app; the shared DIGEST_ADMIN_PASSWORD no longer signs in."
    )


def _when(moment: datetime | None, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%Y-%m-%d %H:%M %Z}" if moment is not None else ""


@operators_app.command("list")
def list_() -> None:
    """Every operator: role, authenticator, last sign-in, disabled."""
    with runtime() as rt:
        ensure_current(rt.engine)
        with session_scope(rt.engine) as session:
            rows = list(operators.all_operators(session))
        tz = rt.config.site.tz
    if not rows:
        out.print("No operators yet: 'digest operators add EMAIL --role admin' adds the first.")
        return
    table = Table("email", "role", "authenticator", "last sign-in", "disabled")
    for op in rows:
        totp = "enrolled" if op.totp_confirmed_at else "not set up"
        last = _when(op.last_sign_in_at, tz) or "never"
        table.add_row(escape(op.email), op.role, totp, last, _when(op.disabled_at, tz))
    out.print(table)


@operators_app.command("set-role")
def set_role(email: Email, role: Annotated[str, typer.Argument(help=ROLE_HELP)]) -> None:
    """Change an operator's role; it applies from their next request."""
    _change(email, lambda s, op, how: operators.set_role(s, op, role, **how), f"role {role}")


@operators_app.command("disable")
def disable(email: Email) -> None:
    """Disable an operator: they cannot sign in, and their sessions end now."""
    _change(email, lambda s, op, how: operators.disable(s, op, **how), "disabled")


@operators_app.command("enable")
def enable(email: Email) -> None:
    """Enable a disabled operator again."""
    _change(email, lambda s, op, how: operators.enable(s, op, **how), "enabled")


@operators_app.command("reset-totp")
def reset_totp(email: Email) -> None:
    """Forget an operator's authenticator: they set up a new one at their next sign-in."""
    done = "authenticator reset; they set up a new one at their next sign-in"
    _change(email, lambda s, op, how: operators.reset_totp(s, op, **how), done)


def audit_log(
    limit: Annotated[int, typer.Option(min=1, help="How many entries, newest first.")] = 50,
    target: Annotated[str, typer.Option(help="Only this target, e.g. edition:2026-W48.")] = "",
    action: Annotated[str, typer.Option(help="Only this action, e.g. operator.role.")] = "",
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write the entries to this CSV file instead.")
    ] = None,
) -> None:
    """The audit log: who did what, when, through what (desk, cli, api), on what."""
    with runtime() as rt:
        ensure_current(rt.engine)
        with Session(rt.engine) as session:
            events = list(audit.recent(session, limit=limit, target=target, action=action))
        tz = rt.config.site.tz
    if csv is not None:
        csv.write_text(audit.to_csv(events), encoding="utf-8", newline="")
        out.print(f"Wrote {len(events)} entries to {escape(str(csv))}.")
        return
    if not events:
        out.print(
            "Nothing in the audit log" + (" matching these filters." if target or action else ".")
        )
        return
    for e in events:
        where = f" {escape(e.target)}" if e.target else ""
        detail = f": {escape(e.detail)}" if e.detail else ""
        out.print(
            f"{_when(e.at, tz)}  {escape(e.actor)} ({e.via})  {escape(e.action)}{where}{detail}",
            highlight=False,
        )
