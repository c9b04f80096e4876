"""The Velero relay end to end: the test Kubernetes API (upstream CRDs) → the bot → an encrypted room.

Objects are written as Velero's controllers would (``store.put``); a person
in the room reads what the bot says. Timings are short (checks every 0.5 s,
watches of 5 s); schedules are seeded with past timestamps, so a run is
overdue at once instead of after a real cron period.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.people import Account, Person, PersonFactory
from tests.kube import velero_objects as v
from tests.kube.apiserver import FakeApiServer
from tests.kube.handle import TEST_REQUEST_TIMEOUT_S, TEST_WATCH_TIMEOUT_S, KubeTarget

CHECK_INTERVAL_S = 0.5
# Velero's four kinds, one watch each.
WATCHES = 4


@dataclass
class Scene:
    """A room with alice and the bot, the test API server, and the bot's runner."""

    alice: Person
    room: str
    bot_user: str
    runner: RunningBot
    server: FakeApiServer
    namespace: str

    def put(self, obj: dict[str, object]) -> None:
        self.server.store.put(obj, namespace=self.namespace)

    def notices(self, text: str) -> list[RoomMessageNotice]:
        """Every notice from the bot in the room containing ``text``."""
        return [
            event
            for room_id, event in self.alice.received
            if room_id == self.room
            and isinstance(event, RoomMessageNotice)
            and event.sender == self.bot_user
            and text in event.body
        ]

    async def notice(self, text: str, *, since: int = 0, wait_s: float = 15) -> RoomMessageNotice:
        """The first notice from the bot containing ``text`` (at or after position ``since``)."""

        def matches(event: Event) -> bool:
            return (
                isinstance(event, RoomMessageNotice) and event.sender == self.bot_user and text in event.body
            )

        found = await self.alice.wait_for(
            matches, room_id=self.room, since=since, timeout=wait_s, what=f"a notice with {text!r}"
        )
        assert isinstance(found, RoomMessageNotice)
        return found

    async def flush(self, name: str) -> None:
        """Fail one more backup and wait for its message: whatever the bot queued before it has arrived."""
        self.put(v.backup(name, "Failed", started=ago(seconds=1)))
        await self.notice(f"backup {name} failed")

    async def ask(self, command: str) -> str:
        event_id = await self.alice.send_text(self.room, command, wait_members=[self.bot_user])
        reply = await self.alice.wait_for_reply(self.room, self.bot_user, after_event_id=event_id)
        return str(reply.body)

    async def listening(self) -> None:
        """Until the bot's four watches are open (its first listings are done by then)."""
        await asyncio.to_thread(self.server.wait_for_watches, WATCHES, 15.0)

    def lists_of(self, plural: str) -> int:
        return sum(1 for r in self.server.requests if r.verb == "list" and r.resource == plural)


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def velero_runner(
    synapse: SynapseServer, account: Account, state: Path, room: str, kube: KubeTarget
) -> RunningBot:
    settings = bot_settings(
        synapse.base_url,
        account,
        state,
        [room],
        kubernetes={
            "enabled": True,
            "in_cluster": False,
            "kubeconfig": str(kube.kubeconfig_path),
            "request_timeout_s": TEST_REQUEST_TIMEOUT_S,
            "watch_timeout_s": TEST_WATCH_TIMEOUT_S,
            "watch_backoff_max_s": 0.5,
        },
        velero={
            "enabled": True,
            "namespace": kube.namespace,
            "rooms": [room],
            "completed": "each",
            "missed_grace_s": 60,
            "check_interval_s": CHECK_INTERVAL_S,
        },
    )
    return RunningBot(settings)


@pytest.fixture
async def scene(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    kube: KubeTarget,
    tmp_path: Path,
) -> AsyncIterator[Scene]:
    """Alice's encrypted room with the bot invited; each test starts the bot itself (``start``)."""
    server = kube.require_server()
    alice = await person_factory("alice")
    room = await alice.create_room("backups", encrypted=True, invite=[bot_account.user_id])
    runner = velero_runner(synapse, bot_account, tmp_path / "bot", room, kube)
    try:
        yield Scene(alice, room, bot_account.user_id, runner, server, kube.namespace)
    finally:
        await runner.close()


