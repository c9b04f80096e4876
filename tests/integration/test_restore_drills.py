"""Restore drills end to end: real Synapse, two E2EE people, the test Kubernetes API with the Velero CRDs.

Alice asks with ``!restore-drill``, Bob approves (four eyes); the bot writes
the scratch namespaces and one Restore; the test plays Velero (the Restore's
phases and progress, the objects it restores into the scratch namespaces)
and checks the report, the cleanup and the readiness criterion.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nio import RoomMessageNotice

from bot.demo.synapse import SynapseServer
from bot.store.audit import AuditEntry
from tests.integration.argo_world import WAIT_S, edit_of, in_thread_of
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.people import Account, Person, PersonFactory
from tests.kube import velero_objects as v
from tests.kube.handle import KubeTarget
from tests.kube.velero_restores import progress, restored_objects, restores, wait_for_restore

BACKUP = "daily-20261207020000"
LABEL = "readybot.io/restore-drill"


@dataclass
class Scene:
    kube: KubeTarget
    runner: RunningBot
    alice: Person
    bob: Person
    room: str
    bot: str

    @property
    def store(self) -> Any:
        return self.kube.store

    async def ask(self, text: str) -> Any:
        command = await self.alice.send_text(self.room, text, wait_members=[self.bot])
        return await self.alice.wait_for_reply(self.room, self.bot, after_event_id=command, timeout=WAIT_S)

    async def approve(self, prompt: Any) -> None:
        await self.bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=self.room)
        await self.bob.react(self.room, prompt.event_id, "✅")

    async def audit(self) -> list[AuditEntry]:
        assert self.runner.bot is not None
        entries = reversed(await self.runner.bot.audit.recent(200))
        return [e for e in entries if e.action.startswith("drill:")]


def seed(kube: KubeTarget) -> None:
    """Velero's namespace with a schedule's Completed backup of shop and db, and those namespaces in use."""
    store, now = kube.store, datetime.now(UTC)
    for name in ("shop", "db"):
        store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    store.put(
        v.backup(
            BACKUP,
            "Completed",
            schedule="daily",
            created=now - timedelta(hours=2),
            started=now - timedelta(hours=2),
            completed=now - timedelta(hours=1),
            items=412,
            total=412,
            namespaces=["shop", "db"],
        ),
        namespace=kube.namespace,
    )


async def start_scene(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
    *,
    readiness: bool = False,
    **drills: Any,
) -> Scene:
    kube.require_server()
    seed(kube)
    alice, bob = await person_factory("alice"), await person_factory("bob")
    bot = bot_account.user_id
    room = await alice.create_room("platform", encrypted=True, invite=[bot, bob.user_id])
    await bob.join(room)
    sections: dict[str, Any] = {
        "kubernetes": kube.settings().model_dump(mode="json", exclude_none=True),
        "velero": {
            "enabled": True,
            "namespace": kube.namespace,
            "rooms": [room],
            "completed": "off",
            "drills": {
                "enabled": True,
                "requesters": {"users": [alice.user_id]},
                # Alice may approve too, but never her own drill (four eyes).
                "approvers": {"users": [alice.user_id, bob.user_id]},
                "poll_interval_s": 0.1,
                "pods_ready_timeout_s": 2.0,
            }
            | drills,
        },
    }
    if readiness:
        sections["readiness"] = {"enabled": True, "probe_timeout_s": 3}
    runner = RunningBot(bot_settings(synapse.base_url, bot_account, tmp_path / "bot", [room], **sections))
    bots.append(runner)
    await runner.start()
    await alice.wait_joined(room, bot)
    return Scene(kube, runner, alice, bob, room, bot)


def drill_id_of(prompt: Any) -> str:
    found = re.search(r"Restore drill ([0-9a-f]{8}):", prompt.body)
    assert found, prompt.body
    return found.group(1)


def restore_creates(kube: KubeTarget) -> list[int]:
    """The statuses the API answered to every create of a Restore."""
    return [
        a.status
        for a in kube.require_server().answers
        if a.verb == "create" and a.exchange.path.endswith("/restores")
    ]


SceneOf = Callable[..., Awaitable[Scene]]


@pytest.fixture
def scene_of(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> SceneOf:
    """``await scene_of(**drills)``: the seeded cluster, two people in a room, the bot with drills on."""

    async def make(*, readiness: bool = False, **drills: Any) -> Scene:
        return await start_scene(
            synapse, bot_account, person_factory, bots, kube, tmp_path, readiness=readiness, **drills
        )

    return make


async def test_a_drill_approved_by_a_second_person_restores_once_reports_and_cleans_up(
    kube: KubeTarget,
    scene_of: SceneOf,
) -> None:
    """Four eyes, one Restore into labelled scratch namespaces, ✅ report, only scratch namespaces deleted."""
    scene = await scene_of(readiness=True)
    before = await scene.ask("!readiness status 2.1.3")
    assert "❌ 2.1.3 Successful test restore verified" in before.body
    assert "no restore drill has passed yet" in before.body

    prompt = await scene.ask("!restore-drill daily")
    drill = drill_id_of(prompt)
    assert f"Restore drill {drill}: backup {BACKUP} (schedule daily)" in prompt.body
    assert f"shop → readybot-drill-{drill}-shop" in prompt.body
    assert f"db → readybot-drill-{drill}-db" in prompt.body
    assert "no cluster-scoped resources" in prompt.body and "412 items" in prompt.body
    assert prompt.decrypted

    # Alice's own ✅ does not count: nothing is written.
    await scene.alice.react(scene.room, prompt.event_id, "✅")
    await asyncio.sleep(0.5)
    assert restores(scene.store) == []
    await scene.approve(prompt)
    async with asyncio.timeout(WAIT_S):
        restore = await wait_for_restore(scene.store)
    assert restore["metadata"]["name"] == f"readybot-drill-{drill}"
    assert restore["spec"]["backupName"] == BACKUP
    assert restore["spec"]["namespaceMapping"] == {
        "db": f"readybot-drill-{drill}-db",
        "shop": f"readybot-drill-{drill}-shop",
    }
    assert restore["spec"]["includeClusterResources"] is False
    for scratch in ("shop", "db"):
        namespace = scene.store.find("", "namespaces", f"readybot-drill-{drill}-{scratch}")
        assert namespace is not None and namespace["metadata"]["labels"][LABEL] == drill
    await scene.alice.wait_for(edit_of(prompt.event_id, "🔄 Restoring"), timeout=WAIT_S)

    progress(scene.store, restore, "InProgress", restored=100, total=412)
    restored_objects(
        scene.store, f"readybot-drill-{drill}-shop", deployments=2, pods=4, ready=4, pvcs=2, bound=2
    )
    restored_objects(scene.store, f"readybot-drill-{drill}-db", pods=2, ready=2, pvcs=1, bound=1)
    progress(scene.store, restore, "Completed", restored=412, total=412)

    edited = await scene.alice.wait_for(
        edit_of(prompt.event_id, f"✅ drill of {BACKUP} passed: 412/412 items, 6/6 pods ready in"),
        timeout=WAIT_S,
    )
    assert "3 PVCs bound" in edited.source["content"]["m.new_content"]["body"]
    report = await scene.alice.wait_for(in_thread_of(prompt.event_id, "✅ drill of"), timeout=WAIT_S)
    assert (
        f"shop → readybot-drill-{drill}-shop: 2 Deployments, 4 Pods, 2 PersistentVolumeClaims" in report.body
    )
    assert f"`velero -n {kube.namespace} restore describe readybot-drill-{drill} --details`" in report.body
    await scene.alice.wait_for(in_thread_of(prompt.event_id, "🧹 Drill"), timeout=WAIT_S)

    # Cleanup: the scratch namespaces are gone, nothing else was deleted.
    names = {ns["metadata"]["name"] for ns in scene.store.objects("", "namespaces")}
    assert not any(name.startswith("readybot-drill-") for name in names)
    assert {"shop", "db", kube.namespace} <= names
    deletes = [r for r in kube.require_server().requests if r.verb == "delete"]
    assert {r.namespace for r in deletes} == {f"readybot-drill-{drill}-shop", f"readybot-drill-{drill}-db"}
    assert restore_creates(kube) == [201]

    actions = [(e.actor, e.action, e.outcome) for e in await scene.audit()]
    assert actions == [
        (scene.alice.user_id, "drill:requested", "requested"),
        (scene.alice.user_id, "drill:reaction", "ignored"),
        (scene.bob.user_id, "drill:reaction", "approve"),
        (scene.bob.user_id, "drill:approved", "approved"),
        (scene.bot, "drill:started", "started"),
        (scene.bot, "drill:succeeded", "succeeded"),
    ]
    assert scene.runner.bot is not None
    registry = scene.runner.bot.metrics.registry
    assert registry.get_sample_value("readybot_restore_drills_total", {"outcome": "passed"}) == 1
    assert (registry.get_sample_value("readybot_restore_drill_last_success_timestamp_seconds") or 0) > 0

    after = await scene.ask("!readiness status 2.1.3")
    assert "✅ 2.1.3 Successful test restore verified" in after.body
    assert f"drill {drill} of {BACKUP} (schedule daily) passed" in after.body
    explain = await scene.ask("!readiness explain 2.1.3")
    assert "a readybot restore drill passed within 35d" in explain.body
    assert f"drill {drill} of {BACKUP}" in explain.body and "412/412 items" in explain.body


@pytest.mark.parametrize(
    ("phase", "restored", "reason", "expected"),
    [
        ("Completed", 398, None, f"⚠️ drill of {BACKUP} partially passed: 398/412 items (14 missing)"),
        (
            "Failed",
            0,
            "error restoring: bucket unavailable",
            f"❌ drill of {BACKUP} failed: Velero ended the restore Failed: "
            "error restoring: bucket unavailable (0/412 items",
        ),
    ],
    ids=["partial", "failed"],
)
async def test_a_partial_or_failed_restore_is_reported_as_such_with_where_to_look(
    kube: KubeTarget,
    scene_of: SceneOf,
    phase: str,
    restored: int,
    reason: str | None,
    expected: str,
) -> None:
    """Items missing: ⚠️ partial; Velero's Failed: ❌ with its reason; both name the velero commands."""
    scene = await scene_of(delete_restore=True)
    prompt = await scene.ask(f"!restore-drill {BACKUP}")
    drill = drill_id_of(prompt)
    await scene.approve(prompt)
    async with asyncio.timeout(WAIT_S):
        restore = await wait_for_restore(scene.store)
    restored_objects(scene.store, f"readybot-drill-{drill}-shop", pods=2, ready=2)
    progress(scene.store, restore, phase, restored=restored, total=412, failure_reason=reason)
    await scene.alice.wait_for(edit_of(prompt.event_id, expected), timeout=WAIT_S)
    report = await scene.alice.wait_for(in_thread_of(prompt.event_id, expected), timeout=WAIT_S)
    assert f"restore logs readybot-drill-{drill}" in report.body
    if reason is not None:
        assert f"⚠️ Velero ended the restore Failed: {reason}" in report.body
    else:
        assert "⚠️ 14 of 412 items were not restored" in report.body
    outcome = "failed" if phase == "Failed" else "partial"
    assert scene.runner.bot is not None
    registry = scene.runner.bot.metrics.registry
    assert registry.get_sample_value("readybot_restore_drills_total", {"outcome": outcome}) == 1
    assert registry.get_sample_value("readybot_restore_drill_last_success_timestamp_seconds") == 0
    # velero.drills.delete_restore: the Restore goes with the scratch namespaces, and nothing else.
    note = await scene.alice.wait_for(in_thread_of(prompt.event_id, "🧹 Drill"), timeout=WAIT_S)
    assert f"Restore readybot-drill-{drill} deleted" in note.body
    assert restores(scene.store) == []
    deletes = {(r.resource, r.namespace) for r in kube.require_server().requests if r.verb == "delete"}
    assert deletes == {
        ("namespaces", f"readybot-drill-{drill}-shop"),
        ("namespaces", f"readybot-drill-{drill}-db"),
        ("restores", kube.namespace),
    }


