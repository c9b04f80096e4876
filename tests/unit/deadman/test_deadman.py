"""The dead-man's switch: pure evaluation, one alarm per outage, recovery, restarts, the second channel.

Real SQLite files and the real outbox; time is an injected clock; the second
channel is a recorder that can be told to fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bot.deadman.store import HeartbeatRepo, NoticeRepo, NoticeState
from bot.deadman.switch import DeadmanMetrics, DeadmansSwitch, SecondaryChannelError, SourceState, evaluate
from bot.outbox import Outbox
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store.database import Database
from bot.store.leadership import Fence, LeadershipLost
from config.deadman import DeadmanSettings
from tests.stores import StoreBackend

ROOM = "!alerts:example.org"
AM = "https://am.example.org"
T0 = 1_700_000_000.0
THRESHOLD = 300.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingChannel:
    """The second channel: records what it was sent; fails the next ``failures`` sends."""

    failures: int = 0
    sent: list[tuple[str, str, bool]] = field(default_factory=list)
    attempts: int = 0

    async def send(self, title: str, body: str, *, urgent: bool) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise SecondaryChannelError("HTTP 502")
        self.sent.append((title, body, urgent))


@dataclass
class Harness:
    db: Database
    clock: Clock
    channel: RecordingChannel
    make: Callable[..., DeadmansSwitch]

    async def messages(self) -> list[dict[str, Any]]:
        """Every queued Matrix message: room, body and what it replies to (an outbox id)."""
        rows = await self.db.fetchall("SELECT id, room_id, payload, target_outbox_id FROM outbox ORDER BY id")
        return [
            {
                "id": row["id"],
                "room": row["room_id"],
                "body": json.loads(row["payload"])["body"],
                "reply_to": row["target_outbox_id"],
            }
            for row in rows
        ]


@pytest.fixture
async def harness(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Harness]:
    clock = Clock()
    db = await store_backend.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS, clock=clock)
    channel = RecordingChannel()

    def make(
        *,
        started_at: float | None = None,
        with_channel: bool = True,
        metrics: DeadmanMetrics | None = None,
        fence: Fence | None = None,
        **settings: Any,
    ) -> DeadmansSwitch:
        values: dict[str, Any] = {"threshold_s": THRESHOLD, "check_interval_s": 30}
        values.update(settings)
        return DeadmansSwitch(
            DeadmanSettings.model_validate(values),
            db=db,
            outbox=Outbox(db, clock=clock),
            templates=Templates(),
            rooms=[ROOM],
            clock=clock,
            started_at=clock.now if started_at is None else started_at,
            channel=channel if with_channel else None,
            retry_base_s=0.0,
            metrics=metrics,
            fence=fence,
        )

    try:
        yield Harness(db, clock, channel, make)
    finally:
        await db.close()


# --- evaluate (pure) -------------------------------------------------------


def test_evaluate_is_up_within_the_threshold_and_down_after() -> None:
    """Silence up to the threshold is fine; one second more is an outage."""
    assert evaluate(T0, T0 + THRESHOLD, THRESHOLD) is SourceState.UP
    assert evaluate(T0, T0 + THRESHOLD + 1, THRESHOLD) is SourceState.DOWN


def test_evaluate_counts_silence_from_when_watching_began() -> None:
    """A heartbeat older than the bot's start counts from the start: the bot could not hear meanwhile."""
    started = T0 + 3_600
    assert evaluate(T0, started + THRESHOLD, THRESHOLD, watching_since=started) is SourceState.UP
    assert evaluate(T0, started + THRESHOLD + 1, THRESHOLD, watching_since=started) is SourceState.DOWN
    # A heartbeat after the start counts from the heartbeat.
    assert (
        evaluate(started + 100, started + THRESHOLD + 50, THRESHOLD, watching_since=started) is SourceState.UP
    )


def test_evaluate_a_never_seen_source_from_the_start() -> None:
    """A source never heard from is silent since watching began; with neither time it is an error."""
    assert evaluate(None, T0 + THRESHOLD + 1, THRESHOLD, watching_since=T0) is SourceState.DOWN
    with pytest.raises(ValueError, match="need last_seen"):
        evaluate(None, T0, THRESHOLD)


# --- heartbeats ------------------------------------------------------------


