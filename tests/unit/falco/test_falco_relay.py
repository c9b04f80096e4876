"""The Falco relay: payloads, keys, routing, aggregation, the send budget, digests, mutes (real SQLite)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from bot.falco.events import FalcoEvent, Spending, Tier, classify, event_key, field_text
from bot.falco.relay import FalcoMetrics, FalcoRelay
from bot.falco.render import FalcoRenderer
from bot.falco.state import Aggregate, Digest, Mute
from bot.falco.store import FalcoRepo
from bot.falco.webhook import WebhookMetrics, falco_handler, parse_event
from bot.http.common import PayloadError
from bot.http.server import Health, build_http_app
from bot.metrics import Metrics
from bot.outbox import Outbox, OutboxKind, build_event
from bot.outbox.budget import RateBudget
from bot.outbox.repo import OutboxId, OutboxRepo
from bot.render.message import MATRIX_EVENT_LIMIT
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store import Database
from config.falco import FalcoSendBudget, FalcoSettings
from tests.places import upstream, upstream_files
from tests.samples import (
    FALCOSIDEKICK_TEST,
    SYSCALL_DROP_NUMBERS,
    SYSCALL_DROP_STRINGS,
    WRITE_BELOW_BINARY_DIR,
    falco_bytes,
)
from tests.stores import open_store, write_lock_held

# The store on SQLite and on PostgreSQL (tests.stores).
pytestmark = pytest.mark.usefixtures("store_backend")

ROOM = "!security:example.org"
ONCALL = "!oncall:example.org"
TOKEN = "falco-token-0123456789"
# 2027-01-15 08:00:00 UTC: the bot's clock in these tests.
T0 = 1_800_000_000.0
Client = TestClient[web.Request, web.Application]


def fixture_bodies() -> list[tuple[str, bytes | None]]:
    """Every upstream event in ../shared: one per .json file, one per line of a JSON Lines file.

    Without ../shared, one placeholder whose test skips (fails in CI) saying so.
    """
    bodies: list[tuple[str, bytes | None]] = []
    for path in upstream_files("falco", "*.json"):
        raw = path.read_bytes()
        try:
            json.loads(raw)
        except ValueError:  # JSON Lines: one event per line
            lines = [line for line in raw.splitlines() if line.strip()]
            bodies += [(f"{path.name}:{n}", line) for n, line in enumerate(lines, 1)]
        else:
            bodies.append((path.name, raw))
    return bodies or [("no-shared-fixtures", None)]


def body(
    rule: str = "Terminal shell in container",
    priority: str = "Warning",
    *,
    ns: str = "shop",
    pod: str = "web-1",
    proc: str = "bash",
    host: str = "node-a",
    output: str = "A shell was spawned in a container",
    at: str = "2027-01-15T08:00:00.123456789Z",
) -> dict[str, Any]:
    """A falcosidekick event as it posts it (hostname, output_fields with the Kubernetes fields)."""
    return {
        "uuid": "5b3a1f5e-6c4b-4a1e-9d1c-0e6b1f2a3c4d",
        "output": f"08:00:00.123456789: {priority} {output} (user=root container=abc ns={ns} pod={pod})",
        "priority": priority,
        "rule": rule,
        "time": at,
        "output_fields": {
            "evt.time": 1800000000123456789,
            "k8s.ns.name": ns,
            "k8s.pod.name": pod,
            "container.id": "3ad1e5c2b7f0",
            "proc.name": proc,
            "user.name": "root",
        },
        "source": "syscall",
        "tags": ["container", "shell", "mitre_execution"],
        "hostname": host,
    }


def event(**kwargs: Any) -> FalcoEvent:
    return parse_event(json.dumps(body(**kwargs)).encode())


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def falco_settings(**overrides: Any) -> FalcoSettings:
    data: dict[str, Any] = {"enabled": True, "default_rooms": [ROOM], "edit_interval_s": 0}
    data.update(overrides)
    return FalcoSettings.model_validate(data)


@dataclass
class Env:
    db: Database
    outbox: Outbox
    relay: FalcoRelay
    clock: Clock
    registry: CollectorRegistry
    path: Path


async def open_env(path: Path, clock: Clock | None = None, **overrides: Any) -> Env:
    clock = clock or Clock()
    db = await open_store(path / "readybot.sqlite3", migrations=MIGRATIONS, clock=clock)
    outbox = Outbox(db, clock=clock)
    registry = CollectorRegistry()
    relay = FalcoRelay(
        db=db,
        outbox=outbox,
        repo=FalcoRepo(db),
        renderer=FalcoRenderer(Templates()),
        settings=falco_settings(**overrides),
        clock=clock,
        metrics=FalcoMetrics(registry),
    )
    await relay.load()
    return Env(db, outbox, relay, clock, registry, path)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    opened = await open_env(tmp_path)
    yield opened
    await opened.db.close()


# -- reading what the relay queued ----------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: int
    room_id: str
    kind: str
    payload: dict[str, Any]
    target_outbox_id: int | None
    target_event_id: str | None
    state: str


async def rows(env: Env) -> list[Row]:
    found = await env.db.fetchall(
        "SELECT id, room_id, kind, payload, target_outbox_id, target_event_id, state FROM outbox ORDER BY id"
    )
    return [
        Row(
            r["id"],
            r["room_id"],
            r["kind"],
            json.loads(r["payload"]),
            r["target_outbox_id"],
            r["target_event_id"],
            r["state"],
        )
        for r in found
    ]


async def originals(env: Env, room: str = ROOM) -> list[Row]:
    return [r for r in await rows(env) if r.kind == "message" and r.room_id == room]


async def shown(env: Env, message: Row) -> str:
    """What a client shows for ``message`` now: its newest edit's text, or its own."""
    edits = [
        r
        for r in await rows(env)
        if r.kind == "edit" and (r.target_outbox_id == message.id or r.target_event_id == f"$ev{message.id}")
    ]
    body_text: str = (edits[-1] if edits else message).payload["body"]
    return body_text


