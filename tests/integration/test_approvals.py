"""Approval gates end to end: real Synapse, real E2EE clients, the test Kubernetes API with the Argo CD CRD.

People send ``!sync`` and react in an encrypted room; the test plays the Argo
CD application controller by writing the Application's status into the test
API server, as the controller would.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from bot.store.audit import AuditEntry
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.people import Account, Person, PersonFactory
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import REV_A, REV_B, application, merge_patch

GROUP, PLURAL = "argoproj.io", "applications"
WAIT_S = 20.0


class Controller:
    """Plays the Argo CD application controller on the test API server's store."""

    def __init__(self, kube: KubeTarget) -> None:
        self.store = kube.store
        self.namespace = kube.namespace

    def put(self, obj: dict[str, Any]) -> None:
        self.store.put(copy.deepcopy(obj) | {"metadata": obj["metadata"] | {"namespace": self.namespace}})

    def app(self, name: str = "cilium") -> dict[str, Any]:
        found = self.store.find(GROUP, PLURAL, name, self.namespace)
        assert found is not None
        return found

    def edit(self, patch: dict[str, Any], name: str = "cilium") -> None:
        self.store.put(merge_patch(self.app(name), patch))

    async def operation(self, name: str = "cilium") -> dict[str, Any]:
        """The operation the bot writes, once it is there."""
        async with asyncio.timeout(WAIT_S):
            while not (operation := self.app(name).get("operation")):
                await asyncio.sleep(0.05)
        assert isinstance(operation, dict)
        return operation

    def run_to_success(self, name: str = "cilium") -> None:
        """Running, then Succeeded at the operation's revision; .operation cleared; Synced, Healthy."""
        operation = self.app(name)["operation"]
        self.edit({"status": {"operationState": {"operation": operation, "phase": "Running"}}}, name)
        revision = operation["sync"]["revision"]
        state = {
            "operation": operation,
            "phase": "Succeeded",
            "message": "successfully synced (all tasks run)",
            "syncResult": {"revision": revision, "resources": []},
        }
        history = [*self.app(name)["status"].get("history", []), {"id": 2, "revision": revision}]
        status = {
            "operationState": state,
            "history": history,
            "sync": {"status": "Synced", "revision": revision},
            "health": {"status": "Healthy"},
            "resources": [],
        }
        self.edit({"operation": None, "status": status}, name)


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


def gated(kube: KubeTarget, requesters: list[str], approvers: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "namespace": kube.namespace,
        "requesters": {"users": requesters},
        "approvers": {"users": approvers},
        "sync_options": ["ServerSideApply=true"],
    } | extra


def edit_of(prompt_id: str, text: str) -> Callable[[Event], bool]:
    """An edit (m.replace) of the prompt whose new text contains ``text``."""

    def matches(event: Event) -> bool:
        if not isinstance(event, RoomMessageNotice):
            return False
        content = event.source.get("content", {})
        relates = content.get("m.relates_to", {})
        new = content.get("m.new_content", {})
        return (
            relates.get("rel_type") == "m.replace"
            and relates.get("event_id") == prompt_id
            and text in str(new.get("body", ""))
        )

    return matches


def in_thread_of(prompt_id: str, text: str) -> Callable[[Event], bool]:
    def matches(event: Event) -> bool:
        if not isinstance(event, RoomMessageNotice):
            return False
        relates = event.source.get("content", {}).get("m.relates_to", {})
        return (
            relates.get("rel_type") == "m.thread"
            and relates.get("event_id") == prompt_id
            and text in event.body
        )

    return matches


async def approval_audit(runner: RunningBot) -> list[AuditEntry]:
    assert runner.bot is not None
    return [e for e in reversed(await runner.bot.audit.recent(200)) if e.action.startswith("approval:")]


async def room_of(alice: Person, bob: Person, bot_user: str, *others: Person) -> str:
    room = await alice.create_room(
        "platform", encrypted=True, invite=[bot_user, bob.user_id, *(p.user_id for p in others)]
    )
    for person in (bob, *others):
        await person.join(room)
    return room


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
