"""Approval gates end to end: real Synapse, real E2EE clients, the test Kubernetes API with the Argo CD CRD.

People send ``!sync`` and react in an encrypted room; the test plays the Argo
CD application controller by writing the Application's status into the test
API server, as the controller would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.demo.synapse import SynapseServer
from bot.store.audit import AuditEntry
from tests.integration.argo_world import (
    GROUP,
    PLURAL,
    WAIT_S,
    Controller,
    edit_of,
    gated,
    in_thread_of,
    room_of,
)
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.people import Account, Person, PersonFactory
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import REV_A, REV_B, application


async def start_bot(
    bots: list[RunningBot],
    synapse: SynapseServer,
    account: Account,
    tmp_path: Path,
    room: str,
    kube: KubeTarget,
    apps: dict[str, Any],
    **approvals: Any,
) -> RunningBot:
    kubernetes = kube.settings().model_dump(mode="json", exclude_none=True)
    settings = bot_settings(
        synapse.base_url,
        account,
        tmp_path / "bot",
        [room],
        kubernetes=kubernetes,
        approvals={"apps": apps, "poll_interval_s": 0.1, "expiry_check_interval_s": 0.5} | approvals,
    )
    runner = RunningBot(settings)
    bots.append(runner)
    await runner.start()
    return runner


async def approval_audit(runner: RunningBot) -> list[AuditEntry]:
    assert runner.bot is not None
    return [e for e in reversed(await runner.bot.audit.recent(200)) if e.action.startswith("approval:")]


async def test_sync_approved_by_reaction_syncs_the_pinned_revision_and_reports_success(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """Alice's !sync cilium, Bob's ✅: the operation carries the pinned revision and id; success is shown."""
    server = kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    room = await room_of(alice, bob, bot_account.user_id)
    apps = {"cilium": gated(kube, [alice.user_id], [bob.user_id])}
    runner = await start_bot(bots, synapse, bot_account, tmp_path, room, kube, apps)
    await alice.wait_joined(room, bot_account.user_id)

    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)
    assert f"{REV_A[:10]} → {REV_B}" in prompt.body
    assert bob.user_id in prompt.body and "OutOfSync, Healthy" in prompt.body
    approval_id = prompt.body.split("Sync request ", 1)[1].split(":", 1)[0]
    assert prompt.decrypted

    await bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)
    await bob.react(room, prompt.event_id, "✅")
    operation = await controller.operation()
    assert operation["sync"]["revision"] == REV_B
    assert {"name": "readybot-approval", "value": approval_id} in operation["info"]
    assert operation["initiatedBy"] == {"username": alice.user_id, "automated": False}
    assert "operationState" not in controller.app()["status"]

    controller.run_to_success()
    await alice.wait_for(
        edit_of(prompt.event_id, f"✅ Synced {REV_B[:10]}: Synced, Healthy."), timeout=WAIT_S
    )
    await alice.wait_for(in_thread_of(prompt.event_id, "✅ Synced"), timeout=WAIT_S)

    actions = [(e.actor, e.action) for e in await approval_audit(runner)]
    assert actions == [
        (alice.user_id, "approval:requested"),
        (bob.user_id, "approval:reaction"),
        (bob.user_id, "approval:approved"),
        (bot_account.user_id, "approval:started"),
        (bot_account.user_id, "approval:succeeded"),
    ]
    # What deploy/base/rbac-approvals.yaml grants is what was used: get, list?, patch.
    used = {(r.verb, r.resource) for r in server.requests if r.group == GROUP}
    assert used <= {("get", PLURAL), ("list", PLURAL), ("patch", PLURAL)}
    assert ("patch", PLURAL) in used


async def test_a_restart_keeps_the_request_and_follows_the_sync_again(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """A ✅ made while the bot was down counts after it restarts; a sync finished while down is reported."""
    kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    room = await room_of(alice, bob, bot_account.user_id)
    apps = {"cilium": gated(kube, [alice.user_id], [bob.user_id])}
    runner = await start_bot(bots, synapse, bot_account, tmp_path, room, kube, apps)
    await alice.wait_joined(room, bot_account.user_id)
    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)

    await runner.stop()
    await bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)
    await bob.react(room, prompt.event_id, "✅")
    await runner.start()
    operation = await controller.operation()
    assert operation["sync"]["revision"] == REV_B
    await alice.wait_for(edit_of(prompt.event_id, "🔄 Syncing"), timeout=WAIT_S)

    await runner.stop()
    controller.run_to_success()
    await runner.start()
    await alice.wait_for(edit_of(prompt.event_id, "✅ Synced"), timeout=WAIT_S)
    started = [e for e in await approval_audit(runner) if e.action == "approval:started"]
    assert len(started) == 1


async def test_refusals_and_ignored_reactions_in_the_room(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """!apps marks gated apps; refusals give the reason; own/outsider ✅ are ignored; ❌ rejects."""
    server = kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    controller.put(application("podinfo", automated=True))
    alice, bob, mallory = (
        await person_factory("alice"),
        await person_factory("bob"),
        await person_factory("mallory"),
    )
    room = await room_of(alice, bob, bot_account.user_id, mallory)
    apps = {
        "cilium": gated(kube, [alice.user_id, bob.user_id], [bob.user_id]),
        "podinfo": gated(kube, [alice.user_id], [bob.user_id]),
    }
    runner = await start_bot(bots, synapse, bot_account, tmp_path, room, kube, apps)
    await alice.wait_joined(room, bot_account.user_id)

    async def answer(text: str, person: Person = alice) -> str:
        command = await person.send_text(room, text, wait_members=[bot_account.user_id])
        reply = await person.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)
        return reply.body

    apps_listing = await answer("!apps")
    assert f"🔐 {kube.namespace}/cilium · OutOfSync · Healthy" in apps_listing
    assert f"{kube.namespace}/podinfo · OutOfSync · Healthy · auto-sync" in apps_listing
    assert "nginx is not a gated app (gated: cilium, podinfo)" in await answer("!sync nginx")
    assert "automated sync is enabled" in await answer("!sync podinfo")
    assert "you may not request syncs of cilium" in await answer("!sync cilium", mallory)
    with server.unreachable():
        assert "cluster unreachable" in await answer("!sync cilium")

    command = await bob.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await bob.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)
    await alice.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)
    await mallory.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)
    await bob.react(room, prompt.event_id, "✅")  # his own request: four eyes
    await mallory.react(room, prompt.event_id, "✅")  # not an approver
    listing = await answer("!approvals")
    assert "requested" in listing
    await alice.react(room, prompt.event_id, "❌")  # alice is not an approver: ignored
    await bob.react(room, prompt.event_id, "❌")  # the requester rejects
    await alice.wait_for(edit_of(prompt.event_id, f"🚫 Rejected by {bob.user_id}"), timeout=WAIT_S)

    reactions = [
        (e.actor, e.outcome, e.detail)
        for e in await approval_audit(runner)
        if e.action == "approval:reaction"
    ]
    assert reactions == [
        (bob.user_id, "ignored", "own-request"),
        (mallory.user_id, "ignored", "not-authorised"),
        (alice.user_id, "ignored", "not-authorised"),
        (bob.user_id, "reject", None),
    ]
    assert "operation" not in controller.app()


async def test_an_unanswered_request_expires_and_the_prompt_says_so(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """With nobody approving, the scheduled job closes the request at its expiry and edits the prompt."""
    kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    room = await room_of(alice, bob, bot_account.user_id)
    apps = {"cilium": gated(kube, [alice.user_id], [bob.user_id], expires_after_s=2.0)}
    runner = await start_bot(bots, synapse, bot_account, tmp_path, room, kube, apps)
    await alice.wait_joined(room, bot_account.user_id)
    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)

    await alice.wait_for(edit_of(prompt.event_id, "⌛ Expired at"), timeout=WAIT_S)
    await bob.react(room, prompt.event_id, "✅")
    listing_command = await alice.send_text(room, "!approvals")
    listing = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=listing_command)
    assert "No open sync requests" in listing.body

    async def late_reaction() -> AuditEntry:
        while True:
            for entry in await approval_audit(runner):
                if entry.action == "approval:reaction":
                    return entry
            await asyncio.sleep(0.05)

    entry = await asyncio.wait_for(late_reaction(), WAIT_S)
    assert (entry.actor, entry.outcome, entry.detail) == (bob.user_id, "ignored", "not-open")
    assert "operation" not in controller.app()
    assert [e.action for e in await approval_audit(runner)][:2] == ["approval:requested", "approval:expired"]


async def test_an_approval_made_in_time_counts_when_the_bot_is_back_late(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """A ✅ made before the expiry while the bot was down counts even if the bot returns after the expiry."""
    kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    room = await room_of(alice, bob, bot_account.user_id)
    apps = {"cilium": gated(kube, [alice.user_id], [bob.user_id], expires_after_s=4.0)}
    runner = await start_bot(
        bots, synapse, bot_account, tmp_path, room, kube, apps, expiry_check_interval_s=2.0
    )
    await alice.wait_joined(room, bot_account.user_id)
    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)

    await runner.stop()
    await bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)
    await bob.react(room, prompt.event_id, "✅")
    await asyncio.sleep(5.0)  # past the expiry, with the bot still down
    await runner.start()
    operation = await controller.operation()
    assert operation["sync"]["revision"] == REV_B