async def send_all(env: Env) -> int:
    """What the outbox sender would do: mark every pending row sent, at the clock's time."""
    repo = OutboxRepo(env.db)
    pending = [r for r in await rows(env) if r.state == "pending"]
    for row in pending:
        await repo.mark_sent(OutboxId(row.id), f"$ev{row.id}", env.clock())
    return len(pending)


def count(
    env: Env, outcome: str, rule: str = "Terminal shell in container", priority: str = "warning"
) -> float:
    value = env.registry.get_sample_value(
        "readybot_falco_events_total", {"rule": rule, "priority": priority, "outcome": outcome}
    )
    return value or 0.0


def counted_total(registry: CollectorRegistry) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "readybot_falco_events"
        for sample in metric.samples
        if sample.name == "readybot_falco_events_total"
    )


# -- payloads ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "raw"), fixture_bodies(), ids=[n for n, _ in fixture_bodies()])
def test_upstream_falco_payloads_parse(name: str, raw: bytes | None) -> None:
    """Every upstream event (../shared/fixtures/falco) validates, priority normalised, rule kept."""
    if raw is None:
        upstream("falco")  # skips, naming ../shared; fails in CI
        return
    parsed = parse_event(raw)
    data = json.loads(raw)
    assert parsed.rule == data["rule"]
    assert parsed.priority == data["priority"].lower()
    assert parsed.output == data["output"]


def test_missing_source_and_tags_and_nanosecond_times() -> None:
    """An event without source or tags reads; its 19-digit evt.time stays exact; ns times parse."""
    parsed = parse_event(falco_bytes(WRITE_BELOW_BINARY_DIR))
    assert parsed.source == ""
    assert parsed.tags == ()
    assert parsed.fields["evt.time"] == "1775121164123456789"
    assert parsed.time == pytest.approx(1775121164.123457)
    assert parsed.hostname == "worker-2"


def test_string_and_numeric_output_fields_read_the_same() -> None:
    """The drop event's fields as strings and as JSON numbers give the same text."""
    strings = parse_event(falco_bytes(SYSCALL_DROP_STRINGS))
    numbers = parse_event(falco_bytes(SYSCALL_DROP_NUMBERS))
    for name in ("n_drops", "n_drops_bug", "n_evts"):
        assert strings.fields[name] == numbers.fields[name]
    assert numbers.fields["n_evts"] == "9876543"


def test_missing_field_values_are_left_out() -> None:
    """JSON null and Falco's <NA> are missing values; booleans and objects become text."""
    assert field_text(None) is None
    assert field_text("<NA>") is None
    assert field_text("") is None
    assert field_text(True) == "true"
    assert field_text(1.5) == "1.5"
    assert field_text({"b": 1, "a": [2]}) == '{"a": [2], "b": 1}'


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"rule": None}, "rule"),
        ({"rule": "  "}, "rule"),
        ({"priority": "Severe"}, "priority"),
        ({"time": 1800000000}, "time"),
        ({"time": "yesterday"}, "time"),
        ({"output": 5}, "output"),
        ({"tags": "shell"}, "tags"),
        ({"output_fields": []}, "output_fields"),
    ],
)
def test_invalid_payload_names_the_field(change: dict[str, Any], path: str) -> None:
    """A wrong or missing field is a 400 whose problem starts with the field's path."""
    data = body()
    for name, value in change.items():
        if value is None:
            del data[name]
        else:
            data[name] = value
    with pytest.raises(PayloadError) as caught:
        parse_event(json.dumps(data).encode())
    assert caught.value.status == 400
    assert any(p.startswith(f"{path}") for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "invalid payload"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
    ],
)
def test_unreadable_bodies_are_400(raw: bytes, detail: str) -> None:
    """Invalid JSON, non-UTF-8, a non-object and absurd nesting are 400s that say which."""
    with pytest.raises(PayloadError) as caught:
        parse_event(raw)
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_invalid_payload_does_not_echo_the_input() -> None:
    """A problem line names the path, never the offending value."""
    data = body() | {"priority": "SECRET-VALUE-Qx81"}
    with pytest.raises(PayloadError) as caught:
        parse_event(json.dumps(data).encode())
    assert "SECRET-VALUE-Qx81" not in json.dumps(caught.value.problems)


# -- keys, classification, routing -------------------------------------------------------


