"""The bot's sync filter against a real Synapse: its own sends stay out of its sync, people's events do not."""

from __future__ import annotations

from nio import Event, MatrixRoom

from tests.integration.fixtures import ServeAlice
from tests.integration.people import Account

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
