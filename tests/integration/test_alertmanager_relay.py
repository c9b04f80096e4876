"""The alert relay end to end: real Alertmanager → bot (in-process) → real Synapse → a person's E2EE client.

Alertmanager runs with group_wait 0s and group_interval 1s, so each change
reaches the room within a couple of seconds; every wait is for a specific
event, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer, free_port
from tests.integration.alertmanager import AlertmanagerServer, receiver_config
from tests.integration.botrunner import RunningBot, bot_settings, eventually
from tests.integration.fixtures import AlertmanagerFactory
from tests.integration.people import Account, Person, PersonFactory
from tests.stores import PostgresForTests

TOKEN = "am-relay-token-Qw81zX"


def relay_bot(
    synapse: SynapseServer,
    account: Account,
    state: Path,
    room: str,
    port: int,
    store: dict[str, Any] | None = None,
    **alertmanager: Any,
) -> RunningBot:
    settings = bot_settings(
        synapse.base_url,
        account,
        state,
        [room],
        # A fixed port: Alertmanager must find the bot again after a restart.
        http={"hook_tokens": {"alertmanager": TOKEN}, "port": port, "max_body_bytes": 65_536},
        alertmanager={"enabled": True, "default_rooms": [room], **alertmanager},
        store=store or {},
    )
    return RunningBot(settings)


# -- reading the room ------------------------------------------------------------


def relation(event: Event) -> dict[str, Any]:
    relates: dict[str, Any] = getattr(event, "source", {}).get("content", {}).get("m.relates_to", {})
    return relates


def originals(person: Person, room: str, bot: str) -> list[RoomMessageNotice]:
    """The bot's top-level messages (not edits, not thread lines)."""
    return [
        e
        for r, e in person.received
        if r == room and isinstance(e, RoomMessageNotice) and e.sender == bot and not relation(e)
    ]


def edits_of(person: Person, room: str, event_id: str) -> list[RoomMessageNotice]:
    return [
        e
        for r, e in person.received
        if r == room
        and isinstance(e, RoomMessageNotice)
        and relation(e).get("rel_type") == "m.replace"
        and relation(e).get("event_id") == event_id
    ]


def current_text(person: Person, room: str, message: RoomMessageNotice) -> str:
    """What a client shows for ``message`` now: its newest edit's new content, or the original."""
    edits = edits_of(person, room, message.event_id)
    if not edits:
        return message.body
    body: str = edits[-1].source["content"]["m.new_content"]["body"]
    return body


def thread_lines(person: Person, room: str, root: str) -> list[str]:
    return [
        e.body
        for r, e in person.received
        if r == room
        and isinstance(e, RoomMessageNotice)
        and relation(e).get("rel_type") == "m.thread"
        and relation(e).get("event_id") == root
    ]


# -- setting up ------------------------------------------------------------------


async def room_with_relay(
    synapse: SynapseServer,
    account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    state: Path,
    store: dict[str, Any] | None = None,
    **alertmanager: Any,
) -> tuple[Person, str, RunningBot, int]:
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[account.user_id])
    port = free_port()
    runner = relay_bot(synapse, account, state, room, port, store, **alertmanager)
    bots.append(runner)
    await runner.start()
    await alice.wait_joined(room, account.user_id)
    return alice, room, runner, port


def start_alertmanager(alertmanager: AlertmanagerFactory, port: int) -> AlertmanagerServer:
    return alertmanager(receiver_config(f"http://127.0.0.1:{port}", TOKEN))


def labels(name: str, namespace: str, pod: str, severity: str = "warning") -> dict[str, str]:
    return {"alertname": name, "namespace": namespace, "pod": pod, "severity": severity}


# -- tests -----------------------------------------------------------------------


