"""The bot's cross-signing identity against a real Synapse: made, kept, re-signed, refused, reset.

What Element's 2026 mode sees of it is in ``test_element.py``; these tests
read the homeserver's published keys directly (``/keys/query``) and check
the signatures with the same code a client would need to trust the bot.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from nio import AsyncClient, LoginResponse

from bot.demo.synapse import SynapseServer
from bot.ha.replica import ReplicaKeyValue
from bot.matrix.connection import MatrixConnection
from bot.matrix.cross_signing import CrossSigningKeys, device_signed_by_owner, published_identity
from bot.matrix.identity import CREATING_KV, CrossSigningIdentity, Step, raw_request
from bot.metrics import Metrics
from bot.schema import MIGRATIONS
from bot.store.database import Database
from bot.store.kv import KeyValueRepo
from tests.integration.botrunner import RunningBot, bot_config, bot_settings
from tests.integration.fixtures import BotProcessFactory, ServeAlice
from tests.integration.people import Account


async def published(client: AsyncClient, user_id: str) -> dict[str, Any]:
    """What anyone's client learns of ``user_id``'s keys."""
    status, answer = await raw_request(
        client, "POST", "/_matrix/client/v3/keys/query", {"device_keys": {user_id: []}}
    )
    assert status == 200, answer
    return answer


async def own_identity_from_outside(synapse: SynapseServer, account: Account) -> str:
    """Give ``account`` a cross-signing identity the bot does not hold (as Element would); its master key."""
    client = AsyncClient(synapse.base_url, account.user_id)
    try:
        login = await client.login(account.password, device_name="element elsewhere")
        assert isinstance(login, LoginResponse)
        keys = CrossSigningKeys.generate()
        status, answer = await raw_request(
            client, "POST", "/_matrix/client/v3/keys/device_signing/upload", keys.upload_body(account.user_id)
        )
        assert status == 200, answer
        return keys.public_keys()["master"]
    finally:
        await client.close()


async def test_first_start_cross_signs_the_bots_device(bot_account: Account, serve_alice: ServeAlice) -> None:
    """On a first start the bot publishes an identity; its device has a valid self-signing signature."""
    alice, room, runner = await serve_alice()
    assert runner.bot is not None
    device = runner.bot.connection.client.device_id

    query = await published(alice.client, bot_account.user_id)

    assert published_identity(query, bot_account.user_id).self_signing_valid
    assert device_signed_by_owner(query, bot_account.user_id, device)
    assert (
        runner.bot.metrics.registry.get_sample_value("readybot_device_cross_signed", {"device": device}) == 1
    )
    command = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command)
    assert f"this device ({device}) is verified by its owner" in reply.body


async def test_restart_keeps_the_identity_and_the_signature(
    synapse: SynapseServer,
    bot_account: Account,
    bots: list[RunningBot],
    tmp_path: Path,
    serve_alice: ServeAlice,
) -> None:
    """A restart reuses the device and the identity: same published keys, the device still signed."""
    alice, _, runner = await serve_alice()
    assert runner.bot is not None
    device = runner.bot.connection.client.device_id
    before = published_identity(await published(alice.client, bot_account.user_id), bot_account.user_id)

    await runner.stop()
    await runner.start()
    assert runner.bot is not None

    query = await published(alice.client, bot_account.user_id)
    assert runner.bot.connection.client.device_id == device
    assert published_identity(query, bot_account.user_id) == before
    assert device_signed_by_owner(query, bot_account.user_id, device)


async def test_lost_crypto_store_gives_a_new_device_signed_by_the_same_identity(
    bot_account: Account, serve_alice: ServeAlice
) -> None:
    """A wiped crypto store gives a new device, signed by the unchanged identity with no manual step."""
    alice, room, runner = await serve_alice()
    assert runner.bot is not None
    old_device = runner.bot.connection.client.device_id
    master = published_identity(
        await published(alice.client, bot_account.user_id), bot_account.user_id
    ).master

    await runner.stop()
    shutil.rmtree(runner.settings.matrix.store_dir)
    await runner.start()
    assert runner.bot is not None

    new_device = runner.bot.connection.client.device_id
    query = await published(alice.client, bot_account.user_id)
    assert new_device != old_device
    assert published_identity(query, bot_account.user_id).master == master
    assert device_signed_by_owner(query, bot_account.user_id, new_device)
    command = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command)
    assert reply.body.startswith("pong")


async def test_identity_the_bot_does_not_hold_stops_the_start_with_exit_78(
    synapse: SynapseServer, bot_account: Account, bot_process: BotProcessFactory, tmp_path: Path
) -> None:
    """A foreign identity without recovery key or reset: exit 78, one line naming both, nothing replaced."""
    master = await own_identity_from_outside(synapse, bot_account)
    process = bot_process(bot_config(synapse.base_url, bot_account, tmp_path / "bot", []))

    process.start()
    code = await process.wait_exit(timeout_s=60)

    assert code == 78, process.log_tail()
    lines = [
        line for line in process.log_text().splitlines() if "already has a cross-signing identity" in line
    ]
    assert len(lines) == 1, process.log_tail()
    assert "matrix.recovery_key" in lines[0] and "matrix.cross_signing.reset: true" in lines[0]
    client = AsyncClient(synapse.base_url, bot_account.user_id)
    try:
        assert isinstance(await client.login(bot_account.password), LoginResponse)
        assert (
            published_identity(await published(client, bot_account.user_id), bot_account.user_id).master
            == master
        )
    finally:
        await client.close()


async def test_reset_replaces_an_identity_only_when_asked(
    synapse: SynapseServer, bot_account: Account, bots: list[RunningBot], tmp_path: Path
) -> None:
    """With cross_signing.reset a foreign identity is replaced (password UIA); the device is signed by it."""
    old_master = await own_identity_from_outside(synapse, bot_account)
    settings = bot_settings(synapse.base_url, bot_account, tmp_path / "bot", [])
    reset = settings.matrix.cross_signing.model_copy(update={"reset": True})
    settings = settings.model_copy(
        update={"matrix": settings.matrix.model_copy(update={"cross_signing": reset})}
    )
    runner = RunningBot(settings)
    bots.append(runner)

    await runner.start()
    assert runner.bot is not None

    query = await published(runner.bot.connection.client, bot_account.user_id)
    identity = published_identity(query, bot_account.user_id)
    assert identity.master is not None and identity.master != old_master
    assert device_signed_by_owner(query, bot_account.user_id, runner.bot.connection.client.device_id)


async def test_command_needing_a_cross_signed_device_refuses_an_unsigned_one(
    bot_account: Account, serve_alice: ServeAlice
) -> None:
    """require_cross_signed_device refuses a nio person's (unsigned) !ping, says why, audits the device."""
    alice, room, runner = await serve_alice(
        permissions={"commands": {"ping": {"require_cross_signed_device": True}}}
    )
    assert runner.bot is not None

    command = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command)

    assert reply.body.startswith("⛔ this command must come encrypted from a device you have verified")
    assert f"your device {alice.device_id} is not cross-signed by you" in reply.body
    entry = next(e for e in await runner.bot.audit.recent() if e.event_id == command)
    assert (entry.action, entry.outcome) == ("command:ping", "denied")
    assert (entry.sender_device, entry.cross_signed) == (alice.device_id, False)


