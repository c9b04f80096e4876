"""Exactly once across a crash that brings the bot back as a NEW Matrix device (a wiped crypto store).

Alert groups, an approved sync, and the dead-man's switch, each killed at a
point where a resend would show twice or a write would happen twice.

A new device is the failover situation of issue 16: another transaction-id
space, so Synapse's txn-id dedup no longer protects a resend, and no key to
the old device's encrypted messages. The bot runs as a subprocess; the
test-only hold point (``READYBOT_TEST_HOLD_AT``, bot/testhooks.py) stops it
right after the homeserver answered a chosen send and before the row is
recorded, the test SIGKILLs it there, wipes the crypto store and starts it
again. Counted from a person's E2EE client: every message exactly once.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from bot.outbox.events import OUTBOX_KEY
from tests.faults.alert_groups import RoomShowing, group_payload, marker, new_run
from tests.faults.approval_world import APP_PATH, approval_config, audit_actions, operation_writes
from tests.integration.alertmanager import receiver_config
from tests.integration.argo_world import Controller, edit_of, gated, in_thread_of, room_of
from tests.integration.botprocess import BotProcess
from tests.integration.botrunner import bot_config, eventually
from tests.integration.fixtures import AlertmanagerFactory, BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import REV_B, application

TOKEN = "failover-hook-token-4tQ8wZ"
GROUPS = 40
HELD_GROUP = 12
WAIT_S = 90.0
# After everything showed, how long a late duplicate has to arrive.
SETTLE_S = 3.0
HOLD_LINE = "readybot test hook: holding at outbox.sent"
RAISED_BUDGET = {"burst": 100_000, "per_minute": 1_000_000}


def metric(bot: BotProcess, name: str) -> float:
    """A sample from the bot's /metrics (0 when absent)."""
    with urllib.request.urlopen(bot.url("/metrics"), timeout=2) as response:  # noqa: S310 (127.0.0.1)
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def held(bot: BotProcess) -> None:
    """Until the bot says it holds at the hook (it then never moves again)."""
    await eventually(lambda: HOLD_LINE in bot.log_text(), "the bot to reach the hold point", WAIT_S)


def restart_as_new_device(bot: BotProcess, state: Path) -> None:
    """Wipe the crypto store and start without the hold: the bot logs in as a new device."""
    shutil.rmtree(state / "crypto")
    bot.env.pop("READYBOT_TEST_HOLD_AT", None)
    bot.start()


def outbox_pending(path: Path) -> tuple[int, int]:
    """Rows pending in the store (of them, how many had begun sending), read while the bot is dead."""
    with sqlite3.connect(path) as raw:
        row = raw.execute(
            "SELECT COUNT(*), COUNT(send_began_at) FROM outbox WHERE state = 'pending'"
        ).fetchone()
    return int(row[0]), int(row[1])


def outbox_ids_seen(person: Person, room: str, bot_user: str) -> list[int]:
    """The outbox row id of every bot event the person's client decrypted in ``room``, with repeats."""
    ids = []
    seen_events: set[str] = set()
    for room_id, event in person.received:
        if room_id != room or getattr(event, "sender", None) != bot_user:
            continue
        event_id = getattr(event, "event_id", None)
        if event_id is None or event_id in seen_events:
            continue  # an event decrypted late is recorded again
        seen_events.add(event_id)
        marker_ = getattr(event, "source", {}).get("content", {}).get(OUTBOX_KEY)
        if isinstance(marker_, dict) and isinstance(marker_.get("id"), int):
            ids.append(marker_["id"])
    return ids