async def test_heartbeats_are_recognised_by_their_labels(harness: Harness) -> None:
    """The default matcher takes alertname=Watchdog whatever the other labels; a custom one is honoured."""
    switch = harness.make()
    assert switch.is_heartbeat({"alertname": "Watchdog", "severity": "none"})
    assert not switch.is_heartbeat({"alertname": "KubePodCrashLooping"})
    assert not switch.is_heartbeat({})
    custom = harness.make(heartbeat_matchers={"alertname": "DeadMansSwitch", "team": "ops"})
    assert custom.is_heartbeat({"alertname": "DeadMansSwitch", "team": "ops", "x": "y"})
    assert not custom.is_heartbeat({"alertname": "DeadMansSwitch"})


async def test_the_source_is_the_external_url_or_the_source_label(harness: Harness) -> None:
    """Without a source label the externalURL names the source; with one, its value does when present."""
    plain = harness.make()
    assert plain.source_of(AM + "/", {"cluster": "eu-1"}) == AM
    assert plain.source_of("", {}) == "alertmanager"
    by_cluster = harness.make(source_label="cluster")
    assert by_cluster.source_of(AM, {"cluster": "eu-1", "alertname": "Watchdog"}) == "eu-1"
    assert by_cluster.source_of(AM, {"alertname": "Watchdog"}) == AM


async def test_heartbeat_joins_the_callers_transaction(harness: Harness) -> None:
    """A heartbeat recorded in a transaction that rolls back leaves no trace."""
    switch = harness.make()

    class Abort(Exception):
        pass

    async def beat_then_abort() -> None:
        async with harness.db.transaction() as tx:
            await switch.heartbeat(AM, tx=tx)
            raise Abort

    with pytest.raises(Abort):
        await beat_then_abort()
    assert await HeartbeatRepo(harness.db).get(AM) is None
    await switch.heartbeat(AM)
    record = await HeartbeatRepo(harness.db).get(AM)
    assert record is not None and record.last_seen == T0 and record.state is SourceState.UP


# --- alarms and recoveries -------------------------------------------------


async def test_one_alarm_per_outage_in_the_room_and_on_the_second_channel(harness: Harness) -> None:
    """Past the threshold: one alarm message and one second-channel notice, however many checks follow."""
    switch = harness.make()
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD)
    assert await switch.check() == []
    harness.clock.advance(1)
    assert await switch.check() == [AM]
    for _ in range(5):
        harness.clock.advance(30)
        assert await switch.check() == []
    assert await switch.deliver_pending() == 1
    assert await switch.deliver_pending() == 0

    messages = await harness.messages()
    assert len(messages) == 1
    assert messages[0]["room"] == ROOM
    assert f"no heartbeat from {AM} for 5m1s" in messages[0]["body"]
    assert len(harness.channel.sent) == 1
    title, body, urgent = harness.channel.sent[0]
    assert AM in title and urgent
    assert body == messages[0]["body"]


async def test_recovery_replies_to_the_alarm_with_the_outage_length(harness: Harness) -> None:
    """The first heartbeat after an outage posts the recovery as a reply to the alarm, with its length."""
    switch = harness.make()
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD + 10)
    await switch.check()
    harness.clock.advance(20 * 60)
    await switch.heartbeat(AM)
    await switch.deliver_pending()

    alarm, recovery = await harness.messages()
    assert recovery["reply_to"] == alarm["id"]
    assert f"heartbeats from {AM} are back after an outage of 25m10s" in recovery["body"]
    assert [urgent for _, _, urgent in harness.channel.sent] == [True, False]
    record = await HeartbeatRepo(harness.db).get(AM)
    assert record is not None and record.state is SourceState.UP and record.outages == 1

    # A later outage is a new outage: a new alarm.
    harness.clock.advance(THRESHOLD + 1)
    assert await switch.check() == [AM]
    assert len(await harness.messages()) == 3


async def test_sources_are_tracked_separately(harness: Harness) -> None:
    """One source going quiet does not alarm for another that keeps beating."""
    switch = harness.make(source_label="cluster")
    for _ in range(12):
        await switch.heartbeat("eu-1")
        if harness.clock.now - T0 < 60:
            await switch.heartbeat("us-1")
        harness.clock.advance(30)
        await switch.check()
    assert [view.source for view in await switch.status() if view.state is SourceState.DOWN] == ["us-1"]


