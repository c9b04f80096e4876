"""The bot as Element users see it in 2026: matrix-js-sdk's Rust crypto, "exclude insecure devices" on.

Each person here is an ``ElementPerson`` (tests/element/person.mjs) whose
own device is cross-signed and whose isolation mode is Element's default
since April 2026 (``only_signed``): room keys go only to cross-signed
devices and events from other devices are not decrypted. Before the bot
cross-signed its device, every case here failed with
``UNSIGNED_SENDER_DEVICE`` or a command that never arrived.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from nio import AsyncClient, LoginResponse

from bot.approvals.store import ApprovalRepo
from bot.demo.synapse import SynapseServer, free_port
from bot.matrix.cross_signing import device_signed_by_owner, published_identity
from bot.matrix.identity import raw_request
from tests.integration.argo_world import WAIT_S, Controller, gated
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.element import ElementEvent, ElementFactory, ElementPerson, Shield
from tests.integration.people import Account, PersonFactory
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import REV_B, application

HOOK_TOKEN = "element-test-hook-token-4Jq"
NO_SHIELD = Shield("none", None)


async def element_2026(element_factory: ElementFactory, prefix: str, **kwargs: Any) -> ElementPerson:
    """An Element person as Element runs today: own device cross-signed, only_signed isolation."""
    person = await element_factory(prefix, **kwargs)
    status = await person.bootstrap_cross_signing()
    assert status["device_signed_by_owner"], status
    await person.set_isolation("only_signed")
    return person


async def start_bot(
    bots: list[RunningBot], synapse: SynapseServer, account: Account, state: Path, room: str, **sections: Any
) -> RunningBot:
    runner = RunningBot(bot_settings(synapse.base_url, account, state, [room], **sections))
    bots.append(runner)
    await runner.start()
    return runner


def reply_to(command_id: str, sender: str) -> Any:
    """A decrypted bot message that replies to ``command_id``."""

    def matches(event: ElementEvent) -> bool:
        relates = event.content.get("m.relates_to", {})
        return (
            event.sender == sender
            and event.decryption_failure is None
            and relates.get("m.in_reply_to", {}).get("event_id") == command_id
        )

    return matches


async def ping(person: ElementPerson, room: str, bot_user: str) -> ElementEvent:
    """Send !ping and wait for the bot's reply as the person decrypted it."""
    command = await person.send_text(room, "!ping", wait_members=[bot_user])
    return await person.wait_for(reply_to(command, bot_user), room_id=room, what="the bot's reply to !ping")


async def published_master(synapse: SynapseServer, account: Account) -> str | None:
    """The master key the homeserver publishes for ``account`` (read by a throwaway nio login)."""
    client = AsyncClient(synapse.base_url, account.user_id)
    try:
        assert isinstance(await client.login(account.password), LoginResponse)
        status, query = await raw_request(
            client, "POST", "/_matrix/client/v3/keys/query", {"device_keys": {account.user_id: []}}
        )
        assert status == 200
        return published_identity(query, account.user_id).master
    finally:
        await client.close()


async def bot_room(person: ElementPerson, bot_user: str, *others: str) -> str:
    return await person.create_room("alerts", invite=[bot_user, *others])


class ElementServed(NamedTuple):
    alice: ElementPerson
    room: str
    runner: RunningBot


ServeElement = Callable[..., Awaitable[ElementServed]]