def test_key_takes_the_first_present_alternative() -> None:
    """Pod name when there is one, else the container id; Falco's <NA> counts as absent."""
    spec = ["rule", "k8s.ns.name", "k8s.pod.name|container.id", "proc.name"]
    assert event_key(event(), spec)[2] == ("k8s.pod.name", "web-1")
    no_pod = parse_event(
        json.dumps(body() | {"output_fields": {**body()["output_fields"], "k8s.pod.name": "<NA>"}}).encode()
    )
    assert event_key(no_pod, spec)[2] == ("container.id", "3ad1e5c2b7f0")
    assert event_key(event(), ["rule", "hostname"]) == (
        ("rule", "Terminal shell in container"),
        ("hostname", "node-a"),
    )


def test_test_rule_and_low_priorities_are_only_counted() -> None:
    """falcosidekick's "Test rule" is test; below min_priority is below_min; the rest goes on."""
    settings = falco_settings(min_priority="warning")
    test_event = parse_event(falco_bytes(FALCOSIDEKICK_TEST))
    assert classify(test_event, settings) == "test"
    assert classify(event(priority="Notice"), settings) == "below_min"
    assert classify(event(priority="Warning"), settings) is None
    assert classify(event(priority="Emergency"), settings) is None
    assert classify(event(priority="Informational"), falco_settings(min_priority="info")) is None


def test_settings_need_a_room_per_priority_and_a_rule_in_the_key() -> None:
    """Enabled without a room for some priority, a key without rule, or floors at the burst are refused."""
    with pytest.raises(ValidationError, match="rooms_by_priority for: warning"):
        FalcoSettings.model_validate({"enabled": True, "rooms_by_priority": {"Critical": [ROOM]}})
    only_critical = {"Critical": [ROOM], "Alert": [ROOM], "Emergency": [ROOM]}
    FalcoSettings.model_validate(
        {"enabled": True, "min_priority": "Critical", "rooms_by_priority": only_critical}
    )
    with pytest.raises(ValidationError, match="must include rule"):
        falco_settings(aggregation_key=["k8s.ns.name"])
    with pytest.raises(ValidationError, match="reserve must be at most burst - 2"):
        FalcoSendBudget(burst=3, reserve=2, edit_floor=2)
    with pytest.raises(ValidationError, match="edit_floor"):
        FalcoSendBudget(burst=10, reserve=3, edit_floor=3)
    assert FalcoSettings().enabled is False


def test_rooms_by_priority_with_default_rooms_for_the_rest() -> None:
    """A listed priority goes to its rooms; others to default_rooms."""
    settings = falco_settings(rooms_by_priority={"Critical": [ONCALL, ROOM]})
    assert settings.rooms_for("critical") == [ONCALL, ROOM]
    assert settings.rooms_for("warning") == [ROOM]


# -- the budget ----------------------------------------------------------------------------


def test_spending_keeps_each_tier_above_its_floor() -> None:
    """Burst 10, reserve 1: counts down to 5 tokens, new kinds to 2, critical ones to 1, never the last."""
    budget_settings = FalcoSendBudget(burst=10, per_minute=12, reserve=1, edit_floor=5)
    spending = Spending(RateBudget(10, 12, T0), budget_settings, ahead=0, now=T0)
    assert [spending.spend(Tier.UPDATE) for _ in range(6)] == [True] * 5 + [False]
    assert [spending.spend(Tier.NEW) for _ in range(4)] == [True] * 3 + [False]
    assert [spending.spend(Tier.URGENT) for _ in range(2)] == [True, False]
    # What is queued in the outbox counts as spent.
    queued = Spending(RateBudget(10, 12, T0), budget_settings, ahead=8, now=T0)
    assert queued.allows(Tier.URGENT)
    assert not queued.allows(Tier.NEW)
    # The bucket refills at 12/min: 5 s after emptying it, one token is back.
    budget = RateBudget(10, 12, T0 - 100)
    budget.observe([T0] * 10)
    assert not Spending(budget, budget_settings, ahead=0, now=T0 + 5).allows(Tier.URGENT)
    assert Spending(budget, budget_settings, ahead=0, now=T0 + 10).allows(Tier.URGENT)


# -- aggregation -----------------------------------------------------------------------------


async def test_a_burst_of_one_key_is_one_message_counting_every_event(env: Env) -> None:
    """37 events of one key: one message, edited to "x37"; outcomes posted 1, aggregated 36."""
    outcomes = [await env.relay.accept(event())]
    outcomes += await asyncio.gather(*(env.relay.accept(event(host=f"node-{i % 3}")) for i in range(36)))
    assert outcomes.count("posted") == 1
    assert outcomes.count("aggregated") == 36
    await env.relay.tick()
    [message] = await originals(env)
    text = await shown(env, message)
    assert "×37 in under 1s" in text
    assert "nodes node-a, node-0, node-1, node-2" in text
    assert "k8s.ns.name=shop k8s.pod.name=web-1 proc.name=bash" in text
    assert count(env, "posted") == 1
    assert count(env, "aggregated") == 36


