"""``digest api-keys create|list|revoke``: the keys of the HTTP API (``/api/v1``).

``create`` prints the key once (only its SHA-256 is stored); ``list`` shows
names, prefixes, scopes and use, never a key; ``revoke`` stops a key at once.
Creating and revoking are recorded in the audit log (actor ``cli:<login>``). Bad
input (an unknown scope, a taken name, no such key) is one line and exit 2.
See docs/API.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape
from rich.table import Table

from digest.cli.common import EXIT_USAGE, err, fail, out, runtime
from digest.desk import api_keys
from digest.store import audit
from digest.store.db import ensure_current, session_scope

api_keys_app = typer.Typer(help="Manage the keys of the HTTP API (/api/v1).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(api_keys_app, name="api-keys")


@api_keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'crm-sync'.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help=f"Comma-separated or repeated; one or more of: {', '.join(api_keys.SCOPES)}.",
        ),
    ],
) -> None:
    """Create a key and print it once: it is not stored and cannot be shown again."""
    with runtime() as rt:
        ensure_current(rt.engine)
        try:
            with session_scope(rt.engine) as session:
                made = api_keys.create(
                    session, name=name, scopes=scope, created_by=audit.cli_actor(), now=rt.now()
                )
        except api_keys.ApiKeyError as exc:
            fail(EXIT_USAGE, str(exc))
    row = made.row
    out.print(
        f"Created API key {escape(row.name)} (prefix {row.prefix}) with scopes "
        f"{escape(', '.join(api_keys.scopes_of(row)))}:"
    )
    out.print(f"\n  {escape(made.key)}\n", highlight=False, soft_wrap=True)
    err.print(
        "[bold yellow]Copy it now:[/] this key is not shown again (only its hash is stored). "
        "Send it as 'Authorization: Bearer <key>'."
    )


@api_keys_app.command("list")
def list_() -> None:
    """Every key: name, prefix, scopes, created, last used, revoked. Never the key."""
    with runtime() as rt:
        ensure_current(rt.engine)
        with session_scope(rt.engine) as session:
            rows = list(api_keys.all_keys(session))
        tz = rt.config.site.tz
    if not rows:
        out.print("No API keys yet: 'digest api-keys create NAME --scope …' makes one.")
        return
    table = Table("name", "prefix", "scopes", "created", "last used", "revoked")
    for k in rows:
        table.add_row(
            escape(k.name),
            k.prefix,
            escape(", ".join(api_keys.scopes_of(k))),
            f"{_when(k.created_at, tz)} by {escape(k.created_by)}",
            _when(k.last_used_at, tz) or "never",
            _when(k.revoked_at, tz) or "",
        )
    out.print(table)


@api_keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name or prefix.")],
) -> None:
    """Revoke a key: every request with it is refused from now on (401)."""
    with runtime() as rt:
        ensure_current(rt.engine)
        try:
            with session_scope(rt.engine) as session:
                row = api_keys.revoke(
                    session, name_or_prefix=name, by=audit.cli_actor(), now=rt.now()
                )
        except api_keys.ApiKeyError as exc:
            fail(EXIT_USAGE, str(exc))
    out.print(f"Revoked API key {escape(row.name)} (prefix {row.prefix}).")


def _when(moment: datetime | None, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%Y-%m-%d %H:%M}" if moment is not None else ""