async def test_a_restart_mid_drill_follows_the_same_drill_and_never_creates_a_second_restore(
    kube: KubeTarget,
    scene_of: SceneOf,
) -> None:
    """Stopped while its Restore create is in flight, then while Velero works: one Restore, one report."""
    scene = await scene_of()
    server = kube.require_server()
    held = server.hold(r"/restores$", verb="create")
    prompt = await scene.ask("!restore-drill")
    drill = drill_id_of(prompt)
    await scene.approve(prompt)
    async with asyncio.timeout(WAIT_S):
        while held.hits == 0:
            await asyncio.sleep(0.05)

    # Down while the create is held; it lands while the bot is away.
    await scene.runner.stop()
    held.release()
    async with asyncio.timeout(WAIT_S):
        restore = await wait_for_restore(scene.store)
    await scene.runner.start()
    await scene.alice.wait_for(edit_of(prompt.event_id, "🔄 Restoring"), timeout=WAIT_S)

    # Down again while Velero restores; the outcome is reported after the restart.
    await scene.runner.stop()
    restored_objects(scene.store, f"readybot-drill-{drill}-shop", pods=1, ready=1)
    progress(scene.store, restore, "Completed", restored=412, total=412)
    await scene.runner.start()
    await scene.alice.wait_for(edit_of(prompt.event_id, f"✅ drill of {BACKUP} passed"), timeout=WAIT_S)

    assert [r["metadata"]["name"] for r in restores(scene.store)] == [f"readybot-drill-{drill}"]
    created = [status for status in restore_creates(kube) if status == 201]
    assert created == [201]
    started = [e for e in await scene.audit() if e.action == "drill:started"]
    assert len(started) == 1


async def test_an_unreachable_cluster_is_reported_and_a_second_drill_is_refused_while_one_runs(
    kube: KubeTarget,
    scene_of: SceneOf,
) -> None:
    """API down: `!restore-drill` answers "cluster unreachable"; with a drill open, "one at a time"."""
    scene = await scene_of()
    with kube.require_server().unreachable():
        answer = await scene.ask("!restore-drill daily")
    assert "cluster unreachable" in answer.body
    assert restores(scene.store) == []
    prompt = await scene.ask("!restore-drill daily")
    drill = drill_id_of(prompt)
    second = await scene.ask("!restore-drill daily")
    assert f"restore drill {drill} is requested; one drill at a time" in second.body
    await scene.alice.send_text(scene.room, f"!cancel {drill}")
    cancelled = await scene.alice.wait_for(
        lambda e: isinstance(e, RoomMessageNotice) and f"Cancelled restore drill {drill}" in e.body,
        room_id=scene.room,
        timeout=WAIT_S,
    )
    assert isinstance(cancelled, RoomMessageNotice) and "nothing was restored" in cancelled.body
    await scene.alice.wait_for(edit_of(prompt.event_id, "🚫 Cancelled by"), timeout=WAIT_S)
    assert restores(scene.store) == []
