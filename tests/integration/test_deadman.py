"""The dead-man's switch end to end: real Alertmanager → bot → Matrix room and a second HTTP channel.

Short timings (threshold 3 s, checks every 1 s, Watchdog repeated every
second) keep the test fast; the assertions compare the alarm's timestamps
with the last heartbeat the bot recorded, so they hold on a slow machine too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from nio import Event, RoomMessageNotice

from bot.deadman.store import HeartbeatRepo
from bot.demo.synapse import SynapseServer, free_port
from tests.integration.alertmanager import AlertmanagerServer, receiver_config
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.fixtures import AlertmanagerFactory
from tests.integration.people import Account, Person, PersonFactory

HOOK_TOKEN = "am-hook-token-7Hq2"
CHANNEL_TOKEN = "ntfy-token-Zp40Kd"
THRESHOLD_S = 3.0
CHECK_INTERVAL_S = 1.0
# Delivery to the room (outbox → Synapse) after the check fired, with room for a busy CI machine.
DELIVERY_SLACK_S = 2.5
WATCHDOG = {"alertname": "Watchdog", "severity": "none"}


@dataclass
class Post:
    at: float
    headers: dict[str, str]
    body: str


@dataclass
class Recorder:
    """The second channel: an HTTP server on 127.0.0.1 that records every POST."""

    url: str = ""
    posts: list[Post] = field(default_factory=list)

    def urgent(self) -> list[Post]:
        return [p for p in self.posts if p.headers.get("Priority") == "urgent"]

    def calm(self) -> list[Post]:
        return [p for p in self.posts if p.headers.get("Priority") == "default"]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """A second channel that records what it receives."""
    found = Recorder()

    async def receive(request: web.Request) -> web.Response:
        found.posts.append(Post(time.time(), dict(request.headers), await request.text()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alarms", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/alarms"
    try:
        yield found
    finally:
        await runner.cleanup()


def bot_runner(
    synapse: SynapseServer, account: Account, state: Path, room: str, recorder: Recorder
) -> RunningBot:
    settings = bot_settings(
        synapse.base_url,
        account,
        state,
        [room],
        # A fixed port: Alertmanager must find the bot again after a restart.
        http={"hook_tokens": {"alertmanager": HOOK_TOKEN}, "port": free_port()},
        alertmanager={"enabled": True, "default_rooms": [room]},
        deadman={
            "threshold_s": THRESHOLD_S,
            "check_interval_s": CHECK_INTERVAL_S,
            "secondary": {"url": recorder.url, "token": CHANNEL_TOKEN, "timeout_s": 2},
        },
    )
    return RunningBot(settings)


def notices(person: Person, room: str, sender: str, prefix: str) -> list[RoomMessageNotice]:
    return [
        event
        for room_id, event in person.received
        if room_id == room
        and isinstance(event, RoomMessageNotice)
        and event.sender == sender
        and event.body.startswith(prefix)
    ]


def notice_starting(sender: str, prefix: str) -> Any:
    def matches(event: Event) -> bool:
        return (
            isinstance(event, RoomMessageNotice) and event.sender == sender and event.body.startswith(prefix)
        )

    return matches


async def last_heartbeat(runner: RunningBot, source: str) -> float | None:
    assert runner.bot is not None
    record = await HeartbeatRepo(runner.bot.db).get(source)
    return None if record is None else record.last_seen


async def wait_for_heartbeat(runner: RunningBot, source: str, after: float) -> float:
    """The bot's record of a heartbeat from ``source`` later than ``after`` (waits up to 15 s)."""
    async with asyncio.timeout(15):
        while True:
            seen = await last_heartbeat(runner, source)
            if seen is not None and seen > after:
                return seen
            await asyncio.sleep(0.1)


async def until(condition: Any, what: str) -> None:
    """Wait up to 5 s for ``condition()`` to be true."""
    try:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def start_alertmanager(alertmanager: AlertmanagerFactory, runner: RunningBot) -> AlertmanagerServer:
    assert runner.bot is not None and runner.bot.http_port is not None
    bot_url = f"http://127.0.0.1:{runner.bot.http_port}"
    server = alertmanager(receiver_config(bot_url, HOOK_TOKEN, watchdog_repeat="1s"))
    server.fire(WATCHDOG)
    return server


