"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FEED = REPO / "examples" / "feed.json"
# Headers every digest message carries exactly once (issue 2, point 8).
REQUIRED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


def write_config(directory: Path, **sections: dict[str, Any]) -> Path:
    """Write a config.toml into ``directory``: the defaults below, updated per section."""
    base: dict[str, dict[str, Any]] = {
        "site": {
            "name": "Test Weekly",
            "base_url": "https://digest.test.example",
            "postal_address": "1 Test Street, 10115 Berlin",
            "timezone": "Europe/Berlin",
        },
        "database": {"url": "sqlite:///digest.db"},
        "feed": {"kind": "files", "path": str(SAMPLE_FEED)},
        "email": {"from": "Test Weekly <digest@test.example>"},
        "transport": {"kind": "outbox", "path": "outbox"},
    }
    for name, values in sections.items():
        if "kind" in values:  # another adapter kind: its own table, not a merge
            base[name] = dict(values)
        else:
            base.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, table in base.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path = directory / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_digest(
    config: Path, *args: str, env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``digest --config CONFIG ARGS`` in a subprocess with ``env``; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
