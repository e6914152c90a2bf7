"""The base of every ``config.toml`` section model (:mod:`digest.config.sections`,
:mod:`digest.config.web_sections`): strict, closed, read-only."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A ``config.toml`` table: strict types, unknown keys refused, read-only."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def string_list() -> Any:
    """A list of strings in the file, a tuple here (TOML has no tuples: not strict)."""
    return Field(default=(), strict=False)