async def test_a_heartbeat_between_evaluation_and_alarm_wins(harness: Harness) -> None:
    """The down transition is compare-and-set on the last heartbeat seen: a fresher one cancels it."""
    switch = harness.make()
    await switch.heartbeat(AM)
    repo = HeartbeatRepo(harness.db)
    harness.clock.advance(THRESHOLD + 1)
    await switch.heartbeat(AM)  # arrives after a check would have read T0
    async with harness.db.transaction() as tx:
        assert not await repo.mark_down(tx, AM, at=harness.clock.now, silent_since=T0, last_seen=T0)
    assert await switch.check() == []


# --- restarts --------------------------------------------------------------


async def test_no_false_alarm_after_the_bot_was_down(harness: Harness) -> None:
    """A healthy source whose heartbeats the bot missed while it was down is not alarmed on restart."""
    await harness.make().heartbeat(AM)
    harness.clock.advance(3_600)  # the bot was down for an hour
    restarted = harness.make()
    assert await restarted.check() == []
    harness.clock.advance(60)
    await restarted.heartbeat(AM)  # heartbeats resume within the threshold
    harness.clock.advance(THRESHOLD)
    assert await restarted.check() == []
    assert await harness.messages() == []


async def test_a_source_quiet_before_the_restart_is_still_declared_down(harness: Harness) -> None:
    """A source that went quiet before the restart is alarmed once a threshold has passed since start-up."""
    await harness.make().heartbeat(AM)
    harness.clock.advance(THRESHOLD - 10)  # nearly due when the bot stops
    harness.clock.advance(120)  # restart
    restarted = harness.make()
    assert await restarted.check() == []
    harness.clock.advance(THRESHOLD)
    assert await restarted.check() == []
    harness.clock.advance(1)
    assert await restarted.check() == [AM]
    (alarm,) = await harness.messages()
    assert "Last heartbeat: 2023-11-14" in alarm["body"]


async def test_an_outage_survives_a_restart_without_a_second_alarm(harness: Harness) -> None:
    """A source down across a restart gets no second alarm, and its recovery counts the whole outage."""
    first = harness.make()
    await first.heartbeat(AM)
    harness.clock.advance(THRESHOLD + 1)
    assert await first.check() == [AM]
    harness.clock.advance(600)
    restarted = harness.make()
    harness.clock.advance(THRESHOLD * 3)
    assert await restarted.check() == []
    await restarted.heartbeat(AM)
    alarm, recovery = await harness.messages()
    assert recovery["reply_to"] == alarm["id"]
    assert "after an outage of 30m1s" in recovery["body"]


async def test_an_alarm_unsent_at_a_crash_goes_out_after_the_restart(harness: Harness) -> None:
    """The second-channel notice is stored with the alarm, so a crash before sending does not lose it."""
    first = harness.make()
    await first.heartbeat(AM)
    harness.clock.advance(THRESHOLD + 1)
    await first.check()  # the process dies before delivering
    restarted = harness.make()
    assert await restarted.deliver_pending() == 1
    assert len(harness.channel.sent) == 1


async def test_an_expected_source_that_never_beats_is_declared_down(harness: Harness) -> None:
    """A configured source is watched from start-up even if it never sent a heartbeat."""
    switch = harness.make(expected_sources=[AM])
    await switch.watch_expected()
    harness.clock.advance(THRESHOLD + 1)
    assert await switch.check() == [AM]
    (alarm,) = await harness.messages()
    assert "No heartbeat since the bot started watching" in alarm["body"]


# --- the second channel ----------------------------------------------------


async def test_the_second_channel_is_retried_within_a_round(harness: Harness) -> None:
    """Two failures then success: delivered in one round, recorded as sent."""
    switch = harness.make()
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD + 1)
    await switch.check()
    harness.channel.failures = 2
    assert await switch.deliver_pending() == 1
    assert harness.channel.attempts == 3
    (notice,) = await NoticeRepo(harness.db).all()
    assert notice.state is NoticeState.SENT


async def test_an_unsent_notice_waits_for_the_next_round_then_gives_up(harness: Harness) -> None:
    """A notice failing every try stays pending for later rounds, and is given up after give_up_after_s."""
    switch = harness.make()
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD + 1)
    await switch.check()
    harness.channel.failures = 3
    assert await switch.deliver_pending() == 0
    (notice,) = await NoticeRepo(harness.db).all()
    assert notice.state is NoticeState.PENDING and notice.attempts == 1 and notice.last_error == "HTTP 502"
    assert await switch.deliver_pending() == 1

    harness.clock.advance(THRESHOLD + 1)
    await switch.heartbeat(AM)
    harness.channel.failures = 1_000
    harness.clock.advance(3_601)
    assert await switch.deliver_pending() == 0
    assert [n.state for n in await NoticeRepo(harness.db).all()] == [NoticeState.SENT, NoticeState.FAILED]