async def post(url: str, body: dict[str, Any]) -> int | None:
    """POST one webhook; its status, or None when the bot died before answering."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http,
            http.post(url, data=json.dumps(body), headers=headers) as response,
        ):
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


@pytest.mark.timeout(300)
async def test_sigkill_mid_burst_then_a_new_device_shows_every_group_once(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """Killed right after a send the homeserver accepted, back as a new device: each group shows once."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_user])
    state = tmp_path / "state"
    config = bot_config(
        synapse.base_url,
        bot_account,
        state,
        [room],
        alertmanager={"enabled": True, "default_rooms": [room], "send_budget": RAISED_BUDGET},
    )
    bot = bot_process(config)
    bot.env["READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER"] = TOKEN
    run = new_run()
    held_group = HELD_GROUP
    # Held once the homeserver accepted the message showing this group (its
    # own, or a storm digest's line): rows before it are sent or on their way
    # (4 at a time), rows after it are queued, webhooks after it wait.
    bot.env["READYBOT_TEST_HOLD_AT"] = f"outbox.sent:{marker(run, held_group)}"
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_user, timeout=60)

    url = bot.url("/hooks/alertmanager")

    async def post_all() -> list[int]:
        """Every group in order; the indices the bot did not answer (it was held, then killed)."""
        return [i for i in range(GROUPS) if await post(url, group_payload(run, i, "a")) != 200]

    posting = asyncio.create_task(post_all())
    await held(bot)
    await bot.kill()
    unanswered = await posting
    sqlite = state / "readybot.sqlite3"
    pending_at_kill, begun_at_kill = outbox_pending(sqlite)

    since = alice.mark()
    restart_as_new_device(bot, state)
    await bot.wait_ready()
    # What Alertmanager does with a webhook the bot never answered: send it again.
    for index in unanswered:
        assert await post(url, group_payload(run, index, "a")) == 200
    # Resolving the held group edits the message showing it: the edit must find the event the old device sent.
    resolved = group_payload(run, held_group, "a")
    resolved["status"] = "resolved"
    resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-25T10:05:00Z"
    assert await post(url, resolved) == 200

    expected = set(range(GROUPS))
    await eventually(
        lambda: expected <= RoomShowing.read(alice, room, bot_user, run).visible(),
        "every group shown",
        WAIT_S,
    )

    def resolved_shown() -> bool:
        showing_now = RoomShowing.read(alice, room, bot_user, run)
        return showing_now.edits >= 1

    await eventually(resolved_shown, "the held group's message edited as resolved", WAIT_S)
    await eventually(lambda: metric(bot, "readybot_outbox_depth") == 0.0, "the outbox empty", WAIT_S)
    await asyncio.sleep(SETTLE_S)
    found = metric(bot, 'readybot_outbox_resume_lookups_total{outcome="found"}')
    absent = metric(bot, 'readybot_outbox_resume_lookups_total{outcome="absent"}')
    await bot.terminate()

    showing = RoomShowing.read(alice, room, bot_user, run)
    ids = outbox_ids_seen(alice, room, bot_user)
    notices_after = [e for r, e in alice.received[since:] if r == room and isinstance(e, RoomMessageNotice)]
    record_property("groups", GROUPS)
    record_property("unanswered_webhooks", len(unanswered))
    record_property("pending_at_kill", pending_at_kill)
    record_property("begun_at_kill", begun_at_kill)
    record_property("found_after_restart", found)
    record_property("absent_after_restart", absent)
    record_property("notices_after_restart", len(notices_after))
    assert expected - showing.visible() == set(), "no group lost"
    assert showing.duplicated() == set(), "no group shown twice"
    assert showing.early_edits == 0
    # Every bot event the person decrypted names its row, and no row shows twice.
    bot_events = {
        e.event_id
        for r, e in alice.received
        if r == room and isinstance(e, RoomMessageNotice) and e.sender == bot_user
    }
    assert len(ids) == len(bot_events) >= showing.messages
    assert len(ids) == len(set(ids)), "no outbox row in the room twice"
    assert "logging in as a new device" in bot.log_text()
    # The held send was accepted before the kill: the new device must have found it;
    # every other row begun before the kill was either found or sent once.
    assert found >= 1
    assert found + absent == begun_at_kill


# -- approvals: one sync, one outcome ---------------------------------------------------

# Where the bot dies, each time coming back as a new device:
# - "before-write": Bob's ✅ is committed, the bot's re-read of the Application before the write is held;
# - "after-write": the operation is written and the prompt says syncing; the outcome is still to come;
# - "outcome-sent": the sync succeeded and the homeserver accepted the first outcome message
#   (the prompt's edit or the thread line), not yet recorded as sent.
APPROVAL_KILL_POINTS = ["before-write", "after-write", "outcome-sent"]


