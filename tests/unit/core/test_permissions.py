"""Permission rules: allow-lists, power levels and room v12 creators."""

from __future__ import annotations

import math

import pytest

from bot.permissions import (
    RoomPowerFacts,
    creators_are_privileged,
    decide,
    effective_power_level,
    matches_user,
)
from config.settings import PermissionRule

ALICE = "@alice:example.org"
MALLORY = "@mallory:evil.example"


def test_empty_rule_lets_everyone_in_the_room_run_it() -> None:
    """No users and no power level means the command is open to the room."""
    assert decide(MALLORY, PermissionRule(), None).allowed


def test_user_list_admits_listed_users_only() -> None:
    """With a user list, only listed users pass."""
    rule = PermissionRule(users=[ALICE])
    assert decide(ALICE, rule, None).allowed
    assert not decide(MALLORY, rule, None).allowed


def test_user_globs_match_a_whole_server() -> None:
    """`@*:example.org` admits that server's users and nobody else's."""
    assert matches_user(ALICE, ["@*:example.org"])
    assert not matches_user(MALLORY, ["@*:example.org"])
    assert not matches_user("@alice:example.org.evil", ["@*:example.org"])


def test_power_level_rule_needs_the_level() -> None:
    """A minimum power level admits users at or above it and refuses the rest."""
    rule = PermissionRule(min_power_level=50)
    assert decide(ALICE, rule, 50).allowed
    assert not decide(ALICE, rule, 49).allowed
    assert not decide(ALICE, rule, None).allowed


def test_either_list_or_level_suffices_when_both_are_set() -> None:
    """Listed users pass regardless of level; unlisted users pass on level."""
    rule = PermissionRule(users=[ALICE], min_power_level=100)
    assert decide(ALICE, rule, 0).allowed
    assert decide(MALLORY, rule, 100).allowed
    assert not decide(MALLORY, rule, 99).allowed


def test_refusal_does_not_reveal_who_is_allowed() -> None:
    """The refusal reason names neither the allowed users nor the level."""
    decision = decide(MALLORY, PermissionRule(users=[ALICE], min_power_level=75), 0)
    assert not decision.allowed
    assert ALICE not in decision.reason and "75" not in decision.reason


@pytest.mark.parametrize(
    ("version", "privileged"),
    [("1", False), ("10", False), ("11", False), ("12", True), ("13", True), ("org.matrix.hydra.11", True)],
)
def test_creators_are_privileged_from_room_version_12(version: str, privileged: bool) -> None:
    """Only room versions 12+ (and the hydra preview) give creators infinite power."""
    assert creators_are_privileged(version) is privileged


def test_v12_creator_counts_as_highest_though_not_in_power_levels() -> None:
    """A v12 room's creator has infinite power even with no power-level entry."""
    facts = RoomPowerFacts(room_version="12", creators=frozenset({ALICE}), users={}, users_default=0)
    assert effective_power_level(ALICE, facts) == math.inf
    assert decide(ALICE, PermissionRule(min_power_level=100), effective_power_level(ALICE, facts)).allowed


def test_v11_creator_has_only_their_listed_level() -> None:
    """In a v11 room a creator is just a user with their power-level entry."""
    facts = RoomPowerFacts(room_version="11", creators=frozenset({ALICE}), users={ALICE: 50}, users_default=0)
    assert effective_power_level(ALICE, facts) == 50


def test_unlisted_user_gets_the_room_default() -> None:
    """Users without an entry get users_default."""
    facts = RoomPowerFacts(room_version="12", creators=frozenset({ALICE}), users={}, users_default=10)
    assert effective_power_level(MALLORY, facts) == 10
