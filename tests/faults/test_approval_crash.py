"""A SIGKILL in the middle of an approved sync: after the restart one sync ran and its outcome is shown.

The bot runs as a subprocess against the test API server (reached through a
kubeconfig); the test holds the bot's request at the kill point with the
server's ``hold`` knob, so every kill lands exactly where it is meant to,
whatever the machine's load. The test then plays the Argo CD controller.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.demo.synapse import SynapseServer
from tests.faults.approval_world import (
    APP_PATH,
    approval_config,
    audit_actions,
    notices,
    operation_writes,
    patch_statuses,
)
from tests.integration.argo_world import Controller, edit_of, gated, in_thread_of, room_of
from tests.integration.botprocess import BotProcess
from tests.integration.botrunner import eventually
from tests.integration.fixtures import BotProcessFactory
from tests.integration.people import Account, PersonFactory
from tests.kube.apiserver import FakeApiServer, Fault
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import REV_B, application

WAIT_S = 60.0
# Where the bot dies:
# - "before-write": the approval is committed, the bot's pre-write read of the Application is held;
# - "write-lands": the PATCH is held, the bot dies, then the server applies it;
# - "write-refused": the PATCH is held, the bot dies, the app changes, the server refuses it (409);
# - "after-start": the operation is written and the prompt says syncing; no outcome yet.
KILL_POINTS = ["before-write", "write-lands", "write-refused", "after-start"]


async def kill_while_held(bot: BotProcess, server: FakeApiServer, hold: Fault, what: str) -> None:
    """Wait until the server holds the bot's request, then SIGKILL the bot."""
    await eventually(lambda: hold.hits == 1, what, WAIT_S)
    await bot.kill()


@pytest.mark.parametrize("kill_point", KILL_POINTS)
async def test_a_sigkill_mid_approval_leaves_exactly_one_sync_and_one_outcome(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    tmp_path: Path,
    record_property: pytest.RecordProperty,
    kill_point: str,
) -> None:
    """Killed anywhere between Bob's ✅ and the outcome: after restart one sync ran, one outcome shown."""
    server = kube.require_server()
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice, bob = await person_factory("alice"), await person_factory("bob")
    room = await room_of(alice, bob, bot_account.user_id)
    apps = {"cilium": gated(kube, [alice.user_id], [bob.user_id])}
    state = tmp_path / "state"
    bot = bot_process(approval_config(synapse, bot_account, state, room, kube, apps))
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_account.user_id)

    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command, timeout=WAIT_S)
    approval_id = prompt.body.split("Sync request ", 1)[1].split(":", 1)[0]
    await bob.wait_for(lambda e: getattr(e, "event_id", None) == prompt.event_id, room_id=room)

    if kill_point == "before-write":
        # The next read of the Application is the start's re-check, after the approval committed.
        hold = server.hold(APP_PATH, verb="get", times=1)
        await bob.react(room, prompt.event_id, "✅")
        await kill_while_held(bot, server, hold, "the bot's pre-write read")
        hold.release()
    elif kill_point in ("write-lands", "write-refused"):
        hold = server.hold(APP_PATH, verb="patch", times=1)
        await bob.react(room, prompt.event_id, "✅")
        await kill_while_held(bot, server, hold, "the bot's write of the operation")
        if kill_point == "write-refused":
            # The controller refreshes the app meanwhile: the held write is now stale.
            controller.edit({"status": {"reconciledAt": "2030-01-01T00:00:00Z"}})
        hold.release()
        expected = 200 if kill_point == "write-lands" else 409
        await eventually(
            lambda: patch_statuses(server) == [expected], f"the held write answered {expected}", WAIT_S
        )
    else:
        await bob.react(room, prompt.event_id, "✅")
        await alice.wait_for(edit_of(prompt.event_id, "🔄 Syncing"), timeout=WAIT_S)
        await bot.kill()
    writes_before_restart = operation_writes(server, approval_id)

    since = alice.mark()
    bot.start()
    await bot.wait_ready()
    operation = await controller.operation()
    assert operation["sync"]["revision"] == REV_B
    controller.run_to_success()
    await alice.wait_for(edit_of(prompt.event_id, f"✅ Synced {REV_B[:10]}"), since=since, timeout=WAIT_S)
    await alice.wait_for(in_thread_of(prompt.event_id, "✅ Synced"), since=since, timeout=WAIT_S)
    # A barrier: the bot answers !approvals after everything it queued before.
    listing = await alice.send_text(room, "!approvals")
    answer = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=listing, timeout=WAIT_S)
    assert "No open sync requests" in answer.body
    await bot.terminate()

    syncs_started = operation_writes(server, approval_id)
    seen = notices(alice.received, room)
    outcome_edits = sum(edit_of(prompt.event_id, "✅ Synced")(e) for e in seen)
    outcome_lines = sum(in_thread_of(prompt.event_id, "✅ Synced")(e) for e in seen)
    actions = audit_actions(state / "readybot.sqlite3")
    record_property("kill_point", kill_point)
    record_property("syncs_started", syncs_started)
    record_property("outcome_reported", outcome_lines)
    record_property("patches_sent", len(patch_statuses(server)))
    assert writes_before_restart == (1 if kill_point in ("write-lands", "after-start") else 0)
    assert syncs_started == 1
    assert outcome_edits == 1 and outcome_lines == 1
    assert actions.count("approval:started") == 1 and actions.count("approval:succeeded") == 1
    assert "approval:aborted" not in actions
