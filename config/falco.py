"""Settings of the Falco relay (falcosidekick's webhook output → the room).

Every field has a default, so an empty ``falco`` section validates; the relay
is off until ``enabled: true``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator, model_validator

from config.base import Section, check_room_ids
from config.durations import Duration

FalcoPriority = Literal[
    "emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"
]
# Lowest first: a priority's rank is its index here.
PRIORITIES: tuple[FalcoPriority, ...] = tuple(reversed(get_args(FalcoPriority)))
# Falco itself accepts "info" for "informational" in rules and options.
_ALIASES = {"info": "informational"}
_MENTIONED: tuple[FalcoPriority, ...] = ("critical", "alert", "emergency")
# The top-level fields of a falcosidekick event a key may name; any other
# name is looked up in the event's output_fields.
EVENT_FIELDS = ("rule", "priority", "hostname", "source")


def normalize_priority(value: object) -> object:
    """``"Warning"`` → ``"warning"``, ``"Info"`` → ``"informational"``; anything else unchanged."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _ALIASES.get(lowered, lowered)
    return value


Priority = Annotated[FalcoPriority, BeforeValidator(normalize_priority)]


def priority_rank(priority: FalcoPriority) -> int:
    """0 for debug … 7 for emergency."""
    return PRIORITIES.index(priority)


class FalcoSendBudget(Section):
    """The bot user's message rate limit on the homeserver, as the Falco relay spends it.

    Synapse's defaults (``rc_message``: burst 10, 0.2/s, per user and shared
    by every room; the bot's own joins count too) are what a production
    homeserver enforces for a bot. The relay models them as a token bucket fed
    with what the outbox really sent (every feature's messages), and spends
    tokens by importance, never the last ``reserve`` of them (a margin for
    what the model cannot see, command replies and other features):

    - a new kind of event at a mentioning priority: down to ``reserve``;
    - any other new kind (its own message, or a new line in the room's
      digest): down to ``reserve + 1``, so a critical kind still finds a token;
    - an updated count ("x37") of a message already shown: down to
      ``edit_floor``, so a new kind arriving during a storm is posted at once.
    """

    burst: int = Field(default=10, ge=2, le=100_000)
    per_minute: float = Field(default=12.0, gt=0, le=1_000_000)
    reserve: int = Field(default=1, ge=0, le=100_000)
    edit_floor: int = Field(default=5, ge=1, le=100_000)

    @model_validator(mode="after")
    def _floors_below_burst(self) -> FalcoSendBudget:
        if self.reserve + 2 > self.burst:
            raise ValueError(
                "falco.send_budget.reserve must be at most burst - 2, or no new kind could be posted"
            )
        if not self.reserve < self.edit_floor < self.burst:
            raise ValueError("falco.send_budget.edit_floor must be above reserve and below burst")
        return self


class FalcoSettings(Section):
    """The falcosidekick webhook relay: priorities, rooms, aggregation, storms and mutes."""

    enabled: bool = False
    # Events below this priority are counted in /metrics, never posted.
    min_priority: Priority = "warning"
    # Rooms per priority; a priority not listed goes to default_rooms. Every
    # priority from min_priority up needs a room (checked when enabled).
    rooms_by_priority: dict[Priority, list[str]] = Field(default_factory=dict)
    default_rooms: list[str] = Field(default_factory=list)
    # Priorities whose first message of a kind mentions the room (@room). The
    # bot needs the room's "notifications.room" power level (50 by default).
    mention_room_priorities: list[Priority] = Field(default_factory=lambda: list(_MENTIONED))
    # What makes two events "the same": each entry names a field, or several
    # separated by "|" (the first one present wins). "rule", "priority",
    # "hostname" and "source" are the event's own fields; any other name is an
    # output field (k8s.ns.name, proc.name, …). Must include "rule".
    aggregation_key: list[str] = Field(
        default_factory=lambda: ["rule", "k8s.ns.name", "k8s.pod.name|container.id", "proc.name"],
        min_length=1,
        max_length=16,
    )
    # Events of one key within this many seconds of its first one share one
    # message, edited in place; the next one after that starts a new message.
    window_s: float = Field(default=300.0, ge=1, le=86_400)
    # A message's count is edited at most this often (the budget may make it
    # rarer); its last count is always shown in the end.
    edit_interval_s: float = Field(default=10.0, ge=0, le=3_600)
    send_budget: FalcoSendBudget = Field(default_factory=FalcoSendBudget)
    # The longest `!falco mute` accepted.
    mute_max_duration: Duration = timedelta(days=7)
    # A directory with falco_* templates (NAME.txt.j2 + NAME.html.j2) that
    # replace the shipped ones.
    templates_dir: Path | None = None

    @field_validator("default_rooms")
    @classmethod
    def _default_room_ids(cls, value: list[str]) -> list[str]:
        return check_room_ids(value)

    @field_validator("rooms_by_priority")
    @classmethod
    def _priority_room_ids(cls, value: dict[FalcoPriority, list[str]]) -> dict[FalcoPriority, list[str]]:
        for rooms in value.values():
            check_room_ids(rooms)
        return value

    @field_validator("aggregation_key")
    @classmethod
    def _key_shape(cls, value: list[str]) -> list[str]:
        for entry in value:
            names = entry.split("|")
            if any(not name.strip() or any(ch.isspace() for ch in name.strip()) for name in names):
                raise ValueError("each entry is a field name, or names separated by |, without spaces")
        if "rule" not in value:
            # A message is about one rule; mutes and the counters are by rule too.
            raise ValueError("must include rule")
        return [entry.replace(" ", "") for entry in value]

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("must be an existing directory")
        return value

    @model_validator(mode="after")
    def _somewhere_to_post(self) -> FalcoSettings:
        if not self.enabled:
            return self
        floor = priority_rank(self.min_priority)
        homeless = [p for p in PRIORITIES[floor:] if not self.rooms_for(p)]
        if homeless:
            raise ValueError(
                "falco.enabled needs a room for every priority from min_priority up "
                f"(default_rooms, or rooms_by_priority for: {', '.join(homeless)})"
            )
        return self

    def rooms_for(self, priority: FalcoPriority) -> list[str]:
        """The rooms an event of this priority goes to (without duplicates)."""
        return list(dict.fromkeys(self.rooms_by_priority.get(priority) or self.default_rooms))