async def test_the_first_message_of_a_batch_already_shows_its_count(env: Env) -> None:
    """Events committed in one batch are all in the message that batch posts: no edit needed."""
    await asyncio.gather(*(env.relay.accept(event()) for _ in range(5)))
    [message] = await rows(env)
    assert "×5 in" in message.payload["body"]
    await env.relay.tick()
    assert len(await rows(env)) == 1


async def test_distinct_keys_get_their_own_messages(env: Env) -> None:
    """Different pods, processes or rules are different messages."""
    for kwargs in ({"pod": "web-1"}, {"pod": "web-2"}, {"proc": "sh"}, {"rule": "Read sensitive file"}):
        assert await env.relay.accept(event(**kwargs)) == "posted"
    assert len(await originals(env)) == 4


async def test_a_window_that_ended_starts_a_new_message(tmp_path: Path) -> None:
    """After window_s, the same key is a new message; the closed one is forgotten once shown."""
    env = await open_env(tmp_path, window_s=60)
    try:
        assert await env.relay.accept(event()) == "posted"
        env.clock.now += 30
        assert await env.relay.accept(event()) == "aggregated"
        env.clock.now += 31
        await env.relay.tick()  # the last count goes out, then the aggregate closes
        await env.relay.tick()
        assert (await FalcoRepo(env.db).counts())["falco_aggregates"] == 0
        assert await env.relay.accept(event()) == "posted"
        first, second = await originals(env)
        assert "×2" in await shown(env, first)
        assert "Once, at" in await shown(env, second)
    finally:
        await env.db.close()


async def test_counts_are_edited_at_most_every_edit_interval(tmp_path: Path) -> None:
    """With edit_interval_s 10, new counts wait for the interval; the last count is never lost."""
    env = await open_env(tmp_path, edit_interval_s=10)
    try:
        await env.relay.accept(event())
        await env.relay.accept(event())
        await env.relay.tick()
        assert [r.kind for r in await rows(env)] == ["message"]
        env.clock.now += 10
        await env.relay.tick()
        await env.relay.accept(event())
        await env.relay.tick()
        edits = [r for r in await rows(env) if r.kind == "edit"]
        assert len(edits) == 1
        assert "×2" in edits[0].payload["body"]
        env.clock.now += 10
        await env.relay.tick()
        [message] = await originals(env)
        assert "×3" in await shown(env, message)
    finally:
        await env.db.close()


async def test_pending_edits_of_one_message_are_coalesced(env: Env) -> None:
    """While an edit waits in the outbox, the next count replaces it instead of queueing another."""
    await env.relay.accept(event())
    for expected in (2, 3, 4):
        await env.relay.accept(event())
        await env.relay.tick()
        edits = [r for r in await rows(env) if r.kind == "edit"]
        assert len(edits) == 1
        assert f"×{expected}" in edits[0].payload["body"]


# -- storms: the budget and the digest --------------------------------------------------------


async def test_storm_folds_new_kinds_into_one_digest_within_the_budget(tmp_path: Path) -> None:
    """Burst 4, reserve 1: 2 kinds posted, the rest folded; the digest waits for a token; counts exact."""
    env = await open_env(tmp_path, send_budget={"burst": 4, "per_minute": 60, "reserve": 1, "edit_floor": 2})
    try:
        outcomes = await asyncio.gather(*(env.relay.accept(event(pod=f"web-{i}")) for i in range(7)))
        assert sorted(outcomes) == ["folded"] * 5 + ["posted"] * 2
        await env.relay.tick()
        assert len(await originals(env)) == 2  # two tokens left: the reserve and the critical band
        assert await send_all(env) == 2
        await env.relay.tick()
        assert len(await originals(env)) == 2
        env.clock.now += 1.0  # one more token: the digest
        await env.relay.tick()
        messages = await originals(env)
        assert len(messages) == 3
        digest = messages[-1].payload["body"]
        assert digest.startswith("🌩 Falco storm: 5 events of 5 kinds")
        assert digest.count("— ×1,") == 5
        # More of a folded kind: the digest line's count grows (no new message).
        assert await env.relay.accept(event(pod="web-6")) == "aggregated"
        await send_all(env)
        env.clock.now += 2.0
        await env.relay.tick()
        assert len(await originals(env)) == 3
        text = await shown(env, messages[-1])
        assert text.startswith("🌩 Falco storm: 6 events of 5 kinds")
        assert "k8s.pod.name=web-6 proc.name=bash — ×2," in text
        assert count(env, "posted") == 2
        assert count(env, "folded") == 5
        assert count(env, "aggregated") == 1
    finally:
        await env.db.close()


async def test_count_updates_wait_while_tokens_are_low(tmp_path: Path) -> None:
    """Count edits go out only while edit_floor tokens stay left, so new kinds keep their tokens."""
    env = await open_env(tmp_path, send_budget={"burst": 4, "per_minute": 60, "reserve": 1, "edit_floor": 3})
    try:
        await env.relay.accept(event(pod="a"))
        await env.relay.accept(event(pod="b"))
        await env.relay.accept(event(pod="a"))
        await env.relay.tick()
        assert [r.kind for r in await rows(env)] == ["message", "message"]
        assert env.registry.get_sample_value("readybot_falco_pending_updates") == 1
        await send_all(env)
        env.clock.now += 2.0  # the bucket is back to 4
        await env.relay.tick()
        assert [r.kind for r in await rows(env)] == ["message", "message", "edit"]
        assert env.registry.get_sample_value("readybot_falco_pending_updates") == 0
    finally:
        await env.db.close()


