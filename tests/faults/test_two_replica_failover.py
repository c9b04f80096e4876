"""Two replicas, the leader SIGKILLed mid-work: the standby takes over and nothing is lost or repeated.

The cases of issue 16's "How it is tested" that the two-replica integration
file (``tests/integration/test_two_replicas.py``, whose helpers these reuse)
does not cover: a 1,000-group alert burst across the kill, an approved sync
whose leader dies before and after its Argo CD write, and the dead-man's
switch across the takeover. Two real bot processes (``ha.enabled``), the real
Synapse, one real PostgreSQL store started on 127.0.0.1, the Lease (and the
Argo CD Application) in the test Kubernetes API server. Webhooks go to
whichever replica takes them, retried on 503 and refused connections as
Alertmanager retries them behind a Service. Everything is counted from a
person's E2EE client. The short lease durations of the integration file
(lease 10 s, deadline 7 s, retry 1 s) keep each test under a minute or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from bot.outbox.events import OUTBOX_KEY
from tests.faults.alert_groups import RoomShowing, group_payload, marker, new_run
from tests.faults.approval_world import operation_writes
from tests.integration.argo_world import Controller, edit_of, gated, in_thread_of, room_of
from tests.integration.botprocess import BotProcess
from tests.integration.botrunner import eventually
from tests.integration.fixtures import BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory
from tests.integration.test_two_replicas import (
    SETTLE_S,
    TAKEOVER_BOUND_S,
    post_like_alertmanager,
    readyz,
    start_replicas,
)
from tests.kube.handle import KubeTarget
from tests.stores import PostgresForTests
from tests.unit.argo_fake import REV_B, application

WAIT_S = 90.0
HOLD_LINE = "readybot test hook: holding at outbox.sent"


async def wait_takeover(standby: BotProcess, killed: float) -> float:
    """Seconds from the kill until the standby's /readyz is 200 (it leads)."""
    while (await readyz(standby))[0] != 200:
        assert time.monotonic() - killed < 60, "no takeover:\n" + standby.log_tail()
        await asyncio.sleep(0.1)
    return time.monotonic() - killed


def audit_actions(url: str, prefix: str) -> list[str]:
    """The shared store's audit actions starting with ``prefix``, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT action FROM audit WHERE action LIKE %s ORDER BY id", (prefix + "%",))
        return [str(row[0]) for row in rows.fetchall()]


def outbox_pending(url: str) -> tuple[int, int]:
    """Rows pending in the shared store (of them, how many had begun sending)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*), COUNT(send_began_at) FROM outbox WHERE state = 'pending'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def outbox_sends_seen(person: Person, room: str, bot_user: str) -> list[tuple[int, str]]:
    """(outbox row id, txn id) of every bot event the person's client decrypted in ``room``, with repeats.

    One row is one send, except an edit superseded while on its way: it is
    sent again with the newer content under a new txn id (``bot.outbox.producer``).
    So a send shown twice is a pair seen twice.
    """
    seen: list[tuple[int, str]] = []
    events: set[str] = set()
    for room_id, event in person.received:
        event_id = getattr(event, "event_id", None)
        if room_id != room or getattr(event, "sender", None) != bot_user or event_id in events:
            continue  # an event decrypted late is recorded again
        events.add(str(event_id))
        marker_ = getattr(event, "source", {}).get("content", {}).get(OUTBOX_KEY)
        if isinstance(marker_, dict) and isinstance(marker_.get("id"), int):
            seen.append((marker_["id"], str(marker_.get("txn"))))
    return seen


def distinct(person: Person, room: str, predicate: Any) -> int:
    """Distinct events in ``room`` that match (an event decrypted late is recorded twice)."""
    return len({e.event_id for r, e in person.received if r == room and predicate(e)})


async def metric(bot: BotProcess, name: str) -> float | None:
    """A sample from the bot's /metrics; None when the bot did not answer, 0 when absent."""

    def read() -> float | None:
        import re
        import urllib.request

        try:
            with urllib.request.urlopen(bot.url("/metrics"), timeout=2) as response:  # noqa: S310 (127.0.0.1)
                text = response.read().decode()
        except OSError:
            return None
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return await asyncio.to_thread(read)


# -- 1. a 1,000-group burst across the kill -------------------------------------------