async def start(scene: Scene) -> None:
    await scene.runner.start()
    await scene.alice.wait_joined(scene.room, scene.bot_user)
    await scene.listening()


async def test_backup_phases_are_reported_once_even_across_a_410_relist(scene: Scene) -> None:
    """Completed, PartiallyFailed and FailedValidation each give one message; a 410 relist repeats none."""
    await start(scene)
    started = ago(minutes=3)
    for phase in ("New", "InProgress"):
        scene.put(v.backup("daily-1", phase, schedule="daily", started=None if phase == "New" else started))
    scene.put(
        v.backup(
            "daily-1",
            "Completed",
            schedule="daily",
            started=started,
            completed=ago(minutes=1),
            items=42,
            total=42,
        )
    )
    done = await scene.notice("backup daily-1")
    assert done.body.startswith("✅ Velero backup daily-1 completed (schedule daily)")
    assert "ran 2m, 42 items." in done.body

    scene.put(v.backup("daily-2", "InProgress", schedule="daily", started=started))
    scene.put(
        v.backup(
            "daily-2",
            "PartiallyFailed",
            schedule="daily",
            started=started,
            completed=ago(seconds=30),
            errors=3,
            warnings=12,
            items=40,
            total=42,
        )
    )
    partial = await scene.notice("backup daily-2")
    assert partial.body.startswith("⚠️ Velero backup daily-2 partially failed (schedule daily)")
    assert "40 of 42 items; 3 errors, 12 warnings." in partial.body
    assert f"`velero backup logs daily-2 -n {scene.namespace}`" in partial.body
    assert partial.source["content"]["format"] == "org.matrix.custom.html"

    scene.put(v.backup("manual-1", "FailedValidation", validation_errors=["invalid storage location"]))
    invalid = await scene.notice("backup manual-1")
    assert "failed validation (no schedule)" in invalid.body and "• invalid storage location" in invalid.body

    # The API server compacts its history: the watch gets 410 Gone and relists everything.
    lists = scene.lists_of("backups")
    scene.server.compact()
    scene.server.expire_watches()
    await until(lambda: scene.lists_of("backups") > lists, "the relist after 410")
    await scene.flush("after-relist")
    for name in ("daily-1", "daily-2", "manual-1"):
        assert len(scene.notices(f"backup {name} ")) == 1, name


async def test_backups_command_shows_schedules_history_and_an_unreachable_cluster(scene: Scene) -> None:
    """`!backups` lists schedules with last backup, phase, age and next run; `!backups daily` its history."""
    # A daily schedule whose run five hours ago backed up: the next is due in 19 h, whatever
    # the hour (a fixed "0 2 * * *" was really missed between 02:01 and 07:00 UTC).
    due = ago(hours=5).replace(second=0, microsecond=0)
    cron = f"{due.minute} {due.hour} * * *"
    scene.put(v.schedule("daily", cron, created=ago(days=3)))
    scene.put(v.schedule("weekly", "@weekly", created=ago(days=3), paused=True))
    scene.put(
        v.backup(
            "daily-a",
            "Completed",
            schedule="daily",
            started=due,
            completed=due + timedelta(minutes=2),
        )
    )
    scene.put(v.location("default", "Available"))
    await start(scene)

    overview = await scene.ask("!backups")
    lines = overview.splitlines()
    assert lines[0] == f"Velero schedules in namespace {scene.namespace}:"
    assert lines[1].startswith(f"• daily (`{cron}`): last backup daily-a Completed 5h")
    assert f"next run {due + timedelta(days=1):%Y-%m-%d %H:%M} UTC (in " in lines[1]
    assert lines[2] == "• weekly (`@weekly`): last backup none yet; ⏸ paused"
    assert lines[3] == "Storage locations: default: Available"

    history = await scene.ask("!backups daily")
    assert "Last 1 of 1 backup, newest first:" in history
    assert "• daily-a — Completed, started 5h" in history and "took 2m" in history
    unknown = await scene.ask("!backups nightly")
    assert (
        f"No Velero schedule named 'nightly' in namespace {scene.namespace}. Known: daily, weekly." in unknown
    )

    # The cluster goes away: the bot stays up and says so, with what it saw last.
    with scene.server.unreachable():
        for _ in range(20):
            shown = await scene.ask("!backups")
            if shown.startswith("⚠️ cluster unreachable"):
                break
            await asyncio.sleep(0.25)
        assert shown.startswith("⚠️ cluster unreachable: ") and f"daily (`{cron}`)" in shown
    # Back: the watches recover by themselves and the warning goes away.
    for _ in range(40):
        shown = await scene.ask("!backups")
        if not shown.startswith("⚠️"):
            break
        await asyncio.sleep(0.25)
    assert shown.startswith(f"Velero schedules in namespace {scene.namespace}:")