async def test_a_send_is_spent_once_even_when_its_time_comes_back_rounded(tmp_path: Path) -> None:
    """A send time that the outbox reports rounded down is observed once, not on every tick."""
    env = await open_env(
        tmp_path, send_budget={"burst": 4, "per_minute": 0.001, "reserve": 1, "edit_floor": 2}
    )
    try:
        assert await env.relay.accept(event(pod="a")) == "posted"
        # SQLite's JSON keeps 15 digits: 1800000000.1234541 comes back as ...0.12345.
        env.clock.now = T0 + 0.1234541
        await send_all(env)
        for _ in range(5):
            await env.relay.tick()
        # 4 - 1 = 3 tokens: one more new kind (then 2 stay: the reserve and the critical band).
        assert await env.relay.accept(event(pod="b")) == "posted"
        assert await env.relay.accept(event(pod="c")) == "folded"
    finally:
        await env.db.close()


async def test_a_digest_with_a_new_critical_kind_goes_out_at_the_critical_tier(tmp_path: Path) -> None:
    """A critical kind folded for lack of tokens makes the digest go out as soon as a critical kind could."""
    budget = {"burst": 3, "per_minute": 60, "reserve": 1, "edit_floor": 2}
    env = await open_env(tmp_path, send_budget=budget)
    try:
        outcomes = [await env.relay.accept(event(pod=p, priority="Critical")) for p in ("a", "b", "c", "d")]
        assert outcomes == ["posted", "posted", "folded", "folded"]
        await send_all(env)
        env.clock.now += 1.0  # two tokens: enough for the critical tier, not for a warning kind
        await env.relay.tick()
        assert (await originals(env))[-1].payload["body"].startswith("🌩 Falco storm: 2 events of 2 kinds")
    finally:
        await env.db.close()


async def test_a_critical_kind_finds_a_token_a_warning_kind_may_not(tmp_path: Path) -> None:
    """A critical kind takes the token above the reserve that a warning kind may not, never the reserve."""
    env = await open_env(tmp_path, send_budget={"burst": 3, "per_minute": 1, "reserve": 1, "edit_floor": 2})
    try:
        assert await env.relay.accept(event(pod="a")) == "posted"
        assert await env.relay.accept(event(pod="b")) == "folded"
        assert await env.relay.accept(event(pod="c", priority="Critical")) == "posted"
        assert await env.relay.accept(event(pod="d", priority="Critical")) == "folded"
        critical = (await originals(env))[-1]
        assert critical.payload["body"].startswith("@room 🔴 Falco CRITICAL")
        assert critical.payload["m.mentions"] == {"room": True}
        assert (await originals(env))[0].payload["m.mentions"] == {}
    finally:
        await env.db.close()


async def test_priorities_route_to_their_rooms(tmp_path: Path) -> None:
    """Critical goes to the on-call room and the security room; warning to the security room only."""
    env = await open_env(tmp_path, rooms_by_priority={"critical": [ONCALL, ROOM]})
    try:
        assert await env.relay.accept(event(priority="Critical")) == "posted"
        assert await env.relay.accept(event(priority="Warning", pod="web-2")) == "posted"
        assert len(await originals(env, ONCALL)) == 1
        assert len(await originals(env, ROOM)) == 2
    finally:
        await env.db.close()


# -- durability -----------------------------------------------------------------------------------


async def test_counts_survive_a_restart(tmp_path: Path) -> None:
    """Accepted events are in the store: after a restart the next edit shows them all."""
    first = await open_env(tmp_path)
    await first.relay.accept(event())
    await first.relay.tick()
    await asyncio.gather(*(first.relay.accept(event()) for _ in range(5)))
    await first.db.close()  # "crash" before the flush

    second = await open_env(tmp_path, clock=first.clock)
    try:
        assert second.relay.state.pending() == 1
        await second.relay.tick()
        [message] = await originals(second)
        assert "×6" in await shown(second, message)
        assert await second.relay.accept(event()) == "aggregated"
    finally:
        await second.db.close()


async def test_the_budget_after_a_restart_counts_what_was_sent_before_it(tmp_path: Path) -> None:
    """Sends shortly before a restart still count; the refill since then counts too."""
    budget = {"burst": 5, "per_minute": 60, "reserve": 1, "edit_floor": 2}
    first = await open_env(tmp_path, send_budget=budget)
    for pod in ("a", "b", "c"):
        assert await first.relay.accept(event(pod=pod)) == "posted"
    await send_all(first)
    await first.db.close()

    first.clock.now += 1.0  # one token back since the 3 sends
    second = await open_env(tmp_path, clock=first.clock, send_budget=budget)
    try:
        assert await second.relay.accept(event(pod="d")) == "posted"
        assert await second.relay.accept(event(pod="e")) == "folded"
    finally:
        await second.db.close()