@pytest.fixture
def serve_element(
    synapse: SynapseServer,
    bot_account: Account,
    element_factory: ElementFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> ServeElement:
    """``await serve_element(**sections)``: an Element-2026 Alice, her encrypted room, the bot serving it."""

    async def serve(**sections: Any) -> ElementServed:
        alice = await element_2026(element_factory, "alice")
        room = await bot_room(alice, bot_account.user_id)
        runner = await start_bot(bots, synapse, bot_account, tmp_path / "bot", room, **sections)
        assert runner.bot is not None
        return ElementServed(alice, room, runner)

    return serve


async def test_element_2026_person_talks_with_the_bot_with_no_shield(
    bot_account: Account, serve_element: ServeElement
) -> None:
    """An Element-2026 person's !ping reaches the bot; the reply decrypts with no shield, says verified."""
    alice, room, runner = await serve_element()
    assert runner.bot is not None

    reply = await ping(alice, room, bot_account.user_id)

    assert reply.encrypted and reply.shield == NO_SHIELD
    assert reply.body is not None and reply.body.startswith("pong")
    assert "is verified by its owner" in reply.body
    assert f"device {alice.device_id}, cross-signed by its owner" in reply.body
    device = await alice.device_info(bot_account.user_id, runner.bot.connection.client.device_id)
    assert device["signed_by_owner"], device
    assert runner.bot.metrics.undecryptable_events._value.get() == 0


async def test_alert_group_relayed_to_the_room_is_readable_by_an_element_2026_person(
    synapse: SynapseServer,
    bot_account: Account,
    element_factory: ElementFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """An Alertmanager group posted to the bot reaches the Element-2026 person decrypted, no shield."""
    alice = await element_2026(element_factory, "alice")
    room = await bot_room(alice, bot_account.user_id)
    port = free_port()
    await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        room,
        http={"hook_tokens": {"alertmanager": HOOK_TOKEN}, "port": port},
        alertmanager={"enabled": True, "default_rooms": [room]},
    )
    await alice.wait_joined(room, bot_account.user_id)
    since = alice.mark()
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    group = {
        "version": "4",
        "groupKey": '{}:{alertname="NodeDiskPressure"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "readybot",
        "groupLabels": {"alertname": "NodeDiskPressure"},
        "commonLabels": {"alertname": "NodeDiskPressure", "severity": "critical"},
        "commonAnnotations": {"summary": "node-3 is running out of disk"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "NodeDiskPressure", "severity": "critical", "node": "node-3"},
                "annotations": {"summary": "node-3 is running out of disk"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "a1b2c3d4e5f60718",
            }
        ],
    }
    headers = {"Authorization": f"Bearer {HOOK_TOKEN}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/hooks/alertmanager", data=json.dumps(group), headers=headers
        ) as answer,
    ):
        assert answer.status == 200, await answer.text()

    alert = await alice.wait_for(
        lambda e: e.sender == bot_account.user_id and "NodeDiskPressure" in (e.body or ""),
        room_id=room,
        since=since,
        timeout=WAIT_S,
        what="the alert group",
    )
    assert alert.encrypted and alert.decryption_failure is None and alert.shield == NO_SHIELD


async def test_restart_and_lost_crypto_store_keep_element_people_reading(
    bot_account: Account, serve_element: ServeElement
) -> None:
    """After a restart, and after a wiped crypto store (new device), Element-2026 still reads the bot."""
    alice, room, runner = await serve_element()
    assert (await ping(alice, room, bot_account.user_id)).shield == NO_SHIELD

    await runner.stop()
    await runner.start()
    assert (await ping(alice, room, bot_account.user_id)).shield == NO_SHIELD

    await runner.stop()
    shutil.rmtree(runner.settings.matrix.store_dir)
    await runner.start()
    assert runner.bot is not None
    reply = await ping(alice, room, bot_account.user_id)
    assert reply.shield == NO_SHIELD and reply.decryption_failure is None
    assert runner.bot.connection.client.device_id in (reply.body or "")


