"""Who may run what: pure rules, and ``Authorizer``, which reads power levels only when a rule needs one.

Room version 12 made the room's creators all-powerful without listing them
in ``m.room.power_levels``; a check that only reads power levels would lock
out the person who made the room, so creators are read from ``m.room.create``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from config.settings import PermissionRule

# Room versions before 12 keep creators in the power-level map like anyone.
_FIRST_VERSION_WITH_PRIVILEGED_CREATORS = 12


@dataclass(frozen=True)
class RoomPowerFacts:
    """What the room's state says about power."""

    room_version: str = "1"
    creators: frozenset[str] = frozenset()
    users: Mapping[str, int] = field(default_factory=dict)
    users_default: int = 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def creators_are_privileged(room_version: str) -> bool:
    """True for room versions (12 and later) where creators have infinite power."""
    try:
        return int(room_version) >= _FIRST_VERSION_WITH_PRIVILEGED_CREATORS
    except ValueError:
        # Unstable versions such as "org.matrix.hydra.11" are the v12 rules.
        return "hydra" in room_version


def effective_power_level(user_id: str, facts: RoomPowerFacts) -> float:
    if user_id in facts.creators and creators_are_privileged(facts.room_version):
        return math.inf
    return facts.users.get(user_id, facts.users_default)


def matches_user(user_id: str, patterns: Iterable[str]) -> bool:
    """Exact ids or globs (``@*:example.org``); matching is case-sensitive like Matrix ids."""
    return any(fnmatchcase(user_id, pattern) for pattern in patterns)


def decide(user_id: str, rule: PermissionRule, power_level: float | None) -> Decision:
    """Apply a rule: open when it sets nothing, else the user list OR the power level suffices.

    ``power_level`` is None when it was not looked up (the rule needs none).
    The refusal reason never names who would be allowed.
    """
    if not rule.users and rule.min_power_level is None:
        return Decision(True)
    if rule.users and matches_user(user_id, rule.users):
        return Decision(True)
    if rule.min_power_level is not None and power_level is not None and power_level >= rule.min_power_level:
        return Decision(True)
    return Decision(False, "you are not allowed to run this command in this room")


# The room's power facts (``bot.matrix.power.RoomPowerLookup.power_facts``).
PowerFactsLookup = Callable[[str], Awaitable[RoomPowerFacts]]


async def _no_power_facts(room_id: str) -> RoomPowerFacts:
    return RoomPowerFacts()


class Authorizer:
    """Applies a ``PermissionRule`` to a user in a room, reading power levels only when needed.

    Without ``power_facts`` (tests, tools) every room has the default facts:
    a rule that needs a power level then finds nobody above 0.
    """

    def __init__(self, power_facts: PowerFactsLookup | None = None) -> None:
        self._power_facts = power_facts or _no_power_facts

    async def check(self, user_id: str, room_id: str, rule: PermissionRule) -> Decision:
        level: float | None = None
        if rule.min_power_level is not None:
            level = effective_power_level(user_id, await self._power_facts(room_id))
        return decide(user_id, rule, level)