GROUPS = 1_000
CONCURRENCY = 8
# The leader is held (bot/testhooks.py) right after the homeserver accepted
# this group's own message, before recording it, and SIGKILLed there: a send
# the new leader must find in the room, not repeat; posting goes on meanwhile.
# An early group, as only the first few get a message of their own before
# the storm folds into digests; a digest's edit would not do: one superseded
# while on its way is rightly sent again under a new txn id, found or not.
HELD_GROUP = 3


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_sigkill_of_the_leader_mid_burst_loses_and_repeats_no_alert_group(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    postgres: PostgresForTests,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """SIGKILL the leader during a 1,000-group burst: the standby leads within 15 s, each group shows once."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_user])
    url = postgres.create(migrated=False)
    run = new_run()
    hold = {"READYBOT_TEST_HOLD_AT": f"outbox.sent:{marker(run, HELD_GROUP)}"}
    first, second = await start_replicas(
        synapse, bot_account, alice, room, bot_process, kube, tmp_path, url, first_env=hold
    )
    urls = [first.url("/hooks/alertmanager"), second.url("/hooks/alertmanager")]
    queue = [json.dumps(group_payload(run, i, "a")).encode() for i in reversed(range(GROUPS))]
    answered: list[int] = []
    attempts = 0
    began = time.monotonic()

    async def worker() -> None:
        nonlocal attempts
        while queue:
            body = queue.pop()
            statuses = await post_like_alertmanager(urls, body, time.monotonic() + WAIT_S)
            attempts += len(statuses)
            answered.append(statuses[-1])

    posting = asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await eventually(lambda: HOLD_LINE in first.log_text(), "the leader held after a send", WAIT_S)
    assert await first.kill() == -signal.SIGKILL
    killed = time.monotonic()
    answered_at_kill = len(answered)
    # What the dead leader left: queued rows, and rows it had begun sending (the look-back's work).
    pending_at_kill, begun_at_kill = await asyncio.to_thread(outbox_pending, url)
    took_over_s = await wait_takeover(second, killed)
    await posting
    posted_s = time.monotonic() - began

    expected = set(range(GROUPS))
    deadline = time.monotonic() + 180
    while not expected <= RoomShowing.read(alice, room, bot_user, run).visible():
        assert time.monotonic() < deadline, "not every group showed:\n" + second.log_tail()
        await asyncio.sleep(0.5)
    shown_s = time.monotonic() - killed
    while (await metric(second, "readybot_outbox_depth")) != 0.0:
        assert time.monotonic() < deadline, "the outbox never emptied:\n" + second.log_tail()
        await asyncio.sleep(0.5)
    await asyncio.sleep(SETTLE_S)
    showing = RoomShowing.read(alice, room, bot_user, run)
    sends = outbox_sends_seen(alice, room, bot_user)
    lookups = {
        outcome: await metric(second, f'readybot_outbox_resume_lookups_total{{outcome="{outcome}"}}')
        for outcome in ("found", "absent", "unknown")
    }

    record_property("groups", GROUPS)
    record_property("answered_at_kill", answered_at_kill)
    record_property("takeover_s", round(took_over_s, 1))
    record_property("pending_at_kill", pending_at_kill)
    record_property("begun_at_kill", begun_at_kill)
    record_property("looked_back_found", lookups["found"])
    record_property("looked_back_absent", lookups["absent"])
    record_property("looked_back_unknown", lookups["unknown"])
    record_property("webhook_attempts", attempts)
    record_property("posting_s", round(posted_s, 1))
    record_property("all_shown_after_kill_s", round(shown_s, 1))
    record_property("lost", len(expected - showing.visible()))
    record_property("duplicated", len(showing.duplicated()))
    record_property("events", len(sends))
    record_property("outbox_rows", len({row for row, _ in sends}))
    record_property("messages", showing.messages)
    record_property("digests", showing.digests)
    assert answered == [200] * GROUPS, "every webhook was taken in the end"
    assert answered_at_kill < GROUPS, "the leader died during the burst"
    assert lookups["found"] is not None and lookups["found"] >= 1, "the held send was found, not repeated"
    assert sum(n or 0 for n in lookups.values()) == begun_at_kill, "every begun row was looked for"
    assert attempts > GROUPS, "some webhooks were refused while nobody led"
    assert took_over_s <= TAKEOVER_BOUND_S, second.log_tail()
    assert expected - showing.visible() == set(), "no group lost"
    assert showing.duplicated() == set(), "no group shown twice"
    assert showing.early_edits == 0
    assert len(sends) == len(set(sends)) >= showing.messages, "no send of an outbox row in the room twice"


# -- 2. the leader dies around the Argo CD write ----------------------------------------

# approvals.write: Bob's ✅ is committed, the operation not yet written;
# approvals.written: the API server applied the write, the request not yet recorded as started.
HOLD_POINTS = ["approvals.write", "approvals.written"]


@pytest.mark.slow
@pytest.mark.parametrize("point", HOLD_POINTS)
@pytest.mark.timeout(300)
async def test_leader_killed_around_the_argo_cd_write_leaves_one_sync_and_one_outcome(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    postgres: PostgresForTests,
    tmp_path: Path,
    record_property: Any,
    point: str,
) -> None:
    """Leader SIGKILLed after ✅, before or after the operation write: one write, one outcome message."""
    server = kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    bot_user = bot_account.user_id
    room = await room_of(alice, bob, bot_user)
    approvals = {
        "apps": {"cilium": gated(kube, [alice.user_id], [bob.user_id])},
        "poll_interval_s": 0.2,
        "expiry_check_interval_s": 1.0,
    }
    url = postgres.create(migrated=False)
    first, second = await start_replicas(
        synapse,
        bot_account,
        alice,
        room,
        bot_process,
        kube,
        tmp_path,
        url,
        sections={"approvals": approvals},
        first_env={"READYBOT_TEST_HOLD_AT": point},
    )

    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_user])
    prompt = await alice.wait_for_reply(room, bot_user, after_event_id=command, timeout=WAIT_S)
    approval_id = prompt.body.split("Sync request ", 1)[1].split(":", 1)[0]
    await bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)
    await bob.react(room, prompt.event_id, "✅")
    await eventually(
        lambda: f"readybot test hook: holding at {point}" in first.log_text(), "the leader held", WAIT_S
    )
    assert await first.kill() == -signal.SIGKILL
    killed = time.monotonic()
    writes_at_kill = operation_writes(server, approval_id)
    took_over_s = await wait_takeover(second, killed)

    operation = await controller.operation()
    assert operation["sync"]["revision"] == REV_B
    controller.run_to_success()
    await alice.wait_for(edit_of(prompt.event_id, f"✅ Synced {REV_B[:10]}"), timeout=WAIT_S)
    await alice.wait_for(in_thread_of(prompt.event_id, "✅ Synced"), timeout=WAIT_S)
    # A barrier: the new leader answers !approvals after everything it queued before.
    listing = await alice.send_text(room, "!approvals")
    answer = await alice.wait_for_reply(room, bot_user, after_event_id=listing, timeout=WAIT_S)
    assert "No open sync requests" in answer.body
    await asyncio.sleep(SETTLE_S)

    outcome_edits = distinct(alice, room, edit_of(prompt.event_id, "✅ Synced"))
    outcome_lines = distinct(alice, room, in_thread_of(prompt.event_id, "✅ Synced"))
    actions = audit_actions(url, "approval:")
    record_property("point", point)
    record_property("takeover_s", round(took_over_s, 1))
    record_property("writes_at_kill", writes_at_kill)
    record_property("operation_writes", operation_writes(server, approval_id))
    record_property("outcome_edits", outcome_edits)
    record_property("outcome_lines", outcome_lines)
    assert writes_at_kill == (0 if point == "approvals.write" else 1)
    assert took_over_s <= TAKEOVER_BOUND_S, second.log_tail()
    assert operation_writes(server, approval_id) == 1
    assert (outcome_edits, outcome_lines) == (1, 1)
    assert actions.count("approval:started") == 1 and actions.count("approval:succeeded") == 1
    assert "approval:aborted" not in actions


# -- 3. the dead-man's switch across the takeover ----------------------------------------

# Below the gap a takeover leaves (about 15 s from the last beat the old
# leader took to the first the new one takes): a switch that counted silence
# from the last stored beat instead of from the takeover would raise a false alarm.
THRESHOLD_S = 8.0
CHECK_S = 1.0
BEAT_S = 1.0
# Alertmanager retries a refused webhook with a growing back-off (500 ms, x1.5,
# jittered), so the first beat after a ~10 s gap lands up to several seconds
# after the new leader is ready. The test fixes that delay instead of racing
# it: the new leader's first checks then run before any beat reached it.
RETRY_LANDS_AFTER_S = 4.0


def watchdog_payload() -> dict[str, Any]:
    """The Watchdog group as Alertmanager sends it: always firing, repeated every BEAT_S."""
    labels = {"alertname": "Watchdog", "severity": "none"}
    return {
        "receiver": "readybot",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "the alerting pipeline is alive"},
                "startsAt": "2026-11-25T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph?g0.expr=vector(1)",
                "fingerprint": "5a5b5c5d5e5f6061",
            }
        ],
        "groupLabels": {"alertname": "Watchdog"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "the alerting pipeline is alive"},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}/{alertname="Watchdog"}:{alertname="Watchdog"}',
        "truncatedAlerts": 0,
    }


async def beat(urls: list[str], stop: asyncio.Event, taken: list[float], held: asyncio.Lock) -> None:
    """Alertmanager's Watchdog: every BEAT_S, posted to whichever replica takes it (503/refused retried).

    While the test holds ``held`` no beat goes out (its retry has not come round yet).
    """
    body = json.dumps(watchdog_payload()).encode()
    while not stop.is_set():
        async with held:
            statuses = await post_like_alertmanager(urls, body, time.monotonic() + BEAT_S * 30)
        if statuses and statuses[-1] == 200:
            taken.append(time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BEAT_S)


def is_alarm(bot_user: str) -> Any:
    def matches(event: Event) -> bool:
        return (
            isinstance(event, RoomMessageNotice) and event.sender == bot_user and event.body.startswith("🔴")
        )

    return matches


# - "beating": the Watchdog keeps beating through the failover: no alarm at all;
# - "silent-before-alarm": the Watchdog stops, the leader dies before its threshold passed:
#   the new leader raises the alarm, once;
# - "silent-after-alarm": the Watchdog stops, the leader raises the alarm and dies:
#   the new leader does not raise it again.
DEADMAN_CASES = ["beating", "silent-before-alarm", "silent-after-alarm"]


@pytest.mark.slow
@pytest.mark.parametrize("case", DEADMAN_CASES)
@pytest.mark.timeout(300)
async def test_deadman_across_a_failover_raises_no_false_alarm_and_a_real_outage_once(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    postgres: PostgresForTests,
    tmp_path: Path,
    record_property: Any,
    case: str,
) -> None:
    """Watchdog beating through a failover: no alarm; a Watchdog outage spanning it: exactly one alarm."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_user])
    url = postgres.create(migrated=False)
    deadman = {"threshold_s": THRESHOLD_S, "check_interval_s": CHECK_S}
    first, second = await start_replicas(
        synapse, bot_account, alice, room, bot_process, kube, tmp_path, url, sections={"deadman": deadman}
    )
    urls = [first.url("/hooks/alertmanager"), second.url("/hooks/alertmanager")]
    stop = asyncio.Event()
    taken: list[float] = []
    held = asyncio.Lock()
    beating = asyncio.create_task(beat(urls, stop, taken, held))
    alarm = is_alarm(bot_user)
    try:
        await eventually(lambda: len(taken) >= 3, "the leader taking beats", WAIT_S)
        if case != "beating":
            stop.set()
            await beating
        if case == "silent-after-alarm":
            await eventually(lambda: distinct(alice, room, alarm) == 1, "the old leader's alarm", WAIT_S)
        if case == "beating":
            await held.acquire()  # after the beat on its way (if any) was taken
        assert await first.kill() == -signal.SIGKILL
        killed = time.monotonic()
        took_over_s = await wait_takeover(second, killed)
        if case == "beating":
            await asyncio.sleep(RETRY_LANDS_AFTER_S)
            held.release()
            gap_s = time.monotonic() - max(t for t in taken if t < killed)
        # Every check of a threshold and a few more after the takeover: an alarm would be raised by now.
        await asyncio.sleep(THRESHOLD_S + 4 * CHECK_S)
        if case == "silent-before-alarm":
            await eventually(lambda: distinct(alice, room, alarm) >= 1, "the new leader's alarm", WAIT_S)
            await asyncio.sleep(SETTLE_S + 2 * CHECK_S)
        beats_after_takeover = sum(1 for t in taken if t > killed)
    finally:
        stop.set()
        if held.locked():
            held.release()
        await beating
    alarms = distinct(alice, room, alarm)
    record_property("case", case)
    record_property("takeover_s", round(took_over_s, 1))
    record_property("beats_taken_after_kill", beats_after_takeover)
    record_property("alarms", alarms)
    assert took_over_s <= TAKEOVER_BOUND_S, second.log_tail()
    if case == "beating":
        record_property("beat_gap_s", round(gap_s, 1))
        assert gap_s > THRESHOLD_S, "the beats' gap was longer than the threshold"
        assert beats_after_takeover >= 3, "the new leader took the beats"
        assert alarms == 0, "no false alarm across the failover"
    else:
        assert alarms == 1, "the outage alarmed exactly once"
