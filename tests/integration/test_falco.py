"""The Falco relay end to end: falcosidekick-shaped POSTs → bot (in-process) → real Synapse → E2EE client.

Each test waits for what a person's client shows (the newest edit of each
message), never for a fixed time; the send budget is set per test so storms
are reproducible against a Synapse with open rate limits.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from tests.integration.botrunner import RunningBot, bot_settings, eventually
from tests.integration.people import Account, Person, PersonFactory
from tests.samples import FALCOSIDEKICK_TEST, falco_bytes

TOKEN = "falco-hook-token-Vb27qL"
WAIT_S = 30.0
RULE = "Terminal shell in container"
# Generous enough that nothing folds unless a test narrows it.
OPEN_BUDGET = {"burst": 200, "per_minute": 6_000, "reserve": 1, "edit_floor": 10}


def falco_event(
    rule: str = RULE,
    priority: str = "Warning",
    *,
    pod: str = "web-1",
    node: str = "node-a",
    proc: str = "bash",
) -> dict[str, Any]:
    """An event as falcosidekick posts it."""
    return {
        "uuid": "6a0d2d0e-8b59-4f7d-a2a5-5f5d2b8e6b1c",
        "output": f"09:00:00.000000001: {priority} {rule} (user=root pod={pod} proc={proc})",
        "priority": priority,
        "rule": rule,
        "time": "2027-01-15T09:00:00.000000001Z",
        "output_fields": {
            "evt.time": 1800003600000000001,
            "k8s.ns.name": "shop",
            "k8s.pod.name": pod,
            "container.id": "3ad1e5c2b7f0",
            "proc.name": proc,
        },
        "source": "syscall",
        "tags": ["container", "shell"],
        "hostname": node,
    }


# -- reading the room ---------------------------------------------------------------------


def relation(event: Event) -> dict[str, Any]:
    relates: dict[str, Any] = getattr(event, "source", {}).get("content", {}).get("m.relates_to", {})
    return relates


def originals(person: Person, room: str, bot: str) -> list[RoomMessageNotice]:
    """The bot's top-level messages (not edits, not replies)."""
    return [
        e
        for r, e in person.received
        if r == room and isinstance(e, RoomMessageNotice) and e.sender == bot and not relation(e)
    ]


def current_text(person: Person, room: str, message: RoomMessageNotice) -> str:
    """What a client shows for ``message`` now: its newest edit's new content, or the original."""
    edits = [
        e
        for r, e in person.received
        if r == room
        and isinstance(e, RoomMessageNotice)
        and relation(e).get("rel_type") == "m.replace"
        and relation(e).get("event_id") == message.event_id
    ]
    if not edits:
        original: str = message.body
        return original
    body: str = edits[-1].source["content"]["m.new_content"]["body"]
    return body


def texts(person: Person, room: str, bot: str) -> list[str]:
    return [current_text(person, room, m) for m in originals(person, room, bot)]


# -- the bot and the webhook --------------------------------------------------------------------


async def room_with_falco(
    synapse: SynapseServer,
    account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    state: Path,
    **falco: Any,
) -> tuple[Person, str, RunningBot]:
    alice = await person_factory("alice")
    room = await alice.create_room("falco", encrypted=True, invite=[account.user_id])
    settings = bot_settings(
        synapse.base_url,
        account,
        state,
        [room],
        http={"hook_tokens": {"falco": TOKEN}, "max_body_bytes": 65_536},
        falco={"enabled": True, "default_rooms": [room], "send_budget": OPEN_BUDGET, **falco},
    )
    runner = RunningBot(settings)
    bots.append(runner)
    await runner.start()
    await alice.wait_joined(room, account.user_id)
    return alice, room, runner


def url(runner: RunningBot, path: str = "/hooks/falco") -> str:
    assert runner.bot is not None
    return f"http://127.0.0.1:{runner.bot.http_port}{path}"


async def post(
    session: aiohttp.ClientSession,
    runner: RunningBot,
    data: object,
    *,
    token: str | None = TOKEN,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(url(runner), data=raw, headers=headers) as response:
        return response.status, await response.json()


async def post_all(runner: RunningBot, events: list[dict[str, Any]]) -> list[str]:
    """POST the events concurrently, as falcosidekick does in a storm; their outcomes (all 200)."""
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(post(session, runner, e) for e in events))
    assert {status for status, _ in answers} == {200}, answers
    return [answer["outcome"] for _, answer in answers]


