"""The base of every settings section, and what several sections share (permission rule, room ids)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


def check_room_ids(rooms: list[str]) -> list[str]:
    """The rooms, if each is a room id (``!…``); the settings never resolve aliases."""
    for room in rooms:
        if not room.startswith("!") or any(ch.isspace() for ch in room):
            raise ValueError("each room must be a room id (!…); aliases are not resolved here")
    return rooms


class Section(BaseModel):
    """Base for every section: typos are errors, not silently ignored keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PermissionRule(Section):
    """Who may run a command, in a room the bot serves.

    Empty lists and no power level mean: anyone in the room. When both are
    set, either one suffices.
    """

    users: list[str] = Field(default_factory=list)
    min_power_level: int | None = Field(default=None, ge=0)
    # Also require the command to arrive encrypted from a device its sender
    # has cross-signed: a stolen access token alone (a new, unsigned device,
    # or plain unencrypted requests) can then not run it.
    require_cross_signed_device: bool = False

    @property
    def is_open(self) -> bool:
        """True when the rule sets nothing, i.e. lets anyone in the room through."""
        return not self.users and self.min_power_level is None
