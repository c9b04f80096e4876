"""The Kubernetes API goes away and comes back compacted: clear answers meanwhile, nothing lost or repeated.

The bot runs as a subprocess with approval gates, the readiness scorecard and
the Velero relay on the test API server. The server is stopped (connection
refused) while people ask; a Backup completes during the outage; the
server's history is compacted before it returns, so the Velero watches get
410 Gone and must relist.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from tests.faults.kube_world import VELERO_WATCHES, cluster_config, relists_logged
from tests.integration.argo_world import Controller, gated
from tests.integration.botrunner import eventually
from tests.integration.fixtures import BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory
from tests.kube import velero_objects as v
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import application

WAIT_S = 60.0


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def ask(alice: Person, room: str, bot: str, text: str) -> str:
    command = await alice.send_text(room, text, wait_members=[bot])
    reply = await alice.wait_for_reply(room, bot, after_event_id=command, timeout=WAIT_S)
    return str(reply.body)


def from_bot(bot: str, text: str) -> object:
    def matches(event: Event) -> bool:
        return isinstance(event, RoomMessageNotice) and event.sender == bot and text in event.body

    return matches


async def test_an_api_outage_is_answered_clearly_and_velero_repeats_nothing_after_a_410(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    """API down: !sync and !readiness say unreachable; back (compacted): each Backup is told exactly once."""
    server = kube.require_server()
    Controller(kube).put(application("cilium"))
    alice = await person_factory("alice")
    bot = bot_account.user_id
    room = await alice.create_room("platform", encrypted=True, invite=[bot])
    apps = {"cilium": gated(kube, [alice.user_id], [alice.user_id])}
    process = bot_process(cluster_config(synapse, bot_account, tmp_path / "state", room, kube, apps))
    process.start()
    await process.wait_ready()
    await alice.wait_joined(room, bot)
    await asyncio.to_thread(server.wait_for_watches, VELERO_WATCHES, WAIT_S)

    def put_backup(name: str, phase: str) -> None:
        completed = ago(1) if phase != "InProgress" else None
        backup = v.backup(name, phase, started=ago(30), completed=completed)
        server.store.put(backup, namespace=kube.namespace)

    put_backup("before-outage", "Completed")
    await alice.wait_for(from_bot(bot, "backup before-outage completed"), room_id=room, timeout=WAIT_S)
    put_backup("during-outage", "InProgress")

    # The API server goes away: connection refused from now on.
    began = time.monotonic()
    server.stop()
    sync_answer = await ask(alice, room, bot, "!sync cilium")
    readiness_answer = await ask(alice, room, bot, "!readiness status")
    listing = await ask(alice, room, bot, "!approvals")
    # Velero finishes a backup meanwhile, and the API server's history is compacted past it.
    put_backup("during-outage", "Completed")
    failing = f"watch of backups.velero.io in {kube.namespace}: cluster unreachable"
    await eventually(lambda: failing in process.log_text(), "the bot to see its Backup watch fail", WAIT_S)
    server.compact()
    server.start()
    outage_s = time.monotonic() - began

    await alice.wait_for(from_bot(bot, "backup during-outage completed"), room_id=room, timeout=WAIT_S)
    recovery_s = time.monotonic() - began - outage_s
    # After the outage: a new Backup is reported (the watch works again), and it is a barrier:
    # whatever the bot queued before it has arrived by the time it does.
    put_backup("after-outage", "Failed")
    await alice.wait_for(from_bot(bot, "backup after-outage failed"), room_id=room, timeout=WAIT_S)
    sync_after = await ask(alice, room, bot, "!sync cilium")
    await process.terminate()

    unreachable_answers = sum("cluster unreachable" in a for a in (sync_answer, readiness_answer))
    seen = [
        e for r, e in alice.received if r == room and isinstance(e, RoomMessageNotice) and e.sender == bot
    ]
    told = {
        name: sum(f"backup {name} " in e.body for e in seen)
        for name in ("before-outage", "during-outage", "after-outage")
    }
    repeated_messages = sum(count - 1 for count in told.values() if count > 1)
    relists = relists_logged(process.log_text())
    record_property("unreachable_answers", unreachable_answers)
    record_property("repeated_messages", repeated_messages)
    record_property("relists", sum(relists.values()))
    record_property("outage_s", round(outage_s, 1))
    record_property("recovery_s", round(recovery_s, 1))
    assert "cluster unreachable" in sync_answer, sync_answer
    assert "cluster unreachable" in readiness_answer, readiness_answer
    assert "No open sync requests" in listing, listing
    assert "Sync request " in sync_after, sync_after  # nothing was left half-made by the refused !sync
    assert relists.get("backups.velero.io", 0) >= 1, relists
    assert told == {"before-outage": 1, "during-outage": 1, "after-outage": 1}
    assert unreachable_answers == 2 and repeated_messages == 0
