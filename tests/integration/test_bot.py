"""The bot against a real Synapse, driven by people's clients in encrypted rooms."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nio import RoomMemberEvent, RoomMessageNotice

from bot import __version__
from bot.demo.synapse import SynapseServer
from bot.services import CommandContext
from commands.help import help as help_command
from commands.ping import ping as ping_command
from commands.registry import CommandRegistry
from tests.integration.botrunner import RunningBot
from tests.integration.fixtures import ServeAlice, room_with_bot, start_bot
from tests.integration.people import Account, Person, PersonFactory

BotFactory = Callable[..., "asyncio.Future[RunningBot]"]


def replies_to(person: Person, room_id: str, sender: str, event_id: str) -> list[RoomMessageNotice]:
    """Every notice from ``sender`` replying to ``event_id`` that ``person`` has received."""
    found = []
    for room, event in person.received:
        if room != room_id or not isinstance(event, RoomMessageNotice) or event.sender != sender:
            continue
        relates = event.source.get("content", {}).get("m.relates_to", {})
        if relates.get("m.in_reply_to", {}).get("event_id") == event_id:
            found.append(event)
    return found


async def test_ping_in_an_encrypted_room_answers_with_version_and_delay(
    bot_account: Account,
    serve_alice: ServeAlice,
) -> None:
    """A person's `!ping` in an encrypted room gets an encrypted reply with the version and a delay."""
    alice, room, _ = await serve_alice()

    command = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command)

    assert isinstance(reply, RoomMessageNotice)
    assert reply.decrypted, "the reply in an encrypted room must be encrypted"
    assert reply.body.startswith("pong")
    assert __version__ in reply.body
    assert " ms " in reply.body
    assert replies_to(alice, room, bot_account.user_id, command) == [reply]


async def test_help_lists_commands_and_explains_one(
    bot_account: Account,
    serve_alice: ServeAlice,
) -> None:
    """`!help` lists every command; `!help ping` shows ping's usage line."""
    alice, room, _ = await serve_alice()

    listing = await alice.send_text(room, "!help", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=listing)
    assert "!ping" in reply.body and "!help [command_name]" in reply.body
    assert reply.source["content"]["format"] == "org.matrix.custom.html"

    one = await alice.send_text(room, "!help ping")
    detail = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=one)
    assert detail.body.startswith("!ping")


async def test_unknown_command_gets_a_hint(
    bot_account: Account,
    serve_alice: ServeAlice,
) -> None:
    """An unknown command is answered with the name and where to look."""
    alice, room, _ = await serve_alice()

    command = await alice.send_text(room, "!pnig", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=command)
    assert "Unknown command `!pnig`" in reply.body and "!help" in reply.body


async def test_user_outside_the_allow_list_is_refused(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """A user not on the command's allow-list is told no, without learning who is allowed; audited."""
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id, bob.user_id])
    await bob.join(room)
    runner = await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        [room],
        permissions={"commands": {"ping": {"users": [alice.user_id]}}},
    )
    await alice.wait_joined(room, bot_account.user_id)

    refused = await bob.send_text(room, "!ping", wait_members=[bot_account.user_id])
    reply = await bob.wait_for_reply(room, bot_account.user_id, after_event_id=refused)
    assert "not allowed" in reply.body
    assert alice.user_id not in reply.body

    allowed = await alice.send_text(room, "!ping")
    assert (await alice.wait_for_reply(room, bot_account.user_id, after_event_id=allowed)).body.startswith(
        "pong"
    )

    assert runner.bot is not None
    entries = await runner.bot.audit.recent(10)
    outcomes = {(e.actor, e.action, e.outcome) for e in entries}
    assert (bob.user_id, "command:ping", "denied") in outcomes
    assert (alice.user_id, "command:ping", "ok") in outcomes


async def test_power_level_rule_counts_a_v12_room_creator_as_highest(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """In a v12 room the creator passes a power-level-100 rule; a member at level 0 does not."""
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id, bob.user_id])
    await bob.join(room)
    await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        [room],
        permissions={"commands": {"ping": {"min_power_level": 100}}},
    )
    await alice.wait_joined(room, bot_account.user_id)

    creator = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    assert (await alice.wait_for_reply(room, bot_account.user_id, after_event_id=creator)).body.startswith(
        "pong"
    )
    member = await bob.send_text(room, "!ping")
    assert "not allowed" in (await bob.wait_for_reply(room, bot_account.user_id, after_event_id=member)).body


async def test_a_failing_handler_is_answered_with_a_reference_and_the_bot_lives_on(
    bot_account: Account,
    caplog: pytest.LogCaptureFixture,
    serve_alice: ServeAlice,
) -> None:
    """A handler that raises gets 'internal error (ref …)' with the ref in the log; the next command works."""
    registry = CommandRegistry()
    registry.command()(ping_command)
    registry.command()(help_command)

    @registry.command()
    async def boom(ctx: CommandContext) -> str:
        """Fail on purpose."""
        raise RuntimeError("kaboom")

    alice, room, _ = await serve_alice(registry)

    failing = await alice.send_text(room, "!boom", wait_members=[bot_account.user_id])
    reply = await alice.wait_for_reply(room, bot_account.user_id, after_event_id=failing)
    assert "internal error (ref " in reply.body
    assert "kaboom" not in reply.body and "Traceback" not in reply.body
    ref = reply.body.split("(ref ")[1].split(")")[0]
    assert any(ref in record.getMessage() for record in caplog.records)

    after = await alice.send_text(room, "!ping")
    assert (await alice.wait_for_reply(room, bot_account.user_id, after_event_id=after)).body.startswith(
        "pong"
    )