async def test_a_failing_flush_does_not_stop_the_relay(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error while flushing is logged and retried; events are still accepted."""
    monkeypatch.setattr("bot.falco.relay.ERROR_BACKOFF_S", 0.05)
    await env.relay.accept(event())
    await env.relay.accept(event())

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("template bug")

    monkeypatch.setattr(env.relay._renderer, "aggregate", broken)
    stop = asyncio.Event()
    task = asyncio.create_task(env.relay.run(stop))
    await asyncio.sleep(0.5)
    assert not task.done()
    assert await env.relay.accept(event()) == "aggregated"
    stop.set()
    await asyncio.wait_for(task, 5)
    assert any("flush failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_locked_store_is_503_and_the_state_is_reloaded(tmp_path: Path) -> None:
    """A store locked past the busy timeout fails the event; memory then matches the store again."""
    env = await open_env(tmp_path)
    try:
        await env.relay.accept(event())
        async with write_lock_held(env.db, tmp_path / "readybot.sqlite3"):
            with pytest.raises(Exception, match="locked") as caught:
                await env.relay.accept(event())
            assert type(caught.value).__name__ == "StoreUnavailableError"
        assert await env.relay.accept(event()) == "aggregated"
        await env.relay.tick()
        [message] = await originals(env)
        assert "×2" in await shown(env, message)  # the refused event is not counted in the room
        assert count(env, "aggregated") == 1
    finally:
        await env.db.close()


# -- mutes ------------------------------------------------------------------------------------------


async def test_muted_events_are_counted_and_summarised_when_the_mute_ends(env: Env) -> None:
    """A muted rule posts nothing; on expiry one summary gives the count, priorities and keys."""
    await env.relay.mute("terminal shell  IN container", 60, "@alice:example.org", ONCALL)
    for pod in ("web-1", "web-1", "web-2"):
        assert await env.relay.accept(event(pod=pod)) == "muted"
    assert await env.relay.accept(event(pod="web-3", priority="Critical")) == "muted"
    assert await env.relay.accept(event(rule="Read sensitive file")) == "posted"
    assert [m.count for m in await env.relay.mutes()] == [4]
    env.clock.now += 60
    await env.relay.tick()
    assert await env.relay.mutes() == []
    summaries = [r for r in await rows(env) if "mute of" in r.payload.get("body", "")]
    assert {r.room_id for r in summaries} == {ROOM, ONCALL}
    text = summaries[0].payload["body"]
    assert text.startswith('🔔 Falco mute of "terminal shell IN container" ended (set by @alice:example.org')
    assert "×4 while muted (1 CRITICAL, 3 WARNING)" in text
    assert "- ×2 k8s.ns.name=shop k8s.pod.name=web-1 proc.name=bash" in text
    assert count(env, "muted") == 3
    assert count(env, "muted", priority="critical") == 1
    assert await env.relay.accept(event()) == "posted"


async def test_unmute_ends_now_and_returns_the_summary(env: Env) -> None:
    """Unmuting answers with the summary and posts it to the other rooms the events belonged to."""
    await env.relay.mute("Terminal shell in container", 3600, "@alice:example.org", ONCALL)
    await env.relay.accept(event())
    summary = await env.relay.unmute("TERMINAL SHELL IN CONTAINER", "@bob:example.org", ONCALL)
    assert summary is not None
    assert "lifted by @bob:example.org" in summary.plain
    assert "×1 while muted" in summary.plain
    assert [r.room_id for r in await rows(env)] == [ROOM]
    assert await env.relay.unmute("Terminal shell in container", "@bob:example.org", ONCALL) is None
    assert await env.relay.accept(event()) == "posted"


async def test_muting_again_moves_the_end_and_keeps_the_tally(env: Env) -> None:
    """A second mute of the same rule says when the old one would have ended and keeps counting."""
    _, previous = await env.relay.mute("Terminal shell in container", 60, "@a:example.org", ROOM)
    assert previous is None
    await env.relay.accept(event())
    mute, previous = await env.relay.mute("Terminal shell in container", 600, "@b:example.org", ROOM)
    assert previous == T0 + 60
    assert mute.ends_at == T0 + 600
    assert mute.count == 1


async def test_mutes_survive_a_restart(tmp_path: Path) -> None:
    """A mute and its tally are in the store; after a restart it still mutes and still expires."""
    first = await open_env(tmp_path)
    await first.relay.mute("Terminal shell in container", 60, "@a:example.org", ROOM)
    await first.relay.accept(event())
    await first.db.close()
    second = await open_env(tmp_path, clock=first.clock)
    try:
        assert await second.relay.accept(event()) == "muted"
        second.clock.now += 61
        await second.relay.tick()
        [summary] = await originals(second)
        assert "×2 while muted" in summary.payload["body"]
    finally:
        await second.db.close()


# -- counters ------------------------------------------------------------------------------------


async def test_every_outcome_adds_up_to_the_events_accepted(tmp_path: Path) -> None:
    """posted + aggregated + folded + muted + below_min + test = every event accepted."""
    env = await open_env(tmp_path, send_budget={"burst": 3, "per_minute": 1, "reserve": 1, "edit_floor": 2})
    try:
        await env.relay.mute("Muted rule", 600, "@a:example.org", ROOM)
        test_event = parse_event(falco_bytes(FALCOSIDEKICK_TEST))
        events = [test_event, event(priority="Debug"), event(rule="Muted rule")]
        events += [event(pod=f"p{i % 7}") for i in range(40)]
        outcomes = await asyncio.gather(*(env.relay.accept(e) for e in events))
        assert set(outcomes) == {"test", "below_min", "muted", "posted", "folded", "aggregated"}
        assert counted_total(env.registry) == len(events)
    finally:
        await env.db.close()


async def test_rule_labels_are_capped(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_RULE_LABELS distinct rules, further rules are counted as "(other)"."""
    monkeypatch.setattr("bot.falco.relay.MAX_RULE_LABELS", 2)
    for rule in ("A", "B", "C", "D"):
        await env.relay.accept(event(rule=rule, priority="Debug"))
    assert count(env, "below_min", rule="(other)", priority="debug") == 2
    assert counted_total(env.registry) == 4


async def test_event_output_is_never_logged_at_info(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """Neither accepted nor refused events put their output into INFO+ logs."""
    caplog.set_level(logging.DEBUG)
    secret = "SECRET-OUTPUT-Zr55"
    await env.relay.accept(event(output=secret))
    await env.relay.tick()
    with pytest.raises(PayloadError):
        parse_event(json.dumps(body(output=secret) | {"priority": "Nope"}).encode())
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and secret in r.getMessage()]


# -- the HTTP handler ------------------------------------------------------------------------------


@pytest.fixture
async def client(env: Env) -> AsyncIterator[Client]:
    """The bot's HTTP app with the relay at /hooks/falco."""
    app = build_http_app(
        metrics=Metrics(),
        health=Health(store_open=True),
        hook_tokens={"falco": SecretStr(TOKEN)},
        hooks={"falco": falco_handler(env.relay, WebhookMetrics(env.registry))},
        max_body_bytes=65_536,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def hook(
    client: Client, data: object, token: str = TOKEN, **headers: str
) -> tuple[int, dict[str, Any]]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    response = await client.post("/hooks/falco", data=raw, headers=sent)
    return response.status, await response.json()


async def stored(env: Env) -> tuple[int, int]:
    """(outbox rows, aggregates) in the store."""
    return len(await rows(env)), (await FalcoRepo(env.db).counts())["falco_aggregates"]


async def test_an_event_is_200_with_its_outcome_and_already_queued(client: Client, env: Env) -> None:
    """A valid event answers 200 naming its outcome; its message is in the outbox by then."""
    status, answer = await hook(client, body())
    assert (status, answer) == (200, {"status": "accepted", "outcome": "posted"})
    assert await stored(env) == (1, 1)


async def test_the_falcosidekick_test_event_is_acknowledged_quietly(client: Client, env: Env) -> None:
    """POST /test of falcosidekick: 200, counted as test, nothing stored or posted."""
    raw = falco_bytes(FALCOSIDEKICK_TEST)
    status, answer = await hook(client, raw)
    assert (status, answer["outcome"]) == (200, "test")
    assert await stored(env) == (0, 0)
    assert count(env, "test", rule="Test rule", priority="debug") == 1


async def test_bad_requests_are_4xx_and_store_nothing(client: Client, env: Env) -> None:
    """Wrong token 401, missing field 400 (named), not JSON 415, GET 405, too large 413: nothing stored."""
    assert (await hook(client, body(), token="wrong-token-000000"))[0] == 401
    status, answer = await hook(client, {k: v for k, v in body().items() if k != "priority"})
    assert status == 400
    assert answer["problems"] == ["priority: Field required"]
    assert (await hook(client, b"{", **{"Content-Type": "application/json"}))[0] == 400
    assert (await hook(client, body(), **{"Content-Type": "text/plain"}))[0] == 415
    response = await client.get("/hooks/falco", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 405
    assert (await hook(client, body(output="x" * 70_000)))[0] == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(body(output="x" * 70_000)).encode()

    response = await client.post(
        "/hooks/falco",
        data=chunks(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert await stored(env) == (0, 0)
    assert counted_total(env.registry) == 0
    assert env.registry.get_sample_value("readybot_falco_webhook_requests_total", {"status": "400"}) == 2


async def test_locked_store_answers_503(client: Client, env: Env) -> None:
    """Another process holding the write lock past the busy timeout is a 503, not a 500."""
    async with write_lock_held(env.db, env.path / "readybot.sqlite3"):
        status, _ = await hook(client, body())
        assert status == 503
    assert await stored(env) == (0, 0)


# -- properties ------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(
        st.sampled_from(
            ["uuid", "output", "priority", "rule", "time", "output_fields", "source", "tags", "hostname", "x"]
        ),
        _json_values,
        max_size=5,
    ),
    drop=st.sets(
        st.sampled_from(["output", "priority", "rule", "time", "output_fields", "tags"]), max_size=2
    ),
)
def test_any_json_is_an_event_or_a_400(changes: dict[str, Any], drop: set[str]) -> None:
    """Whatever JSON arrives, parsing gives an event or a PayloadError: never another exception."""
    data = {k: v for k, v in body().items() if k not in drop} | changes
    try:
        parsed = parse_event(json.dumps(data).encode())
    except PayloadError as error:
        status = error.status
    else:
        status = 200
    if status != 200:
        assert status == 400
        return
    aggregate = Aggregate.start(1, ROOM, event_key(parsed, falco_settings().aggregation_key), parsed, T0, 60)
    assert event_size_worst_case(RENDERER.aggregate(aggregate, now=T0).content()) < MATRIX_EVENT_LIMIT


@given(
    st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))
)
def test_any_json_document_is_an_event_or_a_400(document: Any) -> None:
    """Arbitrary JSON documents (not only event-shaped ones) never raise anything but PayloadError."""
    status = 200
    try:
        parse_event(json.dumps(document).encode())
    except PayloadError as error:
        status = error.status
    assert status in (200, 400)


RENDERER = FalcoRenderer(Templates())
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=3_000)