async def test_two_replicas_starting_together_make_one_identity_and_both_devices_are_signed(
    synapse: SynapseServer, bot_account: Account, tmp_path: Path
) -> None:
    """Two replicas on one fresh store start at once: one identity is made, and it signs both devices."""
    db = await Database.open(tmp_path / "shared.sqlite3", migrations=MIGRATIONS)
    shared = KeyValueRepo(db)
    connections: list[MatrixConnection] = []
    try:
        identities = []
        for name in ("readybot-0", "readybot-1"):
            settings = bot_settings(synapse.base_url, bot_account, tmp_path / name, [])
            connection = MatrixConnection(settings.matrix, ReplicaKeyValue(db, name), Metrics())
            connections.append(connection)
            await connection.login()
            identities.append(CrossSigningIdentity(connection.client, settings.matrix, shared))

        statuses = await asyncio.gather(*(identity.ensure() for identity in identities))

        assert len({status.master_key for status in statuses}) == 1
        assert sorted(status.step for status in statuses) == sorted([Step.CREATE, Step.USE_STORED])
        query = await published(connections[0].client, bot_account.user_id)
        assert published_identity(query, bot_account.user_id).master == statuses[0].master_key
        for status in statuses:
            assert device_signed_by_owner(query, bot_account.user_id, status.device_id)
        assert await shared.get(CREATING_KV) is None
    finally:
        for connection in connections:
            await connection.close()
        await db.close()