async def falco_counters(runner: RunningBot) -> dict[str, float]:
    """readybot_falco_events_total from /metrics, summed by outcome."""
    async with aiohttp.ClientSession() as session, session.get(url(runner, "/metrics")) as response:
        text = await response.text()
    totals: dict[str, float] = {}
    for match in re.finditer(r"^readybot_falco_events_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        outcome = re.search(r'outcome="([^"]*)"', match.group(1))
        assert outcome is not None
        totals[outcome.group(1)] = totals.get(outcome.group(1), 0.0) + float(match.group(2))
    return totals


async def stored_rows(runner: RunningBot) -> tuple[int, int]:
    """(outbox rows, Falco aggregates) in the bot's store."""
    assert runner.bot is not None
    outbox = await runner.bot.db.fetchone("SELECT COUNT(*) AS n FROM outbox")
    aggregates = await runner.bot.db.fetchone("SELECT COUNT(*) AS n FROM falco_aggregates")
    assert outbox is not None and aggregates is not None
    return int(outbox["n"]), int(aggregates["n"])


# -- tests --------------------------------------------------------------------------------------


async def test_a_burst_becomes_one_message_per_key_with_exact_counts(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """37 + 12 + 1 events of three keys: three messages edited to "x37" and "x12"; the critical one: @room."""
    alice, room, runner = await room_with_falco(
        synapse, bot_account, person_factory, bots, tmp_path / "bot", edit_interval_s=0.2
    )
    bot = bot_account.user_id
    burst = [falco_event(pod="web-1", node=f"node-{i % 3}") for i in range(37)]
    burst += [falco_event(rule="Read sensitive file untrusted", pod="db-0") for _ in range(12)]
    burst += [falco_event(rule="Drop and execute new binary in container", priority="Critical", pod="web-9")]
    outcomes = await post_all(runner, burst)
    assert outcomes.count("posted") == 3
    assert outcomes.count("aggregated") == 47

    def settled() -> bool:
        shown = texts(alice, room, bot)
        return len(shown) == 3 and any("×37 in" in t for t in shown) and any("×12 in" in t for t in shown)

    await eventually(settled, "three messages showing ×37, ×12 and the critical one")
    by_rule = {t.split(": ", 1)[1].split("\n", 1)[0]: t for t in texts(alice, room, bot)}
    shell = by_rule[RULE]
    assert shell.startswith("🟡 Falco WARNING: Terminal shell in container\n")
    assert "k8s.ns.name=shop k8s.pod.name=web-1 proc.name=bash" in shell
    assert "nodes node-0, node-1, node-2" in shell
    critical = by_rule["Drop and execute new binary in container"]
    assert critical.startswith("@room 🔴 Falco CRITICAL")
    assert "Once, at 2027-01-15 09:00:00 UTC, node node-a" in critical
    assert await falco_counters(runner) == {"posted": 3.0, "aggregated": 47.0}
    # Quiet afterwards: no message is ever posted twice.
    await asyncio.sleep(1.5)
    assert len(originals(alice, room, bot)) == 3


async def test_a_storm_beyond_the_budget_folds_into_a_digest_with_exact_counts(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """Burst 4, reserve 1: two kinds get messages, five share a digest; each kind shows its exact count."""
    alice, room, runner = await room_with_falco(
        synapse,
        bot_account,
        person_factory,
        bots,
        tmp_path / "bot",
        edit_interval_s=0.5,
        send_budget={"burst": 4, "per_minute": 60, "reserve": 1, "edit_floor": 2},
    )
    bot = bot_account.user_id
    pods = [f"web-{i}" for i in range(7)]
    first = await post_all(runner, [falco_event(pod=pod) for pod in pods])
    assert sorted(first) == ["folded"] * 5 + ["posted"] * 2
    # Pod web-i has i + 1 events in all.
    await post_all(runner, [falco_event(pod=pod) for i, pod in enumerate(pods) for _ in range(i)])
    expected = {pod: i + 1 for i, pod in enumerate(pods)}

    def where(shown: list[str]) -> dict[str, str]:
        """Pod -> the count shown for it, from own messages ("xN in", "Once") and digest lines."""
        found: dict[str, str] = {}
        for text in shown:
            if text.startswith("🌩"):
                for pod, number in re.findall(r"k8s\.pod\.name=(web-\d) proc\.name=bash — ×(\d+),", text):
                    found[pod] = number
            else:
                pod_match = re.search(r"k8s\.pod\.name=(web-\d)", text)
                number_match = re.search(r"^×(\d+) in ", text, re.MULTILINE)
                if pod_match is not None:
                    found[pod_match.group(1)] = number_match.group(1) if number_match else "1"
        return found

    def settled() -> bool:
        shown = texts(alice, room, bot)
        return len(shown) == 3 and where(shown) == {p: str(n) for p, n in expected.items()}

    await eventually(settled, "2 own messages and a digest of 5 kinds, every count exact")
    digest = next(t for t in texts(alice, room, bot) if t.startswith("🌩"))
    folded = [pod for pod in pods if f"k8s.pod.name={pod} proc.name=bash — ×" in digest]
    assert len(folded) == 5
    assert digest.startswith(f"🌩 Falco storm: {sum(expected[p] for p in folded)} events of 5 kinds")
    counters = await falco_counters(runner)
    assert counters == {"posted": 2.0, "folded": 5.0, "aggregated": 21.0}


async def test_bad_requests_get_4xx_quiet_events_are_200_and_nothing_is_posted(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """401/400/415/413 store nothing; falcosidekick's test event and a debug event are 200, post nothing."""
    alice, room, runner = await room_with_falco(synapse, bot_account, person_factory, bots, tmp_path / "bot")
    bot = bot_account.user_id
    good = falco_event()
    missing_rule = {k: v for k, v in good.items() if k != "rule"}
    async with aiohttp.ClientSession() as session:
        assert (await post(session, runner, good, token=None))[0] == 401
        assert (await post(session, runner, good, token="wrong-token-0000"))[0] == 401
        assert (await post(session, runner, b'{"rule": '))[0] == 400
        status, answer = await post(session, runner, missing_rule)
        assert (status, answer["problems"]) == (400, ["rule: Field required"])
        assert (await post(session, runner, good | {"priority": "Severe"}))[0] == 400
        assert (await post(session, runner, good, content_type="text/plain"))[0] == 415
        assert (await post(session, runner, good | {"output": "x" * 70_000}))[0] == 413
        assert await stored_rows(runner) == (0, 0)
        assert await falco_counters(runner) == {}

        test_event = falco_bytes(FALCOSIDEKICK_TEST)
        assert await post(session, runner, test_event) == (200, {"status": "accepted", "outcome": "test"})
        debug = falco_event(rule="Falco internal: syscall event drop", priority="Debug")
        assert (await post(session, runner, debug))[1]["outcome"] == "below_min"
        assert await stored_rows(runner) == (0, 0)
        # A valid event afterwards is the first and only message the room gets.
        assert (await post(session, runner, good))[1]["outcome"] == "posted"
    await eventually(lambda: len(originals(alice, room, bot)) == 1, "the valid event's message")
    await asyncio.sleep(1.0)
    assert texts(alice, room, bot)[0].startswith("🟡 Falco WARNING: Terminal shell in container")
    assert len(originals(alice, room, bot)) == 1
    assert await falco_counters(runner) == {"test": 1.0, "below_min": 1.0, "posted": 1.0}


async def test_mutes_from_chat_keep_events_out_then_expire_with_a_summary(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> None:
    """`!falco mute … 3s`: events counted, not posted, one summary at expiry; `!falco unmute` lifts early."""
    alice, room, runner = await room_with_falco(synapse, bot_account, person_factory, bots, tmp_path / "bot")
    bot = bot_account.user_id

    async def command(text: str) -> str:
        sent = await alice.send_text(room, text, wait_members=[bot])
        reply = await alice.wait_for_reply(room, bot, after_event_id=sent, timeout=WAIT_S)
        text_of_reply: str = reply.body
        return text_of_reply

    reply = await command(f"!falco mute {RULE} 3s")
    assert reply.startswith(f'🔕 Falco rule "{RULE}" muted for 3s')
    assert (await command("!falco mutes")).startswith(f'🔕 1 Falco rule muted:\n- "{RULE}" until')
    outcomes = await post_all(runner, [falco_event(pod=f"web-{i % 2}") for i in range(5)])
    assert outcomes == ["muted"] * 5
    assert await post_all(runner, [falco_event(rule="Read sensitive file untrusted")]) == ["posted"]

    def summary() -> str | None:
        return next((t for t in texts(alice, room, bot) if t.startswith("🔔 Falco mute")), None)

    await eventually(lambda: summary() is not None, "the summary when the mute expires")
    text = summary()
    assert text is not None
    assert (
        f'🔔 Falco mute of "{RULE}" ended (set by {alice.user_id}, muted 3s): ×5 while muted (5 WARNING)'
        in text
    )
    assert "- ×3 k8s.ns.name=shop k8s.pod.name=web-0 proc.name=bash" in text
    assert not any(t.startswith("🟡 Falco WARNING: Terminal shell") for t in texts(alice, room, bot))
    assert (await command("!falco mutes")) == "No Falco rule is muted."

    # Lifted early: the reply is the summary; afterwards the rule posts again.
    await command(f'!falco mute "{RULE.lower()}" 1h')
    assert await post_all(runner, [falco_event(), falco_event()]) == ["muted", "muted"]
    reply = await command(f"!falco unmute {RULE.upper()}")
    assert f"lifted by {alice.user_id}" in reply
    assert "×2 while muted" in reply
    assert await post_all(runner, [falco_event()]) == ["posted"]
    await eventually(
        lambda: any(t.startswith("🟡 Falco WARNING: Terminal shell") for t in texts(alice, room, bot)),
        "the rule's own message after the unmute",
    )
    assert await falco_counters(runner) == {"muted": 7.0, "posted": 2.0}
    bad = await command("!falco mute Some rule soon")
    assert "the last word must be a duration" in bad