async def test_an_overdue_schedule_alerts_once_and_a_completed_backup_clears_it(scene: Scene) -> None:
    """A */5 schedule last run 30 min ago: one alert; a later completed backup clears it in a reply."""
    scene.put(v.schedule("often", "*/5 * * * *", created=ago(days=1)))
    scene.put(
        v.backup("often-1", "Completed", schedule="often", started=ago(minutes=30), completed=ago(minutes=29))
    )
    scene.put(v.location("default", "Available"))
    await start(scene)

    alert = await scene.notice("missed a run")
    assert alert.body.startswith("⏰ Velero schedule often missed a run: one was due at ")
    assert "(`*/5 * * * *`)" in alert.body and "Its last backup started 30m" in alert.body
    # Many checks later, still the one alert.
    await asyncio.sleep(6 * CHECK_INTERVAL_S)
    assert len(scene.notices("missed a run")) == 1

    scene.put(v.backup("often-2", "InProgress", schedule="often", started=ago(seconds=10)))
    scene.put(
        v.backup("often-2", "Completed", schedule="often", started=ago(seconds=10), completed=ago(seconds=1))
    )
    cleared = await scene.notice("runs again")
    assert cleared.body.startswith("✅ Velero schedule often runs again: backup often-2 Completed.")
    relates = cleared.source["content"].get("m.relates_to", {})
    assert relates.get("m.in_reply_to", {}).get("event_id") == alert.event_id

    # The storage location fails and comes back: one message each.
    scene.put(v.location("default", "Unavailable", message="rpc error: bucket not found"))
    down = await scene.notice("is Unavailable")
    assert "default (the default) is Unavailable: rpc error: bucket not found" in down.body
    scene.put(v.location("default", "Available"))
    await scene.notice("Available again")
    await scene.flush("marker")
    assert len(scene.notices("missed a run")) == 1 and len(scene.notices("runs again")) == 1
    assert len(scene.notices("is Unavailable")) == 1 and len(scene.notices("Available again")) == 1


async def test_a_restart_repeats_nothing_and_reports_what_ended_while_down(scene: Scene) -> None:
    """Outcomes and alerts from before a restart are not repeated; a failure while down is told once."""
    scene.put(v.schedule("never", "*/10 * * * *", created=ago(hours=2)))
    await start(scene)
    await scene.notice("schedule never missed a run")
    scene.put(v.backup("before", "Failed", started=ago(seconds=5), failure_reason="pod volume backup failed"))
    before = await scene.notice("backup before failed")
    assert "Reason: pod volume backup failed" in before.body

    await scene.runner.stop()
    scene.put(v.backup("while-down", "Failed", started=ago(seconds=3), errors=1))
    mark = scene.alice.mark()
    await scene.runner.start()
    await scene.listening()

    during = await scene.notice("backup while-down failed", since=mark)
    assert "1 error." in during.body
    # A few missed-schedule checks and a full relist later, nothing else from before came back.
    await asyncio.sleep(4 * CHECK_INTERVAL_S)
    await scene.flush("after-restart")
    assert len(scene.notices("backup before failed")) == 1
    assert len(scene.notices("backup while-down failed")) == 1
    assert len(scene.notices("schedule never missed a run")) == 1


async def until(condition: object, what: str, timeout_s: float = 15.0) -> None:
    """Poll ``condition()`` until it is true."""
    assert callable(condition)
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
