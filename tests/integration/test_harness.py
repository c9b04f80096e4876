"""The integration harness itself: real Synapse, real encrypted nio clients."""

from __future__ import annotations

import signal
from pathlib import Path

from nio import MegolmEvent, ReactionEvent, RoomMessageNotice, RoomMessageText

from bot.demo.synapse import SynapseServer

from .botrunner import bot_config
from .fixtures import BotProcessFactory
from .people import Account, PersonFactory, event_id_is


async def test_encrypted_message_is_read_decrypted_by_the_other_person(
    person_factory: PersonFactory,
) -> None:
    """A message in an encrypted room arrives encrypted on the wire and decrypted at the receiver."""
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room_id = await alice.create_room("harness", encrypted=True, invite=[bob.user_id])
    await bob.join(room_id)

    event_id = await alice.send_text(room_id, "hello bob", wait_members=[bob.user_id])

    received = await bob.wait_for(event_id_is(event_id), room_id=room_id)
    assert isinstance(received, RoomMessageText)
    assert received.body == "hello bob"
    assert received.sender == alice.user_id
    # nio sets .decrypted only on events it decrypted: proves the room really is encrypted.
    assert received.decrypted
    assert bob.client.rooms[room_id].encrypted


async def test_notice_replies_and_reactions_are_seen(person_factory: PersonFactory) -> None:
    """wait_for_reply finds a notice after an anchor event; encrypted and plain reactions both arrive."""
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room_id = await alice.create_room("harness", invite=[bob.user_id])
    await bob.join(room_id)
    before = await bob.send_text(room_id, "an older message from bob", wait_members=[alice.user_id])
    command = await alice.send_text(room_id, "!status", wait_members=[bob.user_id])
    await bob.wait_for(event_id_is(command), room_id=room_id)

    await bob.send_text(room_id, "all good", msgtype="m.notice", formatted_body="<b>all good</b>")
    reply = await alice.wait_for_reply(room_id, bob.user_id, after_event_id=command)

    # The older m.text from bob comes before the anchor, so it is skipped.
    assert before != reply.event_id
    assert isinstance(reply, RoomMessageNotice)
    assert reply.body == "all good"
    assert reply.formatted_body == "<b>all good</b>"

    # Element encrypts reactions in encrypted rooms (react's default); nio's
    # room_send sends them in the clear. The bot must understand both.
    for encrypted, key in ((True, "✅"), (False, "❌")):
        reaction_id = await alice.react(room_id, reply.event_id, key, encrypted=encrypted)
        reaction = await bob.wait_for(event_id_is(reaction_id), room_id=room_id)
        assert isinstance(reaction, ReactionEvent)
        assert (reaction.key, reaction.reacts_to, reaction.sender) == (key, reply.event_id, alice.user_id)
        assert reaction.decrypted is encrypted


async def test_synapse_restart_keeps_users_rooms_and_running_clients(
    synapse: SynapseServer, person_factory: PersonFactory
) -> None:
    """After a Synapse restart users can log in again, rooms remain, and clients that kept running recover."""
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room_id = await alice.create_room("survives restarts", invite=[bob.user_id])
    await bob.join(room_id)
    await alice.send_text(room_id, "before restart", wait_members=[bob.user_id])
    port = synapse.port

    # Called on the event loop on purpose: start() from the main thread keeps
    # the parent-death signal. The clients' syncs just reconnect afterwards.
    synapse.restart()

    assert synapse.is_running
    assert synapse.port == port
    # A new device for alice: the account and the room membership survived.
    alice_again = await person_factory(account=Account(alice.user_id, alice.password))
    assert alice_again.device_id != alice.device_id
    joined = await alice_again.client.joined_rooms()
    assert room_id in joined.rooms
    await alice_again.wait_joined(room_id, bob.user_id)
    # History is there, but the new device never got the old room key.
    history = await alice_again.wait_for(
        lambda e: isinstance(e, MegolmEvent | RoomMessageText), room_id=room_id
    )
    assert isinstance(history, MegolmEvent)

    # The old clients kept syncing through the restart; a message sent now is
    # keyed for every current device, including the one that appeared since.
    after = await alice.send_text(room_id, "after restart")
    for reader in (bob, alice_again):
        seen = await reader.wait_for(event_id_is(after), room_id=room_id)
        assert isinstance(seen, RoomMessageText)
        assert seen.body == "after restart"


async def test_bot_process_answers_after_sigkill_and_restart(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
) -> None:
    """The subprocess harness: the bot answers !ping, dies on SIGKILL, and answers again after a restart."""
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    bot = bot_process(bot_config(synapse.base_url, bot_account, tmp_path / "state", [room]))
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_account.user_id)
    first = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, bot_account.user_id, after_event_id=first)

    assert await bot.kill() == -signal.SIGKILL
    bot.start()
    await bot.wait_ready()
    second = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, bot_account.user_id, after_event_id=second)
    assert bot_account.password not in bot.log_text()
    assert bot_account.password not in bot.config_path.read_text()