def event_size_worst_case(content: dict[str, Any]) -> int:
    """Bytes of the content sent as an edit in an encrypted room: JSON, base64 (4/3), plus the envelope."""
    _, sent = build_event(OutboxKind.EDIT, content, "$" + "x" * 254)
    plaintext = len(json.dumps({"type": "m.room.message", "content": sent, "room_id": "!" + "r" * 254}))
    return plaintext * 4 // 3 + 4 + 2_000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=_text,
    output=st.text(max_size=60_000),
    values=st.lists(_text, min_size=4, max_size=4),
    nodes=st.lists(_text, max_size=30),
    tags=st.lists(_text, max_size=20),
    members=st.integers(min_value=1, max_value=200),
)
# The worst case, always tried: every text at its longest, escaping-heavy characters.
@example(
    rule="€" * 5_000,
    output="<\u2028>" * 20_000,
    values=['"' * 3_000] * 4,
    nodes=["n" * 3_000] * 30,
    tags=["t" * 3_000] * 20,
    members=200,
)
def test_rendered_events_never_exceed_the_matrix_limit(
    rule: str, output: str, values: list[str], nodes: list[str], tags: list[str], members: int
) -> None:
    """Own messages, digests of 200 kinds and mute summaries stay under 65,536 bytes as encrypted edits."""
    fields = dict(zip(["k8s.ns.name", "k8s.pod.name", "proc.name", "user.name"], values, strict=True))
    base = FalcoEvent(rule or "r", "emergency", output, T0, "n", "syscall", tuple(tags), fields)
    spec = ["rule", "k8s.ns.name", "k8s.pod.name", "proc.name", "user.name"]
    aggregate = Aggregate.start(1, ROOM, event_key(base, spec), base, T0, 60)
    for node in nodes:
        aggregate.add(replace(base, hostname=node))
    assert (
        event_size_worst_case(RENDERER.aggregate(aggregate, now=T0, mention=True).content())
        < MATRIX_EVENT_LIMIT
    )
    many = [replace(aggregate, id=i, key=(*aggregate.key, ("n", str(i)))) for i in range(members)]
    digest = RENDERER.digest(Digest(0, ROOM, T0, T0 + 60), many, now=T0)
    assert event_size_worst_case(digest.content()) < MATRIX_EVENT_LIMIT
    assert f"of {members} kind" in digest.plain
    mute = Mute(rule or "r", "@a:b", ROOM, T0, T0 + 60)
    for i in range(members):
        mute.add(base, (*aggregate.key, ("n", str(i))), [ROOM])
    assert event_size_worst_case(RENDERER.mute_ended(mute, now=T0).content()) < MATRIX_EVENT_LIMIT