async def test_recovery_key_signs_the_device_with_the_identity_made_in_element(
    synapse: SynapseServer,
    bot_account: Account,
    element_factory: ElementFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """The bot's account set up in Element (recovery key): the bot signs with that same identity."""
    setup = await element_factory("bot-setup", account=bot_account)
    await setup.bootstrap_cross_signing()
    recovery_key = await setup.bootstrap_secret_storage()
    master = await published_master(synapse, bot_account)
    assert master is not None
    alice = await element_2026(element_factory, "alice")
    room = await bot_room(alice, bot_account.user_id)

    runner = await start_bot(
        bots, synapse, bot_account, tmp_path / "bot", room, matrix={"recovery_key": recovery_key}
    )
    assert runner.bot is not None

    client = runner.bot.connection.client
    status, query = await raw_request(
        client, "POST", "/_matrix/client/v3/keys/query", {"device_keys": {bot_account.user_id: []}}
    )
    assert status == 200
    assert published_identity(query, bot_account.user_id).master == master
    assert device_signed_by_owner(query, bot_account.user_id, client.device_id)
    assert (await ping(alice, room, bot_account.user_id)).shield == NO_SHIELD


async def test_command_needing_a_cross_signed_device_accepts_an_element_person(
    bot_account: Account, serve_element: ServeElement
) -> None:
    """require_cross_signed_device lets a cross-signed Element device run the command; audited so."""
    alice, room, runner = await serve_element(
        permissions={"commands": {"ping": {"require_cross_signed_device": True}}}
    )
    assert runner.bot is not None

    reply = await ping(alice, room, bot_account.user_id)

    assert reply.body is not None and reply.body.startswith("pong")
    entry = next(e for e in await runner.bot.audit.recent() if e.action == "command:ping")
    assert (entry.outcome, entry.sender_device, entry.cross_signed) == ("ok", alice.device_id, True)


async def test_approve_counts_only_encrypted_from_a_cross_signed_device(
    synapse: SynapseServer,
    bot_account: Account,
    element_factory: ElementFactory,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """Signed-device gate: a ✅ and a nio (unsigned) `!approve` do nothing; Element's `!approve` syncs."""
    controller = Controller(kube)
    controller.put(application("cilium"))
    alice = await element_2026(element_factory, "alice")
    bob = await element_2026(element_factory, "bob")
    bob_nio = await person_factory("bob-legacy")
    room = await bot_room(alice, bot_account.user_id, bob.user_id, bob_nio.user_id)
    await bob.join(room)
    await bob_nio.join(room)
    apps = {
        "cilium": gated(
            kube, [alice.user_id], [bob.user_id, bob_nio.user_id], require_cross_signed_device=True
        )
    }
    kubernetes = kube.settings().model_dump(mode="json", exclude_none=True)
    runner = await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        room,
        kubernetes=kubernetes,
        approvals={"apps": apps, "poll_interval_s": 0.1},
    )
    assert runner.bot is not None

    command = await alice.send_text(room, "!sync cilium", wait_members=[bot_account.user_id])
    prompt = await bob.wait_for(reply_to(command, bot_account.user_id), room_id=room, timeout=WAIT_S)
    assert prompt.shield == NO_SHIELD
    approval_id = (prompt.body or "").split("Sync request ", 1)[1].split(":", 1)[0]
    assert f"!approve {approval_id} from a verified device" in (prompt.body or "")

    await bob.react(room, prompt.event_id, "✅")
    await bob.wait_for(
        lambda e: "a ✅ does not approve cilium" in (e.body or ""), room_id=room, timeout=WAIT_S
    )
    legacy = await bob_nio.send_text(room, f"!approve {approval_id}", wait_members=[bot_account.user_id])
    refusal = await bob_nio.wait_for_reply(room, bot_account.user_id, after_event_id=legacy)
    assert "does not count" in refusal.body and "verified" in refusal.body
    assert controller.app().get("operation") is None

    approve = await bob.send_text(room, f"!approve {approval_id}")
    answer = await bob.wait_for(reply_to(approve, bot_account.user_id), room_id=room, timeout=WAIT_S)
    assert "counts" in (answer.body or "")
    operation = await controller.operation()
    assert operation["sync"]["revision"] == REV_B
    votes = [(v.voter, v.effect, v.reason) for v in await ApprovalRepo(runner.bot.db).votes(approval_id)]
    assert votes == [
        (bob.user_id, "ignored", "device-not-cross-signed"),
        (bob_nio.user_id, "ignored", "device-not-cross-signed"),
        (bob.user_id, "approve", None),
    ]