async def test_watchdog_keeps_the_switch_up_and_its_silence_alarms_once_then_recovers(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    recorder: Recorder,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """Heartbeats keep it up; a stopped Alertmanager alarms once in time; restarted, it recovers."""
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    runner = bot_runner(synapse, bot_account, tmp_path / "bot", room, recorder)
    bots.append(runner)
    await runner.start()
    await alice.wait_joined(room, bot_account.user_id)
    bot_user = bot_account.user_id
    server = start_alertmanager(alertmanager, runner)
    source = server.base_url

    # Up: heartbeats keep coming for longer than the threshold, and nothing is raised.
    first = await wait_for_heartbeat(runner, source, after=0)
    await asyncio.sleep(THRESHOLD_S + 2 * CHECK_INTERVAL_S)
    assert await wait_for_heartbeat(runner, source, after=first) > first
    status = await alice.send_text(room, "!watchdog", wait_members=[bot_user])
    shown = (await alice.wait_for_reply(room, bot_user, after_event_id=status)).body
    assert f"🟢 {source} — up" in shown
    assert notices(alice, room, bot_user, "🔴") == [] and recorder.posts == []

    # Down: the alarm comes within threshold + check interval of the last heartbeat, in both places.
    await asyncio.to_thread(server.stop)
    stopped = time.time()
    alarm = await alice.wait_for(
        notice_starting(bot_user, "🔴"),
        room_id=room,
        timeout=THRESHOLD_S + CHECK_INTERVAL_S + DELIVERY_SLACK_S + 5,
        what="the dead-man's alarm",
    )
    last = await last_heartbeat(runner, source)
    assert last is not None and last <= stopped
    assert isinstance(alarm, RoomMessageNotice)
    assert alarm.server_timestamp / 1000 - last <= THRESHOLD_S + CHECK_INTERVAL_S + DELIVERY_SLACK_S
    assert f"no heartbeat from {source}" in alarm.body
    await until(recorder.urgent, "the alarm on the second channel")
    (posted,) = recorder.urgent()
    assert posted.at - last <= THRESHOLD_S + CHECK_INTERVAL_S + DELIVERY_SLACK_S
    assert posted.headers["Authorization"] == f"Bearer {CHANNEL_TOKEN}"
    assert source in posted.headers["Title"] and f"no heartbeat from {source}" in posted.body

    # One alarm per outage, however many checks run meanwhile.
    await asyncio.sleep(3 * CHECK_INTERVAL_S)
    assert len(notices(alice, room, bot_user, "🔴")) == 1 and len(recorder.urgent()) == 1

    # Back: the first heartbeat posts the recovery, replying to the alarm, with the outage's length.
    await asyncio.to_thread(server.start)
    server.fire(WATCHDOG)  # Alertmanager keeps no alerts across restarts; Prometheus re-sends
    recovery = await alice.wait_for(
        notice_starting(bot_user, "🟢"), room_id=room, timeout=15, what="the recovery"
    )
    assert isinstance(recovery, RoomMessageNotice)
    assert f"heartbeats from {source} are back after an outage of" in recovery.body
    relates = recovery.source["content"].get("m.relates_to", {})
    assert relates.get("m.in_reply_to", {}).get("event_id") == alarm.event_id
    await until(recorder.calm, "the recovery on the second channel")
    assert "are back after an outage of" in recorder.calm()[0].body
    assert runner.bot is not None
    logged = "\n".join(str(entry) for entry in await runner.bot.audit.recent(50))
    assert CHANNEL_TOKEN not in logged

    # Gone for good: once Alertmanager is decommissioned, `!watchdog forget` stops watching it.
    await asyncio.to_thread(server.stop)
    forget = await alice.send_text(room, f"!watchdog forget {source}")
    answer = (await alice.wait_for_reply(room, bot_user, after_event_id=forget)).body
    assert answer == f"Forgot heartbeat source {source} (it was up)."
    status = await alice.send_text(room, "!watchdog")
    assert (
        "no heartbeat source seen yet"
        in (await alice.wait_for_reply(room, bot_user, after_event_id=status)).body
    )


async def test_a_restarted_bot_raises_no_false_alarm_but_still_notices_silence(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    recorder: Recorder,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """A bot down past the threshold restarts without alarm; a source quiet across a restart is alarmed."""
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    runner = bot_runner(synapse, bot_account, tmp_path / "bot", room, recorder)
    bots.append(runner)
    await runner.start()
    await alice.wait_joined(room, bot_account.user_id)
    bot_user = bot_account.user_id
    server = start_alertmanager(alertmanager, runner)
    source = server.base_url
    await wait_for_heartbeat(runner, source, after=0)

    # The bot is away for longer than the threshold while Alertmanager keeps beating (into the void).
    await runner.stop()
    await asyncio.sleep(THRESHOLD_S + 1)
    restarted_at = time.time()
    await runner.start()
    # A false alarm would come from the first checks, before heartbeats reach the new process.
    resumed = await wait_for_heartbeat(runner, source, after=restarted_at)
    await asyncio.sleep(3 * CHECK_INTERVAL_S)
    assert notices(alice, room, bot_user, "🔴") == [] and recorder.posts == []

    # Quiet across a restart: Alertmanager stops, then the bot, which comes back only after the
    # source's threshold has passed. No alarm at start-up, yet one a threshold later.
    await asyncio.to_thread(server.stop)
    await runner.stop()
    await asyncio.sleep(THRESHOLD_S)
    second_start = time.time()
    await runner.start()
    last = await last_heartbeat(runner, source)
    assert last is not None and last >= resumed
    assert second_start > last + THRESHOLD_S, "the source must already be overdue at start-up"
    alarm = await alice.wait_for(
        notice_starting(bot_user, "🔴"), room_id=room, timeout=THRESHOLD_S + 10, what="the alarm"
    )
    assert isinstance(alarm, RoomMessageNotice)
    raised = alarm.server_timestamp / 1000
    assert (
        second_start + THRESHOLD_S
        <= raised
        <= second_start + THRESHOLD_S + CHECK_INTERVAL_S + DELIVERY_SLACK_S
    )
    await until(recorder.urgent, "the alarm on the second channel")
    assert len(notices(alice, room, bot_user, "🔴")) == 1
