"""Silences and alert queries from chat, against a real Alertmanager and a real Synapse."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer, free_port
from tests.integration.alertmanager import AlertmanagerServer, receiver_config
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.fixtures import AlertmanagerFactory
from tests.integration.people import Account, Person, PersonFactory

TOKEN = "am-hook-token-Qx81"


async def start_bot(
    bots: list[RunningBot], synapse: SynapseServer, account: Account, state: Path, room: str, **sections: Any
) -> RunningBot:
    runner = RunningBot(bot_settings(synapse.base_url, account, state, [room], **sections))
    bots.append(runner)
    await runner.start()
    return runner


async def ask(person: Person, room: str, bot_user: str, line: str) -> str:
    """Send a command and return the bot's reply body."""
    sent = await person.send_text(room, line, wait_members=[bot_user])
    return (await person.wait_for_reply(room, bot_user, after_event_id=sent)).body


def silence_by(server: AlertmanagerServer, user: str) -> list[dict[str, Any]]:
    return [s for s in server.silences() if s["createdBy"] == user]


async def test_silence_from_chat_is_created_listed_and_lifted_in_alertmanager(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """`!silence` makes a silence as the Matrix user, `!silences` lists it, `!unsilence` ends it; audited."""
    server = alertmanager(receiver_config("http://127.0.0.1:9", TOKEN))
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    runner = await start_bot(
        bots, synapse, bot_account, tmp_path / "bot", room, alertmanager={"api_url": server.base_url}
    )
    await alice.wait_joined(room, bot_account.user_id)

    reply = await ask(
        alice,
        room,
        bot_account.user_id,
        '!silence alertname="KubePodCrashLooping" namespace=shop 2h fixing it',
    )
    assert reply.startswith("🔕 Silenced by " + alice.user_id)
    (created,) = silence_by(server, alice.user_id)
    assert created["status"]["state"] == "active"
    assert created["comment"] == "fixing it"
    assert {(m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in created["matchers"]} == {
        ("alertname", "KubePodCrashLooping", False, True),
        ("namespace", "shop", False, True),
    }
    assert created["id"] in reply

    listing = await ask(alice, room, bot_account.user_id, "!silences")
    assert (
        created["id"] in listing and 'alertname="KubePodCrashLooping"' in listing and alice.user_id in listing
    )

    lifted = await ask(alice, room, bot_account.user_id, f"!unsilence {created['id'][:8]}")
    assert lifted.startswith(f"🔔 Silence {created['id']} lifted by {alice.user_id}")
    (after,) = silence_by(server, alice.user_id)
    assert after["status"]["state"] == "expired"
    assert "No active silences" in await ask(alice, room, bot_account.user_id, "!silences")

    assert runner.bot is not None
    audited = {(e.actor, e.action, e.outcome, e.detail) for e in await runner.bot.audit.recent(30)}
    assert (alice.user_id, "silence:create", "ok", created["id"]) in audited
    assert (alice.user_id, "silence:expire", "ok", None) in audited


async def test_alerts_lists_firing_alerts_but_not_the_watchdog_or_silenced_ones(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """`!alerts` lists what fires, leaves the Watchdog out, and counts silenced alerts instead of listing."""
    server = alertmanager(receiver_config("http://127.0.0.1:9", TOKEN))
    server.fire(
        {"alertname": "DiskFull", "namespace": "db", "severity": "critical"}, {"summary": "disk at 97%"}
    )
    server.fire({"alertname": "CertExpiring", "namespace": "web", "severity": "warning"})
    server.fire({"alertname": "Watchdog", "severity": "none"})
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    await start_bot(
        bots, synapse, bot_account, tmp_path / "bot", room, alertmanager={"api_url": server.base_url}
    )
    await alice.wait_joined(room, bot_account.user_id)

    listing = await ask(alice, room, bot_account.user_id, "!alerts")
    assert "Firing alerts (2)" in listing
    assert "[critical] DiskFull (namespace=db)" in listing and "disk at 97%" in listing
    assert "CertExpiring" in listing and "Watchdog" not in listing

    await ask(alice, room, bot_account.user_id, "!silence alertname=CertExpiring 1h")
    async with asyncio.timeout(10):  # Alertmanager marks alerts silenced on its next evaluation
        while True:
            listing = await ask(alice, room, bot_account.user_id, "!alerts")
            if "CertExpiring" not in listing:
                break
            await asyncio.sleep(0.2)
    assert "Firing alerts (1, plus 1 silenced or inhibited)" in listing

    only = await ask(alice, room, bot_account.user_id, "!alerts severity=warning")
    assert only.startswith('No alerts firing matching {severity="warning"}')


async def test_bad_silences_get_usage_and_an_example_and_create_nothing(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """A bad duration, bad matcher or match-all silence gets usage and example; nothing is created."""
    server = alertmanager(receiver_config("http://127.0.0.1:9", TOKEN))
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    await start_bot(
        bots, synapse, bot_account, tmp_path / "bot", room, alertmanager={"api_url": server.base_url}
    )
    await alice.wait_joined(room, bot_account.user_id)

    for line, problem in (
        ("!silence alertname=Foo 5x", "`5x` is not a duration"),
        ("!silence alertname Foo", "not a matcher"),
        ('!silence alertname=~".*" 1h', "would silence every alert"),
        ("!silence alertname=Foo 9w", "at most 1w"),
    ):
        reply = await ask(alice, room, bot_account.user_id, line)
        assert problem in reply, line
        assert "Usage: `!silence <matchers> <duration> [comment…]`" in reply
        assert "e.g. `!silence alertname=" in reply
    assert server.silences() == []

    # Go's regexes are not Python's: what only Alertmanager refuses comes back in its own words.
    refused = await ask(alice, room, bot_account.user_id, '!silence job=~"(?=api)a.*" 1h')
    assert refused.startswith("⚠️ Alertmanager refused the request:") and "invalid" in refused
    assert server.silences() == []


async def test_only_people_allowed_to_silence_can_silence(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """The "silence" rule governs !silence and !unsilence; !alerts and !silences have their own keys."""
    server = alertmanager(receiver_config("http://127.0.0.1:9", TOKEN))
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id, bob.user_id])
    await bob.join(room)
    await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        room,
        alertmanager={"api_url": server.base_url},
        permissions={"commands": {"silence": {"users": [alice.user_id]}}},
    )
    await alice.wait_joined(room, bot_account.user_id)

    assert "not allowed" in await ask(bob, room, bot_account.user_id, "!silence alertname=Foo 1h")
    assert server.silences() == []
    await ask(alice, room, bot_account.user_id, "!silence alertname=Foo 1h")
    (created,) = server.silences()
    assert "not allowed" in await ask(bob, room, bot_account.user_id, f"!unsilence {created['id']}")
    assert server.silences()[0]["status"]["state"] == "active"
    assert created["id"] in await ask(bob, room, bot_account.user_id, "!silences")


async def test_unreachable_alertmanager_is_said_plainly(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """With Alertmanager down, the commands answer "Alertmanager unreachable" instead of an internal error."""
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        room,
        alertmanager={"api_url": "http://127.0.0.1:9", "api_timeout_s": 2},
    )
    await alice.wait_joined(room, bot_account.user_id)
    assert "Alertmanager unreachable: cannot connect to 127.0.0.1:9" in await ask(
        alice, room, bot_account.user_id, "!alerts"
    )


def in_thread_of(sender: str, root: str, prefix: str) -> Any:
    def matches(event: Event) -> bool:
        if not isinstance(event, RoomMessageNotice) or event.sender != sender:
            return False
        relates = event.source.get("content", {}).get("m.relates_to", {})
        return (
            relates.get("rel_type") == "m.thread"
            and relates.get("event_id") == root
            and event.body.startswith(prefix)
        )

    return matches


async def test_bell_on_an_alert_group_silences_it_and_says_so_in_its_thread(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """🔕 on a relayed group silences its group labels as the reacting user; one not allowed is refused."""
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id, bob.user_id])
    await bob.join(room)
    port = free_port()  # fixed, so Alertmanager's configuration can name it before the bot runs
    server = alertmanager(receiver_config(f"http://127.0.0.1:{port}", TOKEN))
    await start_bot(
        bots,
        synapse,
        bot_account,
        tmp_path / "bot",
        room,
        http={"hook_tokens": {"alertmanager": TOKEN}, "port": port},
        alertmanager={
            "enabled": True,
            "default_rooms": [room],
            "api_url": server.base_url,
            "silence_default_duration": "45m",
        },
        permissions={"commands": {"silence": {"users": [alice.user_id]}}},
    )
    await alice.wait_joined(room, bot_account.user_id)
    await alice.wait_joined(room, bob.user_id)
    labels = {"alertname": "DiskFull", "namespace": "db", "severity": "critical", "pod": "db-0"}
    server.fire(labels, {"summary": "disk at 97%"})

    def group_message(event: Event) -> bool:
        return (
            isinstance(event, RoomMessageNotice)
            and event.sender == bot_account.user_id
            and "DiskFull" in event.body
            and "m.relates_to" not in event.source.get("content", {})
        )

    group = await alice.wait_for(group_message, room_id=room, timeout=20, what="the alert group message")

    await bob.react(room, group.event_id, "🔕")
    await alice.wait_for(
        in_thread_of(bot_account.user_id, group.event_id, "⛔"),
        room_id=room,
        what="the refusal in the thread",
    )
    assert server.silences() == []

    await alice.react(room, group.event_id, "🔕")
    said = await alice.wait_for(
        in_thread_of(bot_account.user_id, group.event_id, "🔕 Silenced"),
        room_id=room,
        what="the silence notice",
    )
    (made,) = server.silences()
    assert made["createdBy"] == alice.user_id
    assert {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in made["matchers"]} == {
        ("alertname", "DiskFull", True, False),
        ("namespace", "db", True, False),
    }
    assert isinstance(said, RoomMessageNotice)
    assert f"Silenced by {alice.user_id} for 45m" in said.body and made["id"] in said.body