def test_templates_can_be_overridden_and_a_broken_one_fails_the_self_check(tmp_path: Path) -> None:
    """falco.templates_dir replaces a shipped template; a broken override fails at start-up, not later."""
    (tmp_path / "falco_event.txt.j2").write_text("custom {{ rule }} x{{ count }}")
    (tmp_path / "falco_event.html.j2").write_text("<b>custom {{ rule }}</b>")
    renderer = FalcoRenderer(Templates(tmp_path))
    renderer.self_check()
    aggregate = Aggregate.start(1, ROOM, (("rule", "R"),), event(rule="R"), T0, 60)
    assert renderer.aggregate(aggregate, now=T0).plain == "custom R x1"
    (tmp_path / "falco_digest.txt.j2").write_text("{{ no_such_variable }}")
    (tmp_path / "falco_digest.html.j2").write_text("")
    with pytest.raises(Exception, match="no_such_variable"):
        FalcoRenderer(Templates(tmp_path)).self_check()


def test_the_feature_is_built_only_when_enabled() -> None:
    """falco.enabled adds the Falco feature; off, it is absent (and !falco says so)."""
    from bot.catalog import enabled_features
    from bot.falco.feature import falco_feature
    from config.settings import Settings

    base = {"matrix": {"homeserver": "https://m.example.org", "user_id": "@b:example.org", "password": "p"}}
    assert falco_feature not in enabled_features(Settings.model_validate(base))
    enabled = base | {"falco": {"enabled": True, "default_rooms": [ROOM]}}
    assert falco_feature in enabled_features(Settings.model_validate(enabled))
