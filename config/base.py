"""The base of every settings section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every section: typos are errors, not silently ignored keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
