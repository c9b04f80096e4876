"""The bot's sync filter against a real Synapse: its own sends stay out of its sync, not people's events."""

from __future__ import annotations

from pathlib import Path

from nio import Event, MatrixRoom, RoomInviteError

from bot.demo.synapse import SynapseServer
from tests.integration.botrunner import RunningBot, eventually
from tests.integration.fixtures import ServeAlice, room_with_bot, start_bot
from tests.integration.people import Account, PersonFactory

# More than Synapse's default timeline limit for a sync (10): without the
# filter, a burst this long would push the command out of a limited timeline
# if they landed in one sync.
BURST = 15


async def test_own_sends_stay_out_of_the_bots_sync_while_commands_arrive(
    bot_account: Account, serve_alice: ServeAlice
) -> None:
    """After a burst of its own messages, the bot's syncs carry none of them, yet a `!ping` is answered."""
    alice, room, runner = await serve_alice()
    assert runner.bot is not None
    bot = runner.bot
    senders: list[str] = []

    def on_event(_room: MatrixRoom, event: Event) -> None:
        senders.append(event.sender)

    # Called by nio for every timeline event of a sync, as the router's callbacks are.
    bot.connection.client.add_event_callback(on_event, Event)
    sent = [
        await bot.outbox.send_message(room, {"msgtype": "m.notice", "body": f"burst {i}"})
        for i in range(BURST)
    ]
    for outbox_id in sent:
        assert await bot.outbox.wait_sent(outbox_id, 30) is not None

    command = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command)
    assert reply.body.startswith("pong")
    # Alice's client shows the whole burst: the filter is the bot's, not the room's.
    bodies = {getattr(event, "body", None) for room_id, event in alice.received if room_id == room}
    assert {f"burst {i}" for i in range(BURST)} <= bodies
    assert alice.user_id in senders  # the command came through the bot's sync
    assert bot_account.user_id not in senders


async def test_a_room_joined_while_running_gets_encrypted_messages_despite_the_filter(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """Invited after start, the bot joins (its join filtered out) and its message reaches Alice, decrypted."""
    alice = await person_factory("alice")
    first = await room_with_bot(alice, bot_account.user_id)
    later = await alice.create_room("later", encrypted=True)
    runner = await start_bot(bots, synapse, bot_account, tmp_path / "bot", [first, later])
    assert runner.bot is not None
    await alice.wait_joined(first, bot_account.user_id)

    invited = await alice.client.room_invite(later, bot_account.user_id)
    assert not isinstance(invited, RoomInviteError), invited
    await alice.wait_joined(later, bot_account.user_id)
    # nio learnt the room's encryption and Alice's membership from the state it was sent.
    client = runner.bot.connection.client
    await eventually(
        lambda: (
            later in client.rooms
            and client.rooms[later].encrypted
            and alice.user_id in client.rooms[later].users
        ),
        "the bot's view of the room it joined",
    )
    since = alice.mark()
    outbox_id = await runner.bot.outbox.send_message(later, {"msgtype": "m.notice", "body": "after the join"})
    assert await runner.bot.outbox.wait_sent(outbox_id, 30) is not None
    shown = await alice.wait_for(
        lambda e: getattr(e, "body", None) == "after the join", room_id=later, since=since
    )
    assert getattr(shown, "decrypted", False)
