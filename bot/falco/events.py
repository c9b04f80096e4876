"""Falco events as the relay sees them, and the budget it spends on them.

- ``FalcoEvent``: one falcosidekick event, normalised (priority lower case,
  output fields as text, Falco's ``<NA>`` read as missing).
- ``classify``: the falcosidekick test event and events below the minimum
  priority are counted and never posted (mutes: ``bot.falco.state``).
- ``event_key``: what makes two events "the same" (``aggregation_key``).
- ``Spending``: the homeserver's message budget (``RateBudget``, shared with
  the Alertmanager relay) as one batch or flush spends it, by importance.

Nothing here does I/O; times are epoch seconds passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from bot.outbox.budget import RateBudget
from config.falco import EVENT_FIELDS, FalcoPriority, FalcoSendBudget, FalcoSettings, priority_rank

# falcosidekick's POST /test sends this rule (outputs/client.go).
TEST_RULE = "Test rule"
# Falco prints this for a field with no value (e.g. k8s.pod.name outside Kubernetes).
NOT_AVAILABLE = "<NA>"

Outcome = Literal["posted", "aggregated", "folded", "muted", "below_min", "test"]
OUTCOMES: tuple[Outcome, ...] = ("posted", "aggregated", "folded", "muted", "below_min", "test")

# What one aggregate keeps, so a storm cannot grow memory or the store without bound.
MAX_OUTPUT_CHARS = 2_000
MAX_VALUE_CHARS = 256
MAX_NODES = 20
MAX_TAGS = 16

# A key: (field name, value) pairs in aggregation_key order; "" when missing.
Key = tuple[tuple[str, str], ...]


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FalcoEvent:
    rule: str
    priority: FalcoPriority
    output: str
    # Falco's own clock (the event's "time"), epoch seconds.
    time: float
    hostname: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    # output_fields as text; Falco's <NA> and JSON nulls are left out.
    fields: Mapping[str, str] = field(default_factory=dict)
    uuid: str | None = None

    def value(self, name: str) -> str:
        """A key field's value: the event's own fields by name, else an output field; "" if missing."""
        if name in EVENT_FIELDS:
            own = str(getattr(self, name))
            # Outside Kubernetes falcosidekick may leave hostname empty;
            # Falco's evt.hostname output field then still names the node.
            if name == "hostname" and not own:
                return self.fields.get("evt.hostname", "")
            return own
        return self.fields.get(name, "")

    @property
    def node(self) -> str:
        return self.value("hostname")


def field_text(value: Any) -> str | None:
    """An output field's value as text; None for a missing one (null, Falco's <NA>)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        # ints stay exact: evt.time is a 19-digit nanosecond count.
        text = repr(value) if isinstance(value, float) else str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return None if text in ("", NOT_AVAILABLE) else text


def event_key(event: FalcoEvent, spec: Iterable[str]) -> Key:
    """The event's key: per entry, the first of its "|"-separated fields that has a value."""
    pairs: list[tuple[str, str]] = []
    for entry in spec:
        names = entry.split("|")
        chosen = (names[0], "")
        for name in names:
            value = event.value(name)
            if value:
                chosen = (name, clip_chars(value, MAX_VALUE_CHARS))
                break
        pairs.append(chosen)
    return tuple(pairs)


def key_text(key: Key) -> str:
    """The key's fields other than the rule, as ``name=value`` words (for messages and mute tallies)."""
    return " ".join(f"{name}={value}" for name, value in key if value and name != "rule")


def clip_chars(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mute_key(rule: str) -> str:
    """Rules are matched for mutes case-insensitively and with white space collapsed."""
    return " ".join(rule.split()).casefold()


def classify(event: FalcoEvent, settings: FalcoSettings) -> Outcome | None:
    """``test`` or ``below_min`` when the event is only counted, else None (mutes are checked later)."""
    if event.rule == TEST_RULE:
        return "test"
    if priority_rank(event.priority) < priority_rank(settings.min_priority):
        return "below_min"
    return None


# -- the send budget ----------------------------------------------------------------


class Tier(IntEnum):
    """How important a message is; a lower tier may spend the bucket further down."""

    URGENT = 0  # a new kind of event at a mentioning priority
    NEW = 1  # any other new kind of event: its own message, or a new digest line
    UPDATE = 2  # an updated count of something already shown


class Spending:
    """The budget as one batch or flush sees it: the bucket now, minus what is queued ahead."""

    def __init__(self, budget: RateBudget, settings: FalcoSendBudget, ahead: int, now: float) -> None:
        self._budget = budget
        self._floors = {
            Tier.URGENT: settings.reserve,
            Tier.NEW: settings.reserve + 1,
            Tier.UPDATE: max(settings.edit_floor, settings.reserve + 1),
        }
        self.ahead = ahead
        self.now = now

    def left(self) -> float:
        """Tokens left once everything queued is sent (negative when the queue is over budget)."""
        return self._budget.tokens(self.now) - self.ahead

    def allows(self, tier: Tier) -> bool:
        # Whole tokens only: a send must leave at least the tier's floor.
        return math.floor(self.left() + 1e-9) - 1 >= self._floors[tier]

    def spend(self, tier: Tier) -> bool:
        """Take one event's worth if the tier may; False leaves the budget as it was."""
        if not self.allows(tier):
            return False
        self.ahead += 1
        return True
