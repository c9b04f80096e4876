"""The leader election's decisions (bot.ha.election), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.ha.election import (
    Decision,
    LeaseRecord,
    Observed,
    Term,
    Verb,
    decide,
    must_step_down,
    observe,
    released,
    still_ours,
)

WALL = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ME, OTHER = "readybot-0", "readybot-1"


def held(holder: str, transitions: int = 3, *, renewed: datetime = WALL) -> LeaseRecord:
    return LeaseRecord(holder, 15, WALL - timedelta(minutes=5), renewed, transitions)


def written(decision: Decision) -> LeaseRecord:
    assert decision.record is not None
    return decision.record


def decide_at(observed: Observed | None, now: float, *, term: Term | None = None, floor: int = 0) -> Decision:
    return decide(
        identity=ME, duration_s=15, observed=observed, term=term, now=now, wall_now=WALL, floor=floor
    )


def test_no_lease_is_created_held_by_us_above_the_store_floor() -> None:
    """Without a Lease we create one held by us, its transitions one above the store's token."""
    decision = decide_at(None, 100.0, floor=7)
    assert decision.verb is Verb.CREATE
    assert decision.record == LeaseRecord(ME, 15, WALL, WALL, 8)


def test_a_live_lease_of_another_replica_is_waited_on() -> None:
    """Another holder seen changing less than a lease duration ago: we wait."""
    observed = observe(None, held(OTHER), "10", now=100.0)
    assert decide_at(observed, 114.9).verb is Verb.WAIT


def test_expiry_counts_from_when_we_saw_the_record_change_not_its_timestamps() -> None:
    """A renewTime far in the past (skewed clock) does not expire a record we just saw change."""
    stale_stamp = held(OTHER, renewed=WALL - timedelta(hours=3))
    observed = observe(None, stale_stamp, "10", now=100.0)
    assert decide_at(observed, 101.0).verb is Verb.WAIT


def test_an_unchanged_record_expires_a_duration_after_it_was_first_seen() -> None:
    """Reading the same record again keeps its change time: after 15 s without a change we take it."""
    first = observe(None, held(OTHER), "10", now=100.0)
    again = observe(first, held(OTHER), "10", now=110.0)
    assert again.changed_at == 100.0
    decision = decide_at(again, 115.0)
    assert decision.verb is Verb.TAKE
    assert written(decision).holder == ME
    assert written(decision).transitions == 4


def test_a_renewal_by_the_holder_restarts_the_expiry() -> None:
    """A changed renewTime is a renewal: the lease lives another duration from when we saw it."""
    first = observe(None, held(OTHER), "10", now=100.0)
    renewed = observe(first, held(OTHER, renewed=WALL + timedelta(seconds=2)), "11", now=112.0)
    assert decide_at(renewed, 120.0).verb is Verb.WAIT


def test_a_released_lease_is_taken_at_once() -> None:
    """An empty holder (a leader stepped down cleanly) is taken without waiting for expiry."""
    observed = observe(None, released(held(OTHER)), "12", now=100.0)
    decision = decide_at(observed, 100.0)
    assert decision.verb is Verb.TAKE
    assert written(decision).transitions == 4


def test_our_own_name_from_an_earlier_process_still_has_to_expire() -> None:
    """A restarted pod keeps its name; the Lease under that name may be a paused old process, so we wait."""
    observed = observe(None, held(ME), "10", now=100.0)
    assert decide_at(observed, 101.0).verb is Verb.WAIT
    assert decide_at(observed, 115.0).verb is Verb.TAKE


def test_the_leader_renews_keeping_its_term() -> None:
    """Holding the Lease in our term: renew with a new renewTime, same acquireTime and transitions."""
    record = held(ME, transitions=5)
    observed = observe(None, record, "20", now=100.0)
    decision = decide_at(observed, 300.0, term=Term(5, WALL))
    assert decision.verb is Verb.RENEW
    assert written(decision).renew_time == WALL
    assert written(decision).acquire_time == record.acquire_time
    assert written(decision).transitions == 5


def test_a_token_never_falls_to_the_store_floor() -> None:
    """A recreated Lease (transitions back at 0) still yields a token above the store's last one."""
    observed = observe(None, released(held(OTHER, transitions=0)), "2", now=100.0)
    decision = decide_at(observed, 100.0, floor=9)
    assert written(decision).transitions == 10


@pytest.mark.parametrize(
    ("record", "ours"),
    [(held(ME, 5), True), (held(OTHER, 6), False), (held(ME, 6), False), (released(held(ME, 5)), False)],
)
def test_still_ours_only_for_our_name_in_our_term(record: LeaseRecord, ours: bool) -> None:
    """The Lease is ours only with our name and our term's transitions (a new term of our name is not)."""
    observed = observe(None, record, "1", now=0.0)
    assert still_ours(observed, identity=ME, term=Term(5, WALL)) is ours


@pytest.mark.parametrize(("since_renewal", "down"), [(9.9, False), (10.0, True), (30.0, True)])
def test_a_leader_steps_down_at_the_renew_deadline(since_renewal: float, down: bool) -> None:
    """No successful renewal for renew_deadline (10 s) means stepping down, before the 15 s lease expires."""
    assert must_step_down(last_renewed=100.0, now=100.0 + since_renewal, renew_deadline_s=10.0) is down