def distinct(events: list[tuple[str, Event]], room: str, predicate: Callable[[Event], bool]) -> int:
    """How many distinct events in ``room`` match (an event decrypted late is recorded twice)."""
    return len({e.event_id for r, e in events if r == room and predicate(e)})


@pytest.mark.parametrize("kill_point", APPROVAL_KILL_POINTS)
@pytest.mark.timeout(300)
async def test_approval_killed_and_back_as_a_new_device_syncs_once_and_reports_once(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    tmp_path: Path,
    record_property: Any,
    kill_point: str,
) -> None:
    """Killed between ✅ and the write, after it, or with the outcome on its way: one write, one outcome."""
    server = kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    bot_user = bot_account.user_id
    room = await room_of(alice, bob, bot_user)
    state = tmp_path / "state"
    apps = {"cilium": gated(kube, [alice.user_id], [bob.user_id])}
    bot = bot_process(approval_config(synapse, bot_account, state, room, kube, apps))
    if kill_point == "outcome-sent":
        bot.env["READYBOT_TEST_HOLD_AT"] = "outbox.sent:Synced"
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_user)

    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_user])
    prompt = await alice.wait_for_reply(room, bot_user, after_event_id=command, timeout=WAIT_S)
    approval_id = prompt.body.split("Sync request ", 1)[1].split(":", 1)[0]
    await bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)

    if kill_point == "before-write":
        hold = server.hold(APP_PATH, verb="get", times=1)
        await bob.react(room, prompt.event_id, "✅")
        await eventually(lambda: hold.hits == 1, "the bot's pre-write read", WAIT_S)
        await bot.kill()
        hold.release()
    elif kill_point == "after-write":
        await bob.react(room, prompt.event_id, "✅")
        await alice.wait_for(edit_of(prompt.event_id, "🔄 Syncing"), timeout=WAIT_S)
        await bot.kill()
    else:
        await bob.react(room, prompt.event_id, "✅")
        await controller.operation()
        controller.run_to_success()
        await held(bot)
        await bot.kill()
    writes_before_restart = operation_writes(server, approval_id)

    since = alice.mark()
    restart_as_new_device(bot, state)
    await bot.wait_ready()
    if kill_point != "outcome-sent":
        operation = await controller.operation()
        assert operation["sync"]["revision"] == REV_B
        controller.run_to_success()
    await alice.wait_for(edit_of(prompt.event_id, f"✅ Synced {REV_B[:10]}"), timeout=WAIT_S)
    await alice.wait_for(in_thread_of(prompt.event_id, "✅ Synced"), timeout=WAIT_S)
    # A barrier: the bot answers !approvals after everything it queued before.
    listing = await alice.send_text(room, "!approvals")
    answer = await alice.wait_for_reply(room, bot_user, after_event_id=listing, timeout=WAIT_S)
    assert "No open sync requests" in answer.body
    await asyncio.sleep(SETTLE_S)
    found = metric(bot, 'readybot_outbox_resume_lookups_total{outcome="found"}')
    await bot.terminate()

    outcome_edits = distinct(alice.received, room, edit_of(prompt.event_id, "✅ Synced"))
    outcome_lines = distinct(alice.received, room, in_thread_of(prompt.event_id, "✅ Synced"))
    actions = audit_actions(state / "readybot.sqlite3")
    record_property("kill_point", kill_point)
    record_property("syncs_started", operation_writes(server, approval_id))
    record_property("outcome_edits", outcome_edits)
    record_property("outcome_lines", outcome_lines)
    record_property("found_after_restart", found)
    record_property("events_after_restart", len(alice.received) - since)
    assert writes_before_restart == (0 if kill_point == "before-write" else 1)
    assert operation_writes(server, approval_id) == 1
    assert (outcome_edits, outcome_lines) == (1, 1)
    assert actions.count("approval:started") == 1 and actions.count("approval:succeeded") == 1
    assert "approval:aborted" not in actions
    assert "logging in as a new device" in bot.log_text()
    if kill_point == "outcome-sent":
        assert found >= 1