async def test_alerts_arrive_as_one_message_per_group_and_resolving_edits_it(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """Two groups, two messages; a new alert edits its message and threads a line; resolving edits it."""
    alice, room, _, port = await room_with_relay(synapse, bot_account, person_factory, bots, tmp_path / "bot")
    bot = bot_account.user_id
    am = start_alertmanager(alertmanager, port)
    name = f"PodCrashLooping{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(am.fire, labels(name, "prod", "web-1"), {"summary": "web is crash looping"})
    await asyncio.to_thread(am.fire, labels(name, "staging", "web-1"), {"summary": "web is crash looping"})

    await eventually(lambda: len(originals(alice, room, bot)) == 2, "one message per group")
    by_namespace = {
        ("prod" if "namespace=prod" in m.body else "staging"): m for m in originals(alice, room, bot)
    }
    prod = by_namespace["prod"]
    assert prod.body.startswith("🟠 FIRING [WARNING] " + name)
    assert "web is crash looping" in prod.body
    assert prod.formatted_body is not None and "<strong>FIRING</strong>" in prod.formatted_body
    assert "/#/silences/new?filter=" in prod.body

    # A second alert in the prod group: the same message, edited, and a line in its thread.
    await asyncio.to_thread(am.fire, labels(name, "prod", "web-2"), {"summary": "web is crash looping"})
    await eventually(lambda: "FIRING ×2" in current_text(alice, room, prod), "the edit showing 2 alerts")
    await eventually(lambda: len(thread_lines(alice, room, prod.event_id)) == 1, "a thread line")
    assert thread_lines(alice, room, prod.event_id)[0].startswith("🆕 1 new: pod=web-2")

    # Resolving both: the message shows it resolved and for how long it fired.
    for pod in ("web-1", "web-2"):
        await asyncio.to_thread(am.resolve, labels(name, "prod", pod))
    await eventually(lambda: current_text(alice, room, prod).startswith("✅ RESOLVED"), "the resolved edit")
    assert "Resolved after" in current_text(alice, room, prod)
    assert len(originals(alice, room, bot)) == 2  # never a second message for a group
    assert current_text(alice, room, by_namespace["staging"]).startswith("🟠 FIRING")


async def test_a_group_is_relayed_with_the_state_in_postgresql(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    postgres: PostgresForTests,
    tmp_path: Path,
) -> None:
    """With store.url on PostgreSQL a group arrives and resolves in the room; its state is in PostgreSQL."""
    url = postgres.create(migrated=False)  # the bot runs every migration itself
    state = tmp_path / "bot"
    alice, room, _, port = await room_with_relay(
        synapse, bot_account, person_factory, bots, state, store={"url": url}
    )
    am = start_alertmanager(alertmanager, port)
    name = f"DiskFilling{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(am.fire, labels(name, "prod", "db-0"), {"summary": "disk almost full"})
    await eventually(lambda: len(originals(alice, room, bot_account.user_id)) == 1, "the group's message")
    [message] = originals(alice, room, bot_account.user_id)
    assert message.body.startswith("🟠 FIRING [WARNING] " + name)

    await asyncio.to_thread(am.resolve, labels(name, "prod", "db-0"))
    await eventually(
        lambda: current_text(alice, room, message).startswith("✅ RESOLVED"), "the resolved edit"
    )

    with psycopg.connect(url, autocommit=True) as conn:
        sent = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'sent'").fetchone()
        groups = conn.execute("SELECT COUNT(*) FROM alert_groups").fetchone()
    assert sent is not None and sent[0] >= 2  # the message and its edit
    assert groups == (1,)
    assert not (state / "readybot.sqlite3").exists()


async def test_bad_requests_get_4xx_and_store_nothing(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """A malformed body (400), a wrong token (401) and an oversized body (413) store nothing."""
    _, _, runner, port = await room_with_relay(synapse, bot_account, person_factory, bots, tmp_path / "bot")
    url = f"http://127.0.0.1:{port}/hooks/alertmanager"
    good = {
        "version": "4",
        "groupKey": '{}:{alertname="X"}',
        "status": "firing",
        "receiver": "readybot",
        "groupLabels": {"alertname": "X"},
        "commonLabels": {"alertname": "X"},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "startsAt": "2026-01-01T00:00:00Z"}],
    }
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=json.dumps(good), headers=headers) as response:
            assert response.status == 400  # the alert has no fingerprint
            assert any(p.startswith("alerts.0.fingerprint:") for p in (await response.json())["problems"])
        wrong = {**headers, "Authorization": "Bearer not-the-token"}
        async with http.post(url, data=json.dumps(good), headers=wrong) as response:
            assert response.status == 401
        huge = {**good, "commonAnnotations": {"description": "x" * 70_000}}
        async with http.post(url, data=json.dumps(huge), headers=headers) as response:
            assert response.status == 413
    assert runner.bot is not None
    for table in ("alert_groups", "alert_group_posts", "outbox"):
        row = await runner.bot.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608 (fixed names)
        assert row is not None and row["n"] == 0, table


async def test_restart_keeps_the_group_to_message_mapping(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """After the bot restarts, a change to a group edits the message posted before the restart."""
    alice, room, runner, port = await room_with_relay(
        synapse, bot_account, person_factory, bots, tmp_path / "bot"
    )
    bot = bot_account.user_id
    am = start_alertmanager(alertmanager, port)
    name = f"NodeDown{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(am.fire, labels(name, "infra", "node-1"))
    await eventually(lambda: len(originals(alice, room, bot)) == 1, "the group's message")
    (message,) = originals(alice, room, bot)

    await runner.stop()
    await runner.start()
    await asyncio.to_thread(am.fire, labels(name, "infra", "node-2"))
    await eventually(lambda: "FIRING ×2" in current_text(alice, room, message), "an edit after the restart")
    assert len(originals(alice, room, bot)) == 1


async def test_storm_under_a_small_budget_folds_into_one_digest(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """Past a small budget, new groups become lines of one digest; every group shows exactly once."""
    alice, room, _, port = await room_with_relay(
        synapse,
        bot_account,
        person_factory,
        bots,
        tmp_path / "bot",
        send_budget={"burst": 2, "per_minute": 6, "max_delay_s": 10},
    )
    bot = bot_account.user_id
    am = start_alertmanager(alertmanager, port)
    run = uuid.uuid4().hex[:6]
    names = [f"Storm{run}n{i:02}" for i in range(15)]
    await asyncio.to_thread(
        am.post_alerts,
        [{"labels": labels(name, "prod", "p"), "annotations": {"summary": "storm"}} for name in names],
    )

    def shown() -> dict[str, int]:
        texts = [current_text(alice, room, m) for m in originals(alice, room, bot)]
        return {name: sum(name in text for text in texts) for name in names}

    await eventually(lambda: all(shown().values()), "every group in a message or the digest")
    assert set(shown().values()) == {1}  # none twice
    messages = originals(alice, room, bot)
    digests = [m for m in messages if m.body.startswith("🌩")]
    assert len(digests) == 1
    assert len(messages) <= 4  # a few groups on their own, then one digest
