"""When a storm folds: from its first batch, and for as long as it is underway (issue 18)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.alertmanager.groups import storming
from bot.outbox.budget import RateBudget, SendThroughput
from tests.unit.alertmanager.test_alert_relay import Clock, alert, make_relay, payload, settings_with

# The bot user's limit lifted and the budget raised to match: only the
# measured send rate (10/s assumed while nothing was measured) can fold.
RAISED = {"send_budget": {"burst": 100_000, "per_minute": 1_000_000}}


def storm(i: int) -> dict[str, Any]:
    return payload([alert("a")], key=f"g{i}", group_labels={"alertname": f"Storm{i:02}"})


def test_an_underway_storm_folds_any_group_while_anything_is_queued() -> None:
    """Underway, a group folds with 1 queued though both waits are short; with none queued it never does."""
    raised = RateBudget(burst=100_000, per_minute=1_000_000, now=0.0)
    fast = SendThroughput()
    fast.observe([i / 50 for i in range(50)])  # 50 sends a second: 5 queued wait 0.16 s
    assert not storming(raised, 5, 1.0, 20.0, fast, fold_after_s=1.0)
    assert storming(raised, 5, 1.0, 20.0, fast, fold_after_s=1.0, underway=True)
    assert storming(raised, 1, 1.0, 20.0, fast, fold_after_s=1.0, underway=True)
    assert not storming(raised, 0, 1.0, 20.0, fast, fold_after_s=1.0, underway=True)


async def test_groups_committed_together_fold_from_the_first_batch(tmp_path: Path) -> None:
    """Twenty new groups in one transaction on an idle outbox: one digest with all, no own message first."""
    relay = await make_relay(tmp_path / "batch.sqlite3", settings_with(**RAISED))
    try:
        await asyncio.gather(*(relay.post(storm(i)) for i in range(20)))
        bodies = [body for kind, body in await relay.bodies() if kind == "message"]
        # Counted one at a time, the first 7 would each have queued a message
        # ahead of the digest ((ahead + 3) / 10 per second stays <= 1 s).
        (digest,) = bodies
        assert digest.startswith("🌩")
        assert all(f"Storm{i:02}" in digest for i in range(20))
    finally:
        await relay.db.close()


async def test_a_storm_stays_folded_for_fold_after_s_then_groups_get_messages_again(tmp_path: Path) -> None:
    """After a fold a lone group folds too (the digest is queued); fold_after_s later it has its own."""
    clock = Clock()
    relay = await make_relay(tmp_path / "sticky.sqlite3", settings_with(**RAISED), clock)
    try:
        await asyncio.gather(*(relay.post(storm(i)) for i in range(20)))  # folds: 1 digest queued
        await relay.post(storm(20))  # 1 queued, 0.4 s at 10/s: folds only because the storm is underway
        clock.now += 0.5
        await relay.post(storm(21))  # still underway (the last fold 0.5 s ago): folds
        clock.now += 1.5  # fold_after_s (1 s) since the last fold
        await relay.post(storm(22))  # 1 queued: a lone group again, its own message
        bodies = await relay.bodies()
        # The digest was already among the rows that may be on their way: the
        # later groups joined it by an edit (its newest content).
        digest = [body for kind, body in bodies if kind == "edit"][-1]
        assert "Storm20" in digest and "Storm21" in digest and "Storm22" not in digest
        own = [body for kind, body in bodies if kind == "message" and not body.startswith("🌩")]
        assert len(own) == 1 and "Storm22" in own[0]
    finally:
        await relay.db.close()