# -- the dead-man's switch across a restart gap ------------------------------------------

DEADMAN_TOKEN = "deadman-hook-token-P3vX"
DEADMAN_THRESHOLD_S = 8.0
DEADMAN_CHECK_S = 1.0
WATCHDOG = {"alertname": "Watchdog", "severity": "none"}


def last_heartbeat(path: Path) -> float | None:
    """The newest heartbeat any source has in the store (read beside the running bot: WAL)."""
    with sqlite3.connect(path) as raw:
        row = raw.execute("SELECT MAX(last_seen) FROM deadman_sources").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def alarms(person: Person, room: str, bot_user: str) -> int:
    """Distinct 🔴 notices from the bot in ``room``."""

    def alarm(event: Event) -> bool:
        return (
            isinstance(event, RoomMessageNotice) and event.sender == bot_user and event.body.startswith("🔴")
        )

    return distinct(person.received, room, alarm)


@pytest.mark.timeout(300)
async def test_deadman_across_restarts_as_new_devices_no_false_alarm_and_one_real_alarm(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    alertmanager: AlertmanagerFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """A gap shorter than the threshold raises nothing; a Watchdog outage in a gap is alarmed exactly once."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_user])
    state = tmp_path / "state"
    sqlite = state / "readybot.sqlite3"
    config = bot_config(
        synapse.base_url,
        bot_account,
        state,
        [room],
        alertmanager={"enabled": True, "default_rooms": [room]},
        deadman={"threshold_s": DEADMAN_THRESHOLD_S, "check_interval_s": DEADMAN_CHECK_S},
    )
    bot = bot_process(config)
    bot.env["READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER"] = DEADMAN_TOKEN
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_user, timeout=60)
    server = alertmanager(receiver_config(bot.url(""), DEADMAN_TOKEN, watchdog_repeat="1s"))
    server.fire(WATCHDOG)
    await eventually(lambda: last_heartbeat(sqlite) is not None, "a first heartbeat", WAIT_S)

    # 1. A gap shorter than the threshold (Alertmanager keeps beating into the void): no alarm.
    await bot.kill()
    killed_at = time.time()
    restart_as_new_device(bot, state)
    await bot.wait_ready()
    gap_s = time.time() - killed_at
    assert gap_s < DEADMAN_THRESHOLD_S, "the gap must be shorter than the threshold"
    restarted_at = time.time()
    await eventually(
        lambda: (last_heartbeat(sqlite) or 0) > restarted_at, "a heartbeat after the gap", WAIT_S
    )
    # Checks run every second: a false alarm would have been raised well within this.
    await asyncio.sleep(DEADMAN_THRESHOLD_S + 3 * DEADMAN_CHECK_S)
    false_alarms = alarms(alice, room, bot_user)

    # 2. The Watchdog dies, then the bot, which comes back as a new device. Its alarm is held
    #    right after the homeserver accepted it, the bot killed there and back as another new
    #    device: the alarm must show once, neither lost nor repeated.
    await asyncio.to_thread(server.stop)
    await bot.kill()
    bot.env["READYBOT_TEST_HOLD_AT"] = "outbox.sent:🔴"
    shutil.rmtree(state / "crypto")
    bot.start()
    await held(bot)
    await bot.kill()
    restart_as_new_device(bot, state)
    await bot.wait_ready()
    await eventually(lambda: alarms(alice, room, bot_user) >= 1, "the alarm", WAIT_S)
    await eventually(lambda: metric(bot, "readybot_outbox_depth") == 0.0, "the outbox empty", WAIT_S)
    await asyncio.sleep(SETTLE_S + 2 * DEADMAN_CHECK_S)
    found = metric(bot, 'readybot_outbox_resume_lookups_total{outcome="found"}')
    await bot.terminate()

    record_property("gap_s", round(gap_s, 1))
    record_property("false_alarms", false_alarms)
    record_property("alarms", alarms(alice, room, bot_user))
    record_property("found_after_restart", found)
    assert false_alarms == 0
    assert alarms(alice, room, bot_user) == 1
    assert found >= 1