async def test_commands_from_before_a_restart_are_not_run_again(
    bot_account: Account,
    serve_alice: ServeAlice,
) -> None:
    """After a restart, neither an answered command nor one sent while the bot was down is run."""
    alice, room, runner = await serve_alice()
    answered = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    await alice.wait_for_reply(room, bot_account.user_id, after_event_id=answered)
    assert runner.bot is not None
    first_device = runner.bot.connection.client.device_id

    await runner.stop()
    while_down = await alice.send_text(room, "!ping")
    await runner.start()
    assert runner.bot.connection.client.device_id == first_device, "a restart must reuse the device"

    probe = await alice.send_text(room, "!help")
    await alice.wait_for_reply(room, bot_account.user_id, after_event_id=probe)
    # The bot answers in the order it reads, so by now any replay would be in.
    assert len(replies_to(alice, room, bot_account.user_id, answered)) == 1
    assert replies_to(alice, room, bot_account.user_id, while_down) == []
    entries = await runner.bot.audit.recent(20)
    assert any(e.event_id == while_down and e.outcome == "sent-before-start" for e in entries)


async def test_shutdown_is_prompt(
    serve_alice: ServeAlice,
) -> None:
    """A stop (SIGTERM's path) completes in well under 10 s even mid long-poll."""
    runner = (await serve_alice()).runner
    took = await runner.stop()
    assert took < 10


async def test_messages_queued_during_an_outage_arrive_once_in_order_with_one_in_flight(
    synapse: SynapseServer,
    bot_account: Account,
    serve_alice: ServeAlice,
) -> None:
    """With one send in flight per room, messages queued during an outage arrive once each, in order."""
    # The default (several in flight) keeps only relations after their targets;
    # strict queue order is what outbox.max_in_flight_per_room: 1 gives.
    alice, room, runner = await serve_alice(outbox={"max_in_flight_per_room": 1})
    assert runner.bot is not None
    # The bot's encryption session for the room exists before the outage.
    warmup = await alice.send_text(room, "!ping", wait_members=[bot_account.user_id])
    await alice.wait_for_reply(room, bot_account.user_id, after_event_id=warmup)

    await asyncio.to_thread(synapse.stop)
    try:
        for n in range(8):
            await runner.bot.outbox.send_message(room, {"msgtype": "m.notice", "body": f"queued {n}"})
        await asyncio.sleep(1.5)  # let the sender hit the outage and back off
        assert (await runner.bot.outbox.stats()).depth == 8
    finally:
        await asyncio.to_thread(synapse.start)

    async def all_arrived() -> list[str]:
        while True:
            bodies = [
                event.body
                for room_id, event in alice.received
                if room_id == room
                and isinstance(event, RoomMessageNotice)
                and event.body.startswith("queued ")
            ]
            if len(bodies) >= 8:
                await asyncio.sleep(1.0)  # a duplicate would show up in this window
                return [
                    event.body
                    for room_id, event in alice.received
                    if room_id == room
                    and isinstance(event, RoomMessageNotice)
                    and event.body.startswith("queued ")
                ]
            await asyncio.sleep(0.1)

    bodies = await asyncio.wait_for(all_arrived(), timeout=60)
    assert bodies == [f"queued {n}" for n in range(8)]
    assert (await runner.bot.outbox.stats()).depth == 0


async def test_invites_to_unconfigured_rooms_from_strangers_are_declined(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """An invite to a room not in matrix.rooms, from a user not in invite_from, makes the bot leave it."""
    alice = await person_factory("alice")
    mallory = await person_factory("mallory")
    room = await room_with_bot(alice, bot_account.user_id)
    await start_bot(bots, synapse, bot_account, tmp_path / "bot", [room])
    await alice.wait_joined(room, bot_account.user_id)

    elsewhere = await mallory.create_room("lure", encrypted=False, invite=[bot_account.user_id])

    def bot_left(event: Any) -> bool:
        return (
            isinstance(event, RoomMemberEvent)
            and event.state_key == bot_account.user_id
            and event.membership == "leave"
        )

    await mallory.wait_for(bot_left, room_id=elsewhere, what="the bot declining the invite")


async def test_commands_count_only_in_served_rooms(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """A trusted inviter can bring the bot into a room, but commands there are not answered."""
    alice = await person_factory("alice")
    carol = await person_factory("carol")
    room = await room_with_bot(alice, bot_account.user_id)
    await start_bot(
        bots, synapse, bot_account, tmp_path / "bot", [room], matrix={"invite_from": [carol.user_id]}
    )
    await alice.wait_joined(room, bot_account.user_id)
    side = await carol.create_room("side", encrypted=True, invite=[bot_account.user_id])
    await carol.wait_joined(side, bot_account.user_id)

    ignored = await carol.send_text(side, "!ping", wait_members=[bot_account.user_id])
    answered = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, bot_account.user_id, after_event_id=answered)
    # Both rooms arrive in the same syncs; the served room's reply came back, so
    # an answer in the side room would have been sent by now.
    await asyncio.sleep(1.0)
    assert replies_to(carol, side, bot_account.user_id, ignored) == []