async def test_the_delivery_task_sends_alarms_as_they_are_raised_and_stops_promptly(harness: Harness) -> None:
    """The root task delivers a new alarm at once (not at the next poll) and returns soon after stop."""
    switch = harness.make()
    await switch.heartbeat(AM)
    stop = asyncio.Event()
    task = asyncio.create_task(switch.run_secondary(stop))
    await asyncio.sleep(0.05)
    harness.clock.advance(THRESHOLD + 1)
    await switch.check()
    async with asyncio.timeout(2):
        while not harness.channel.sent:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(1):
        await task


# --- switched off, and health -----------------------------------------------


async def test_a_disabled_switch_tracks_nothing(harness: Harness) -> None:
    """With enabled false, heartbeats are still recognised but nothing is stored or alarmed."""
    switch = harness.make(enabled=False)
    assert switch.is_heartbeat({"alertname": "Watchdog"})
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD * 10)
    assert await switch.check() == []
    assert await HeartbeatRepo(harness.db).all() == []


async def test_metrics_show_each_source_and_the_alarms(harness: Harness) -> None:
    """Prometheus sees each source's state and last heartbeat, and counts alarms."""
    registry = CollectorRegistry()
    switch = DeadmansSwitch(
        DeadmanSettings(threshold_s=THRESHOLD),
        db=harness.db,
        outbox=Outbox(harness.db, clock=harness.clock),
        templates=Templates(),
        rooms=[ROOM],
        clock=harness.clock,
        started_at=T0,
        metrics=DeadmanMetrics(registry),
    )
    await switch.heartbeat(AM)
    await switch.check()
    labels = {"source": AM}
    assert registry.get_sample_value("readybot_deadman_source_up", labels) == 1
    assert registry.get_sample_value("readybot_deadman_last_heartbeat_timestamp_seconds", labels) == T0
    harness.clock.advance(THRESHOLD + 1)
    await switch.check()
    assert registry.get_sample_value("readybot_deadman_source_up", labels) == 0
    assert registry.get_sample_value("readybot_deadman_alarms_total") == 1


async def test_health_follows_the_checks(harness: Harness) -> None:
    """The switch is healthy while checks run, and not once they have stalled for a few intervals."""
    switch = harness.make()
    assert switch.healthy(harness.clock.now)
    harness.clock.advance(200)
    assert not switch.healthy(harness.clock.now)
    await switch.check()
    assert switch.healthy(harness.clock.now)


async def test_a_forgotten_source_is_no_longer_watched_nor_exported(harness: Harness) -> None:
    """forget() removes a down source: no further alarm, gone from status and from the metrics."""
    registry = CollectorRegistry()
    switch = harness.make(metrics=DeadmanMetrics(registry))
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD + 1)
    assert await switch.check() == [AM]
    assert registry.get_sample_value("readybot_deadman_source_up", {"source": AM}) == 0

    forgotten = await switch.forget(AM)

    assert forgotten is not None and forgotten.state is SourceState.DOWN
    assert await switch.status() == []
    assert registry.get_sample_value("readybot_deadman_source_up", {"source": AM}) is None
    harness.clock.advance(THRESHOLD * 3)
    assert await switch.check() == []
    assert await switch.forget(AM) is None
    # A source that beats again is tracked anew.
    await switch.heartbeat(AM)
    assert [view.source for view in await switch.status()] == [AM]


async def test_a_replica_that_lost_the_lead_raises_no_alarm_and_the_new_leader_gives_grace(
    harness: Harness,
) -> None:
    """An old leader's switch (fenced by a newer term) alarms nothing; the new one counts from its lead."""
    old, new = Fence(harness.db), Fence(harness.db)
    assert await old.take("readybot-0", 1)
    switch = harness.make(fence=old)
    await switch.heartbeat(AM)
    harness.clock.advance(THRESHOLD - 10)
    assert await new.take("readybot-1", 2)  # the other replica takes the lead
    leader = harness.make(fence=new)  # built at the takeover
    harness.clock.advance(20)
    with pytest.raises(LeadershipLost):
        await switch.check()
    assert await harness.messages() == []
    assert await leader.check() == []  # quiet for longer than the threshold, but not since the takeover
    harness.clock.advance(THRESHOLD)
    assert await leader.check() == [AM]
    assert len(await harness.messages()) == 1
