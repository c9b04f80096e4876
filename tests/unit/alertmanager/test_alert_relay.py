"""The Alertmanager relay: webhook model, handler answers, group state, messages, storms (real SQLite)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

import bot.alertmanager.relay as relay_module
import bot.render.templates
from bot.alertmanager.groups import (
    AlertState,
    GroupState,
    Notification,
    matches,
    merge,
    route,
    storming,
)
from bot.alertmanager.relay import DIGEST_EDIT_INTERVAL_S, AlertRelay
from bot.alertmanager.render import AlertRenderer, silence_url
from bot.alertmanager.store import AlertGroupRepo
from bot.alertmanager.webhook import alertmanager_handler, parse_payload
from bot.http.common import PayloadError
from bot.http.server import Health, build_http_app
from bot.metrics import Metrics
from bot.outbox import Outbox, OutboxKind, build_event
from bot.outbox.budget import RateBudget, SendThroughput
from bot.render.message import MATRIX_EVENT_LIMIT
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store import Database
from bot.store.tx import Row
from config.alertmanager import AlertmanagerSettings, AlertRoute
from tests.stores import open_store, write_lock_held

# The store on SQLite and on PostgreSQL (tests.stores).
pytestmark = pytest.mark.usefixtures("store_backend")

PAYLOADS = Path(__file__).resolve().parents[2] / "payloads" / "alertmanager"
ROOM = "!alerts:example.org"
OTHER_ROOM = "!db-team:example.org"
TOKEN = "am-token-0123456789"
TEAM_TOKEN = "team-a-token-0123456789"
Client = TestClient[web.Request, web.Application]


def real(name: str) -> dict[str, Any]:
    """A payload captured from Alertmanager 0.25 (see tests/payloads/alertmanager/README.md)."""
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return data


def alert(
    fingerprint: str,
    status: str = "firing",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "DiskFull", "severity": "warning", "instance": fingerprint, **(labels or {})},
        "annotations": dict(annotations or {"summary": "Disk almost full"}),
        "startsAt": "2026-11-25T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-25T10:30:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=disk",
        "fingerprint": fingerprint,
    }


def payload(
    alerts: list[dict[str, Any]],
    *,
    key: str = '{}:{alertname="DiskFull"}',
    receiver: str = "readybot",
    group_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A webhook body shaped as Alertmanager 0.25 sends it."""
    labels = [a["labels"] for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(x.get(k) == v for x in labels)} if labels else {}
    annotations = [a["annotations"] for a in alerts]
    common_ann = (
        {k: v for k, v in annotations[0].items() if all(x.get(k) == v for x in annotations)} if alerts else {}
    )
    return {
        "receiver": receiver,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": alerts,
        "groupLabels": dict(group_labels or {"alertname": "DiskFull"}),
        "commonLabels": common,
        "commonAnnotations": common_ann,
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
    }


@dataclass
class Beats:
    """A stand-in for the dead-man's switch: records heartbeats in the caller's transaction."""

    sources: list[str] = field(default_factory=list)
    joined_tx: list[bool] = field(default_factory=list)

    def is_heartbeat(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == "Watchdog"

    def source_of(self, external_url: str, common_labels: Mapping[str, str]) -> str:
        return common_labels.get("cluster") or external_url

    async def heartbeat(self, source: str, *, tx: aiosqlite.Connection | None = None) -> None:
        self.sources.append(source)
        self.joined_tx.append(tx is not None and tx.in_transaction)


class Clock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Relay:
    db: Database
    outbox: Outbox
    relay: AlertRelay
    repo: AlertGroupRepo
    beats: Beats
    clock: Clock
    settings: AlertmanagerSettings

    async def post(self, body: dict[str, Any]) -> None:
        await self.relay.accept(parse_payload(json.dumps(body).encode()))

    async def rows(self) -> list[Row]:
        return await self.db.fetchall("SELECT * FROM outbox ORDER BY id")

    async def bodies(self) -> list[tuple[str, str]]:
        """(kind, plain body) of every queued event."""
        return [(r["kind"], json.loads(r["payload"])["body"]) for r in await self.rows()]

    async def send_all(self) -> None:
        """Mark every pending row sent, as the sender would (event id = $ + row id)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE outbox SET state = 'sent', event_id = '$ev' || id, settled_at = ?"
                " WHERE state = 'pending'",
                (self.clock(),),
            )


def settings_with(**values: Any) -> AlertmanagerSettings:
    return AlertmanagerSettings.model_validate({"enabled": True, "default_rooms": [ROOM], **values})


async def make_relay(
    path: Path, settings: AlertmanagerSettings, clock: Clock | None = None, *, in_flight: int = 4
) -> Relay:
    clock = clock or Clock()
    db = await open_store(path, migrations=MIGRATIONS, clock=clock)
    outbox = Outbox(db, clock=clock, max_in_flight_per_room=in_flight)
    repo = AlertGroupRepo(db)
    beats = Beats()
    relay = AlertRelay(
        db=db,
        outbox=outbox,
        repo=repo,
        renderer=AlertRenderer(Templates(settings.templates_dir), settings),
        settings=settings,
        clock=clock,
        heartbeats=beats,
    )
    await relay.load()
    return Relay(db, outbox, relay, repo, beats, clock, settings)


@pytest.fixture
async def r(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await make_relay(tmp_path / "readybot.sqlite3", settings_with())
    yield relay
    await relay.db.close()


# --- the webhook model -------------------------------------------------------------


@pytest.mark.parametrize("name", ["firing_one", "firing_two", "one_resolved", "all_resolved"])
def test_real_alertmanager_payloads_validate(name: str) -> None:
    """Every payload captured from a real Alertmanager validates, endsAt year 1 included."""
    parsed = parse_payload((PAYLOADS / f"{name}.json").read_bytes())
    assert parsed.version == "4"
    assert parsed.group_key.startswith("{}:")
    assert all(a.fingerprint for a in parsed.alerts)


def test_unknown_fields_are_kept_not_refused() -> None:
    """Fields newer Alertmanagers add (notification_reason) are accepted."""
    body = real("firing_one") | {"notification_reason": "new_alert"}
    body["alerts"][0]["somethingNew"] = {"x": 1}
    assert parse_payload(json.dumps(body).encode()).receiver == "rb"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b.pop("groupKey"), "groupKey"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda b: b["alerts"][0]["labels"].update(pod=5), "alerts.0.labels.pod"),
        (lambda b: b["commonLabels"].clear() or b.update(commonLabels=[]), "commonLabels"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
    ],
)
def test_invalid_payload_names_the_field(mutate: Any, path: str) -> None:
    """A 400 lists the offending field's path."""
    body = copy.deepcopy(real("firing_one"))
    mutate(body)
    with pytest.raises(PayloadError) as caught:
        parse_payload(json.dumps(body).encode())
    assert caught.value.status == 400
    assert any(p.startswith(f"{path}:") for p in caught.value.problems), caught.value.problems


def test_invalid_payload_does_not_echo_the_input() -> None:
    """The problem lines name paths and rules, never the (possibly huge or secret) value."""
    body = real("firing_one")
    body["alerts"][0]["status"] = "S3CRET-" + "x" * 5000
    with pytest.raises(PayloadError) as caught:
        parse_payload(json.dumps(body).encode())
    assert "S3CRET" not in json.dumps(caught.value.problems)
    assert len(json.dumps(caught.value.problems)) < 500


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "invalid payload"),
        (b"[" * 40 + b"]" * 40, "nested deeper"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    ],
)
def test_unreadable_bodies_are_400(body: bytes, detail: str) -> None:
    """Bad JSON, bad encoding, a non-object and absurd nesting are refused as 400, never a crash."""
    with pytest.raises(PayloadError) as caught:
        parse_payload(body)
    assert caught.value.status == 400
    assert detail in caught.value.detail


# --- the handler behind the real HTTP server ------------------------------------------


@pytest.fixture
async def client(r: Relay) -> AsyncIterator[Client]:
    """The bot's HTTP app with the relay at /hooks/alertmanager, a hook-wide and a team-scoped token."""
    app = build_http_app(
        metrics=Metrics(),
        health=Health(store_open=True),
        hook_tokens={"alertmanager": SecretStr(TOKEN), "alertmanager/team-a": SecretStr(TEAM_TOKEN)},
        hooks={"alertmanager": alertmanager_handler(r.relay)},
        max_body_bytes=65_536,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def hook(client: Client, body: object, token: str = TOKEN, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **kwargs}
    response = await client.post("/hooks/alertmanager", data=data, headers=headers)
    return response.status, await response.json()


async def stored(r: Relay) -> tuple[int, int]:
    """(outbox rows, alert groups) in the store."""
    outbox = await r.db.fetchone("SELECT COUNT(*) AS n FROM outbox")
    groups = await r.db.fetchone("SELECT COUNT(*) AS n FROM alert_groups")
    assert outbox is not None and groups is not None
    return int(outbox["n"]), int(groups["n"])


async def test_a_valid_notification_is_200_and_queued(client: Client, r: Relay) -> None:
    """A real payload answers 200 and its message is already in the outbox."""
    status, _ = await hook(client, real("firing_one"))
    assert status == 200
    assert await stored(r) == (1, 1)


async def test_malformed_body_is_400_naming_the_field_and_stores_nothing(client: Client, r: Relay) -> None:
    """A missing fingerprint is 400 with its path; nothing is stored."""
    body = real("firing_one")
    del body["alerts"][0]["fingerprint"]
    status, answer = await hook(client, body)
    assert status == 400
    assert any(p.startswith("alerts.0.fingerprint:") for p in answer["problems"])
    assert await stored(r) == (0, 0)


async def test_wrong_token_is_401_and_stores_nothing(client: Client, r: Relay) -> None:
    """A wrong bearer token is refused before the body is read."""
    status, _ = await hook(client, real("firing_one"), token="wrong-token-000000")
    assert status == 401
    assert await stored(r) == (0, 0)


async def test_oversized_body_is_413_and_stores_nothing(client: Client, r: Relay) -> None:
    """A body over http.max_body_bytes is 413, with or without Content-Length."""
    body = real("firing_one")
    body["commonAnnotations"]["description"] = "x" * 70_000
    status, _ = await hook(client, body)
    assert status == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(body).encode()

    response = await client.post(
        "/hooks/alertmanager",
        data=chunks(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert await stored(r) == (0, 0)


async def test_wrong_content_type_is_415(client: Client, r: Relay) -> None:
    """A form or text body is 415: Alertmanager always sends JSON."""
    status, _ = await hook(client, real("firing_one"), **{"Content-Type": "text/plain"})
    assert status == 415
    assert await stored(r) == (0, 0)


async def test_scoped_token_only_posts_for_its_receiver(client: Client, r: Relay) -> None:
    """A token for receiver team-a is 403 for another receiver and 200 for team-a."""
    status, _ = await hook(client, real("firing_one"), token=TEAM_TOKEN)
    assert status == 403
    assert await stored(r) == (0, 0)
    status, _ = await hook(client, real("firing_one") | {"receiver": "team-a"}, token=TEAM_TOKEN)
    assert status == 200


# SQLite only: its max_page_count stands in for a full disk, and PostgreSQL has no such knob.
@pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
async def test_store_that_cannot_write_answers_503_and_keeps_nothing(client: Client, r: Relay) -> None:
    """Disk full (the file cannot grow) answers 503 so Alertmanager retries; nothing is half-written."""
    await hook(client, real("firing_one"))  # let the file grow past its empty size first
    before = await stored(r)
    row = await r.db.fetchone("PRAGMA page_count")
    assert row is not None
    await r.db.conn.execute(f"PRAGMA max_page_count = {int(row[0])}")
    big = payload([alert(f"fp{i}", annotations={"summary": "x" * 1000}) for i in range(40)], key="big")
    status, answer = await hook(client, big)
    assert status == 503, answer
    assert await stored(r) == before


async def test_locked_store_answers_503(client: Client, r: Relay, tmp_path: Path) -> None:
    """Another process holding the write lock past the busy timeout is a 503, not a 500."""
    async with write_lock_held(r.db, tmp_path / "readybot.sqlite3"):
        status, _ = await hook(client, real("firing_one"))
        assert status == 503
    assert await stored(r) == (0, 0)


# --- heartbeats -------------------------------------------------------------------


def watchdog(status: str = "firing") -> dict[str, Any]:
    return alert("wd", status, labels={"alertname": "Watchdog", "severity": "none", "instance": ""})


async def test_watchdog_only_is_a_heartbeat_and_posts_nothing(r: Relay) -> None:
    """A notification of only the Watchdog feeds the switch in the relay's transaction and posts nothing."""
    await r.post(payload([watchdog()], key="wd", group_labels={"alertname": "Watchdog"}))
    assert r.beats.sources == ["http://alertmanager.example:9093"]
    assert r.beats.joined_tx == [True]
    assert await r.rows() == []


async def test_watchdog_in_a_mixed_group_is_taken_out(r: Relay) -> None:
    """A group holding the Watchdog and a real alert: one beat, and a message without the Watchdog."""
    await r.post(payload([watchdog(), alert("a")], group_labels={}))
    assert len(r.beats.sources) == 1
    bodies = await r.bodies()
    assert len(bodies) == 1
    assert "Watchdog" not in bodies[0][1]


async def test_resolved_watchdog_is_no_heartbeat(r: Relay) -> None:
    """A resolved Watchdog proves nothing about the pipeline now: no beat, nothing posted."""
    await r.post(payload([watchdog("resolved")], key="wd"))
    assert r.beats.sources == []
    assert await r.rows() == []


async def test_without_a_deadmans_switch_watchdog_is_still_not_relayed(tmp_path: Path) -> None:
    """With no switch in the extensions, alertname=Watchdog is dropped, not posted."""
    clock = Clock()
    db = await open_store(tmp_path / "s.sqlite3", migrations=MIGRATIONS, clock=clock)
    try:
        settings = settings_with()
        relay = AlertRelay(
            db=db,
            outbox=Outbox(db, clock=clock),
            repo=AlertGroupRepo(db),
            renderer=AlertRenderer(Templates(), settings),
            settings=settings,
            clock=clock,
        )
        await relay.load()
        await relay.accept(parse_payload(json.dumps(payload([watchdog()], key="wd")).encode()))
        assert await db.fetchall("SELECT * FROM outbox") == []
    finally:
        await db.close()


# --- one message per group, edited in place ----------------------------------------------


async def test_real_sequence_posts_once_then_edits_and_threads(r: Relay) -> None:
    """Alertmanager's four notifications: one message, edits of it, and a thread line per change."""
    await r.post(real("firing_one"))
    await r.send_all()
    for name in ("firing_two", "one_resolved", "all_resolved"):
        await r.post(real(name))
        await r.send_all()
    rows = await r.rows()
    kinds = [row["kind"] for row in rows]
    assert kinds.count("message") == 1
    assert kinds.count("edit") == 3
    assert kinds.count("thread") == 3
    message = rows[0]
    assert all(row["target_event_id"] == message["event_id"] for row in rows if row["kind"] == "edit")
    assert all(row["root_event_id"] == message["event_id"] for row in rows if row["kind"] == "thread")
    last_edit = json.loads([row for row in rows if row["kind"] == "edit"][-1]["payload"])
    assert last_edit["body"].startswith("✅ RESOLVED")
    assert "Resolved after" in last_edit["body"]
    threads = [json.loads(row["payload"])["body"] for row in rows if row["kind"] == "thread"]
    assert threads[0].startswith("🆕 1 new: pod=web-2")
    assert threads[1].startswith("✅ 1 resolved: pod=web-1")
    assert threads[2].startswith("✅ All resolved after")


async def test_repeat_notification_posts_nothing(r: Relay) -> None:
    """The same notification again (repeat_interval, or a retry) queues nothing."""
    await r.post(real("firing_one"))
    await r.post(real("firing_one"))
    assert [k for k, _ in await r.bodies()] == ["message"]


async def test_pending_edits_of_one_message_are_coalesced(r: Relay) -> None:
    """Changes arriving before the previous edit was sent replace it: one edit carries the newest state."""
    await r.post(payload([alert("a")]))
    await r.send_all()
    await r.post(payload([alert("a"), alert("b")]))
    await r.post(payload([alert("a"), alert("b"), alert("c")]))
    edits = [b for k, b in await r.bodies() if k == "edit"]
    assert len(edits) == 1
    assert "instance=c" in edits[0]


async def test_update_of_a_still_queued_message_rewrites_it(r: Relay) -> None:
    """A group changing while its message waits behind 4 others (not on its way): the message is updated."""
    # The outbox sends up to max_in_flight_per_room (4) rows of a room at once:
    # a message behind 4 pending rows cannot be on its way yet.
    for n in range(4):
        await r.post(payload([alert("x")], key=f"other{n}", group_labels={"alertname": f"Other{n}"}))
    await r.post(payload([alert("a")]))
    await r.post(payload([alert("a"), alert("b")]))
    bodies = await r.bodies()
    assert [k for k, _ in bodies] == ["message"] * 5
    assert "FIRING ×2" in bodies[4][1]


async def test_refiring_after_resolution_is_a_new_message(r: Relay) -> None:
    """A group that resolved and fires again gets a new message (a new incident)."""
    await r.post(payload([alert("a")]))
    await r.post(payload([alert("a", "resolved")]))
    await r.post(payload([alert("a")]))
    assert [k for k, _ in await r.bodies()].count("message") == 2


async def test_mapping_survives_a_restart(tmp_path: Path) -> None:
    """After a restart the next change edits the message posted before it, instead of posting again."""
    path = tmp_path / "restart.sqlite3"
    first = await make_relay(path, settings_with())
    await first.post(payload([alert("a")]))
    await first.send_all()
    await first.db.close()

    second = await make_relay(path, settings_with())
    try:
        await second.post(payload([alert("a"), alert("b")]))
        rows = await second.rows()
        assert [row["kind"] for row in rows] == ["message", "edit", "thread"]
        assert rows[1]["target_event_id"] == rows[0]["event_id"]
    finally:
        await second.db.close()


async def test_message_never_delivered_is_posted_again_on_the_next_change(r: Relay) -> None:
    """If a group's message failed for good (say the bot was not in the room), the next change posts anew."""
    await r.post(payload([alert("a")]))
    async with r.db.transaction() as tx:
        await tx.execute("UPDATE outbox SET state = 'failed', settled_at = 1 WHERE kind = 'message'")
    await r.relay.maintain()
    await r.post(payload([alert("a"), alert("b")]))
    rows = await r.rows()
    assert [(row["kind"], row["state"]) for row in rows] == [("message", "failed"), ("message", "pending")]
    assert "FIRING ×2" in json.loads(rows[1]["payload"])["body"]


async def test_long_resolved_groups_are_forgotten(r: Relay) -> None:
    """After resolved_retention_s a resolved group is dropped from memory and store; others stay."""
    await r.post(payload([alert("a")], key="old"))
    await r.post(payload([alert("a")], key="live"))
    await r.post(payload([alert("a", "resolved")], key="old"))
    await r.send_all()
    r.clock.now += r.settings.resolved_retention_s + 1
    await r.relay.maintain()
    assert r.relay.group("old") is None
    assert r.relay.group("live") is not None
    keys = [row["group_key"] for row in await r.db.fetchall("SELECT group_key FROM alert_groups")]
    assert keys == ["live"]


async def test_find_by_message_gives_the_group_for_its_event(r: Relay) -> None:
    """The 🔕 lookup finds a group by its message's event id, before and after the id is copied over."""
    await r.post(real("firing_one"))
    await r.send_all()
    record = await r.repo.find_by_message(ROOM, "$ev1")
    assert record is not None
    assert record.group_key == real("firing_one")["groupKey"]
    assert record.receiver == "rb"
    assert record.group_labels == {"alertname": "KubePodCrashLooping", "namespace": "prod"}
    assert record.common_labels["pod"] == "web-1"
    assert record.external_url == "http://127.0.0.1:19094"
    assert (record.room_id, record.thread_root) == (ROOM, "$ev1")
    await r.relay.maintain()  # copies the event id into the relay's table
    assert await r.repo.find_by_message(ROOM, "$ev1") == record
    assert await r.repo.find_by_message(ROOM, "$other") is None
    assert await r.repo.find_by_message(OTHER_ROOM, "$ev1") is None


# fold_after_s at its ceiling: the measured send rate (10/s assumed) must not fold either.
OPEN_BUDGET = {"send_budget": {"burst": 10_000, "per_minute": 600_000, "fold_after_s": 600}}


@pytest.fixture
async def open_relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay whose budget never folds (a homeserver without rate limits)."""
    relay = await make_relay(tmp_path / "open.sqlite3", settings_with(**OPEN_BUDGET))
    yield relay
    await relay.db.close()


async def test_concurrent_notifications_are_committed_together(open_relay: Relay) -> None:
    """Twenty notifications at once all succeed, each group posted once, in fewer transactions."""
    r = open_relay
    commits = 0
    original = r.db.transaction

    def counting(join: aiosqlite.Connection | None = None) -> Any:
        nonlocal commits
        commits += join is None  # a new transaction, not a repository joining ours
        return original(join)

    r.db.transaction = counting  # type: ignore[method-assign]
    await asyncio.gather(*(r.post(payload([alert("a")], key=f"g{i}")) for i in range(20)))
    assert [k for k, _ in await r.bodies()].count("message") == 20
    assert commits < 20


async def test_one_bad_notification_does_not_fail_the_batch(
    open_relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notification whose handling raises fails alone; the others in its batch are committed."""
    r = open_relay
    from bot.alertmanager import relay as relay_module

    real_merge = relay_module.merge

    def failing(previous: GroupState | None, note: Notification, now: float) -> Any:
        if note.group_key == "bad":
            raise RuntimeError("boom")
        return real_merge(previous, note, now)

    monkeypatch.setattr(relay_module, "merge", failing)
    results = await asyncio.gather(
        *(r.post(payload([alert("a")], key=key)) for key in ("g1", "bad", "g2")), return_exceptions=True
    )
    assert [type(x).__name__ for x in results] == ["NoneType", "RuntimeError", "NoneType"]
    assert [k for k, _ in await r.bodies()].count("message") == 2


# --- routing --------------------------------------------------------------------------


def test_matchers_equal_regex_and_negations() -> None:
    """Matchers: plain equality, =~ anchored regex, != and !~."""
    assert matches("prod", "prod")
    assert not matches("prod", "production")
    assert matches("=~prod|staging", "staging")
    assert not matches("=~prod", "production")  # anchored, as in Alertmanager
    assert matches("!=prod", "dev")
    assert matches("!~dev.*", "prod")
    assert not matches("!~dev.*", "devel")


def test_routes_first_match_wins_unless_continue() -> None:
    """The first matching route takes the group; continue: true lets later routes add rooms."""
    routes = [
        AlertRoute(receivers=["db"], rooms=[OTHER_ROOM]),
        AlertRoute.model_validate({"matchers": {"team": "=~web|api"}, "rooms": ["!web"], "continue": True}),
        AlertRoute(matchers={"severity": "critical"}, rooms=["!oncall"]),
        AlertRoute(rooms=["!never"]),
    ]
    assert route(routes, [ROOM], "db", {"team": "web"}) == [OTHER_ROOM]
    assert route(routes, [ROOM], "x", {"team": "api", "severity": "critical"}) == ["!web", "!oncall"]
    assert route(routes[:1], [ROOM], "x", {}) == [ROOM]


async def test_group_goes_to_every_routed_room(tmp_path: Path) -> None:
    """A group routed to two rooms gets a message in each."""
    settings = settings_with(routes=[{"matchers": {"severity": "warning"}, "rooms": [ROOM, OTHER_ROOM]}])
    relay = await make_relay(tmp_path / "route.sqlite3", settings)
    try:
        await relay.post(payload([alert("a")]))
        assert sorted(row["room_id"] for row in await relay.rows()) == sorted([ROOM, OTHER_ROOM])
    finally:
        await relay.db.close()


# --- the pure state logic -------------------------------------------------------------------


def state_of(*alerts: tuple[str, str]) -> Notification:
    return Notification(
        group_key="k",
        receiver="r",
        status="firing" if any(s == "firing" for _, s in alerts) else "resolved",
        group_labels={},
        common_labels={},
        common_annotations={},
        external_url="",
        alerts=[AlertState(fp, s, {"fp": fp}, {}, 100.0, None, "") for fp, s in alerts],  # type: ignore[arg-type]
    )


def test_merge_tells_new_resolved_and_unchanged_apart() -> None:
    """By fingerprint: a new firing alert is new, firing → resolved is resolved, a repeat is no change."""
    first, change = merge(None, state_of(("a", "firing")), 1.0)
    assert change.new_episode and [a.fingerprint for a in change.new] == ["a"]
    second, change = merge(first, state_of(("a", "firing"), ("b", "firing")), 2.0)
    assert [a.fingerprint for a in change.new] == ["b"] and not change.new_episode
    third, change = merge(second, state_of(("a", "resolved"), ("b", "firing")), 3.0)
    assert [a.fingerprint for a in change.resolved] == ["a"] and third.status == "firing"
    _, change = merge(third, state_of(("a", "resolved"), ("b", "firing")), 4.0)
    assert not change.changed


def test_missing_firing_alert_counts_as_resolved_unless_truncated() -> None:
    """Alertmanager lists every alert of a group: a firing one missing has stopped, unless truncated."""
    first, _ = merge(None, state_of(("a", "firing"), ("b", "firing")), 1.0)
    after, change = merge(first, state_of(("b", "firing")), 2.0)
    assert [a.fingerprint for a in change.resolved] == ["a"]
    assert {a.fingerprint: a.status for a in after.alerts} == {"a": "resolved", "b": "firing"}
    truncated = replace(state_of(("b", "firing")), truncated_alerts=1)
    _, change = merge(first, truncated, 2.0)
    assert not change.resolved


def test_group_resolution_and_how_long_it_fired() -> None:
    """When the last alert resolves the group resolves, and fired_for spans first start to last end."""
    first, _ = merge(None, state_of(("a", "firing")), 1.0)
    note = replace(
        state_of(("a", "resolved")), alerts=[AlertState("a", "resolved", {}, {}, 100.0, 700.0, "")]
    )
    resolved, change = merge(first, note, 800.0)
    assert change.group_resolved and resolved.status == "resolved"
    assert resolved.fired_for() == 600.0


# --- the rate budget and storms -------------------------------------------------------------------


def test_budget_predicts_waits_from_burst_refill_and_sends() -> None:
    """A full bucket sends at once; past the burst each event waits one refill interval more."""
    budget = RateBudget(burst=10, per_minute=12, now=0.0)
    assert budget.delay(ahead=9, now=0.0) == 0.0
    assert budget.delay(ahead=10, now=0.0) == pytest.approx(5.0)
    budget.observe([0.0] * 10)
    assert budget.delay(ahead=0, now=0.0) == pytest.approx(5.0)
    assert budget.delay(ahead=0, now=5.0) == pytest.approx(0.0)
    # A homeserver more generous than the model never drives the bucket below zero.
    budget.observe([6.0] * 50)
    assert budget.tokens(6.0) == 0.0


def test_storming_reserves_room_for_the_digest() -> None:
    """With the default budget, a new message folds once it and the digest's two events would wait > 20 s."""
    default = AlertmanagerSettings().send_budget
    budget = RateBudget(burst=default.burst, per_minute=default.per_minute, now=0.0)
    # ahead + reserve(2) + 1 - 10 tokens, at 5 s each: 11 queued → 20 s (ok), 12 → 25 s (fold).
    assert not storming(budget, ahead=11, now=0.0, max_delay_s=default.max_delay_s)
    assert storming(budget, ahead=12, now=0.0, max_delay_s=default.max_delay_s)
    # With the bucket empty, a lone new group still gets its own message.
    budget.observe([0.0] * 10)
    assert not storming(budget, ahead=0, now=0.0, max_delay_s=default.max_delay_s)


def test_throughput_measures_recent_sends_and_predicts_the_wait() -> None:
    """Sends per second over the last 10 s predict a queued event's wait; with too few, a prior 10/s."""
    throughput = SendThroughput(window_s=10.0, min_sends=8, prior_rate=10.0)
    throughput.observe([100.0 + i * 0.05 for i in range(7)])
    assert throughput.measured(100.3) is None  # 7 sends: not enough to tell
    assert throughput.wait(ahead=29, now=100.3) == pytest.approx(3.0)  # at the prior 10/s
    throughput.observe([100.35])
    assert throughput.rate(100.35) == pytest.approx(20.0)
    assert throughput.wait(ahead=59, now=100.35) == pytest.approx(3.0)
    # Sends older than the window no longer count: an idle outbox is back to the prior.
    assert throughput.measured(111.0) is None
    assert throughput.rate(111.0) == 10.0


def test_storming_folds_by_measured_throughput_when_the_budget_is_raised() -> None:
    """A raised budget never folds; the measured rate folds once a new message would wait > fold_after_s."""
    raised = RateBudget(burst=100_000, per_minute=1_000_000, now=0.0)
    throughput = SendThroughput()
    throughput.observe([i / 20 for i in range(20)])  # 20 sends a second
    now = 1.0
    # (ahead + reserve 2 + 1) / 20 per second: 57 queued → 3.0 s (ok), 58 → 3.05 s (fold).
    assert not storming(raised, 57, now, 20.0, throughput, fold_after_s=3.0)
    assert storming(raised, 58, now, 20.0, throughput, fold_after_s=3.0)
    # Without the measurement only the budget speaks: with this one, never.
    assert not storming(raised, 10_000, now, 20.0)
    # A lone group is never folded by the measurement.
    assert not storming(raised, 0, now, 20.0, throughput, fold_after_s=0.5)
    # Nothing measured yet (a quiet outbox): the prior 10/s, so a burst folds after 27 queued.
    assert not storming(raised, 27, now, 20.0, SendThroughput(), fold_after_s=3.0)
    assert storming(raised, 28, now, 20.0, SendThroughput(), fold_after_s=3.0)
    # The default budget still folds on its own prediction when the sends look fast.
    default = RateBudget(burst=10, per_minute=12, now=0.0)
    assert storming(default, 12, 0.0, 20.0, throughput, fold_after_s=3.0)


def test_a_storm_folds_once_its_wait_passes_fold_after_s_not_max_delay_s() -> None:
    """Default budget: a storm folds once a message would wait > 3 s; a lone group keeps its message."""
    budget = RateBudget(burst=10, per_minute=12, now=0.0)
    # (ahead + reserve 2 + 1 - 10 tokens) at 5 s each: 7 queued → 0 s, 8 → 5 s (> 3 s: fold).
    assert not storming(budget, 7, 0.0, 20.0, SendThroughput(), fold_after_s=3.0)
    assert storming(budget, 8, 0.0, 20.0, SendThroughput(), fold_after_s=3.0)
    # The bucket spent: a lone group (or a second) still waits up to max_delay_s (15 s, 20 s) for its message.
    budget.observe([0.0] * 10)
    assert not storming(budget, 0, 0.0, 20.0, SendThroughput(), fold_after_s=3.0)
    assert not storming(budget, 1, 0.0, 20.0, SendThroughput(), fold_after_s=3.0)


async def test_storm_folds_new_groups_into_one_digest(tmp_path: Path) -> None:
    """Past the budget, new groups are lines of one digest: rewritten while queued, then edited in place."""
    settings = settings_with(send_budget={"burst": 3, "per_minute": 6, "max_delay_s": 10})
    # One row in flight per room: the digest, queued behind 2 messages, is rewritten in place.
    relay = await make_relay(tmp_path / "storm.sqlite3", settings, in_flight=1)

    def storm(i: int) -> dict[str, Any]:
        return payload([alert("a")], key=f"g{i}", group_labels={"alertname": f"Storm{i:02}"})

    try:
        for i in range(20):
            await relay.post(storm(i))
        rows = await relay.rows()
        messages = [json.loads(row["payload"])["body"] for row in rows if row["kind"] == "message"]
        # (ahead + 2 + 1 - 3 tokens) at 10 s each must stay <= 10 s: 2 groups get their own message.
        own = [m for m in messages if not m.startswith("🌩")]
        (digest,) = [m for m in messages if m.startswith("🌩")]
        assert len(own) == 2
        # Queued behind those, the digest message itself took every later group: no edit yet.
        assert [row["kind"] for row in rows] == ["message", "message", "message"]
        assert all(f"Storm{i:02}" in digest for i in range(2, 20))

        await relay.send_all()
        for i in range(20, 30):
            await relay.post(storm(i))
        edits = [json.loads(row["payload"])["body"] for row in await relay.rows() if row["kind"] == "edit"]
        assert len(edits) == 1  # once sent, one pending edit, superseded by each later group
        assert all(f"Storm{i:02}" in edits[0] for i in range(2, 30))
        assert "28 groups" in edits[0]
    finally:
        await relay.db.close()


async def test_digest_edits_are_spaced_once_the_last_one_was_sent(tmp_path: Path) -> None:
    """Once its last edit was sent, a digest's next change waits DIGEST_EDIT_INTERVAL_S, then is one edit."""
    settings = settings_with(send_budget={"burst": 1, "per_minute": 1, "max_delay_s": 1})
    relay = await make_relay(tmp_path / "spaced.sqlite3", settings)

    def storm(name: str) -> dict[str, Any]:
        return payload([alert("a")], key=name, group_labels={"alertname": name})

    async def edits() -> list[str]:
        return [b for k, b in await relay.bodies() if k == "edit"]

    try:
        await relay.post(storm("First"))
        await relay.send_all()
        await relay.post(storm("Second"))  # no edit sent yet: queued at once
        await relay.send_all()
        await relay.post(storm("Third"))
        await relay.post(storm("Fourth"))
        await relay.relay.flush_deferred()
        assert len(await edits()) == 1  # the second change waits
        relay.clock.now += DIGEST_EDIT_INTERVAL_S
        await relay.relay.flush_deferred()
        latest = await edits()
        assert len(latest) == 2
        assert all(name in latest[-1] for name in ("First", "Second", "Third", "Fourth"))
        await relay.relay.flush_deferred()
        assert len(await edits()) == 2  # nothing left to flush
    finally:
        await relay.db.close()


async def test_folded_group_stays_in_the_digest(tmp_path: Path) -> None:
    """A group in a digest that resolves later updates its digest line; it never gets its own message."""
    settings = settings_with(send_budget={"burst": 1, "per_minute": 1, "max_delay_s": 1})
    relay = await make_relay(tmp_path / "stay.sqlite3", settings)
    try:
        await relay.post(payload([alert("a")], key="g1", group_labels={"alertname": "First"}))
        await relay.send_all()
        relay.clock.now += 3600  # the budget has recovered…
        await relay.post(payload([alert("a", "resolved")], key="g1", group_labels={"alertname": "First"}))
        rows = await relay.rows()
        assert [row["kind"] for row in rows] == ["message", "edit"]
        assert rows[1]["target_event_id"] == rows[0]["event_id"]
        assert "First" in json.loads(rows[1]["payload"])["body"]
        assert "resolved" in json.loads(rows[1]["payload"])["body"]
    finally:
        await relay.db.close()


async def test_a_digest_whose_groups_all_resolved_takes_no_new_ones(tmp_path: Path) -> None:
    """Once every group of a digest resolved, the next storm starts a new digest message."""
    settings = settings_with(send_budget={"burst": 1, "per_minute": 1, "max_delay_s": 1})
    relay = await make_relay(tmp_path / "closed.sqlite3", settings)
    try:
        for key in ("first", "second"):
            await relay.post(payload([alert("a")], key=key, group_labels={"alertname": key}))
        await relay.send_all()
        await relay.post(payload([alert("a", "resolved")], key="first", group_labels={"alertname": "first"}))
        await relay.post(payload([alert("a")], key="third", group_labels={"alertname": "third"}))
        assert [d.members for d in relay.relay.digests()] == [["first", "second", "third"]]  # "second" fires
        await relay.post(
            payload([alert("a", "resolved")], key="second", group_labels={"alertname": "second"})
        )
        await relay.post(payload([alert("a", "resolved")], key="third", group_labels={"alertname": "third"}))
        await relay.send_all()
        await relay.post(payload([alert("a")], key="fourth", group_labels={"alertname": "fourth"}))
        digests = sorted(relay.relay.digests(), key=lambda d: d.id)
        assert [d.members for d in digests] == [["first", "second", "third"], ["fourth"]]
    finally:
        await relay.db.close()


async def test_full_digest_starts_another(tmp_path: Path) -> None:
    """A digest whose lines would outgrow one event is closed; later groups start a new digest."""
    settings = settings_with(send_budget={"burst": 1, "per_minute": 1, "max_delay_s": 1})
    relay = await make_relay(tmp_path / "full.sqlite3", settings)
    try:
        long_labels = {"alertname": "Storm", "namespace": "n" * 150, "service": "s" * 150}
        for i in range(60):
            await relay.post(payload([alert("a")], key=f"g{i}", group_labels={**long_labels, "i": str(i)}))
        digests = relay.relay.digests()
        assert len(digests) >= 2
        assert sum(len(d.members) for d in digests) == 60
        for row in await relay.rows():
            content = json.loads(row["payload"])
            assert "(truncated)" not in content["body"]
    finally:
        await relay.db.close()


# --- rendering ------------------------------------------------------------------------------


def renderer(**values: Any) -> AlertRenderer:
    settings = settings_with(**values)
    return AlertRenderer(Templates(settings.templates_dir), settings)


def group_of(*alerts: dict[str, Any], annotations: Mapping[str, str] | None = None) -> GroupState:
    body = payload(list(alerts))
    if annotations is not None:
        body["commonAnnotations"] = dict(annotations)
    parsed = parse_payload(json.dumps(body).encode())
    from bot.alertmanager.relay import notification_of

    state, _ = merge(None, notification_of(parsed, parsed.alerts), 1_000.0)
    return state


def test_group_message_shows_severity_summary_labels_and_links() -> None:
    """Severity emoji and name, summary, description, the labels that differ, runbook/silence/dashboards."""
    annotations = {
        "summary": "Disk almost full",
        "description": "Less than 5% left",
        "runbook_url": "https://runbooks.example/disk",
        "dashboard_url": "https://grafana.example/d/disk",
    }
    state = group_of(
        alert("a", labels={"severity": "critical"}, annotations=annotations),
        alert("b", labels={"severity": "critical"}, annotations=annotations),
    )
    message = renderer().group(state)
    assert message.plain.startswith("🔴 FIRING ×2 [CRITICAL] DiskFull")
    assert "Disk almost full" in message.plain and "Less than 5% left" in message.plain
    assert "instance=a" in message.plain and "instance=b" in message.plain
    assert "Runbook: https://runbooks.example/disk" in message.plain
    assert "Dashboard: https://grafana.example/d/disk" in message.plain
    assert message.html is not None
    assert '<span data-mx-color="#d0021b">' in message.html
    assert (
        "Silence: http://alertmanager.example:9093/#/silences/new?filter=%7Balertname%3D%22DiskFull%22%7D"
        in message.plain
    )


ALERT_START = 1_795_600_800.0  # 2026-11-25 10:00 UTC, the startsAt of alert()


def test_a_firing_group_says_since_when_as_of_the_time_it_is_rendered() -> None:
    """Firing: "Firing since 10:00 UTC, 12m." counted to the render time; another day shows the date."""
    state = group_of(alert("a"), alert("b"))
    message = renderer().group(state, now=ALERT_START + 12 * 60 + 5)
    assert "Firing since 10:00 UTC, 12m." in message.plain
    assert message.html is not None and "Firing since 10:00 UTC, 12m." in message.html
    next_day = renderer().group(state, now=ALERT_START + 86_400 + 3_600)
    assert "Firing since 2026-11-25 10:00 UTC, 1d 1h." in next_day.plain


def test_a_resolved_group_has_no_silence_link_and_no_firing_since() -> None:
    """Nothing left to silence once resolved: the Silence link goes, and so does "Firing since"."""
    state = group_of(alert("a", "resolved"))
    message = renderer().group(state, now=ALERT_START + 3_600)
    assert message.html is not None
    assert "Silence" not in message.plain and "/#/silences/new" not in message.html
    assert "Firing since" not in message.plain
    assert "Resolved after 30m." in message.plain


def test_alerts_keep_their_place_in_the_group_when_one_resolves() -> None:
    """The list is ordered by start and labels, not by status: a resolving alert does not jump to the end."""

    def order(state: GroupState) -> list[str]:
        plain = renderer().group(state, now=ALERT_START).plain
        return [line.split("instance=")[1][:1] for line in plain.splitlines() if "instance=" in line]

    assert order(group_of(alert("a"), alert("b"), alert("c"))) == ["a", "b", "c"]
    assert order(group_of(alert("a", "resolved"), alert("b"), alert("c"))) == ["a", "b", "c"]
    assert order(group_of(alert("c"), alert("b", "resolved"), alert("a"))) == ["a", "b", "c"]


def test_colours_use_data_mx_color_and_bold_is_strong_in_every_template() -> None:
    """No deprecated <font color> and one bold tag (<strong>) across all shipped HTML templates."""
    message = renderer().group(group_of(alert("a", labels={"severity": "critical"})), now=ALERT_START)
    assert message.html is not None and '<span data-mx-color="#d0021b">' in message.html
    shipped = Path(bot.render.templates.__file__).parent / "templates"
    for template in sorted(shipped.glob("*.html.j2")):
        text = template.read_text(encoding="utf-8")
        assert "<font" not in text and "<b>" not in text, template.name


def test_silence_link_escapes_label_values() -> None:
    """Quotes and backslashes in label values are escaped inside the prefilled matcher."""
    url = silence_url("http://am:9093/", {"job": 'a"b\\c'})
    assert url == "http://am:9093/#/silences/new?filter=" + "%7Bjob%3D%22a%5C%22b%5C%5Cc%22%7D"


def test_external_url_override_and_silence_link_switch() -> None:
    """alertmanager.external_url replaces the payload's for links; silence_link: false drops the link."""
    state = group_of(alert("a"))
    assert (
        "https://am.example.org/#/silences/new"
        in renderer(external_url="https://am.example.org").group(state).plain
    )
    assert "Silence:" not in renderer(silence_link=False).group(state).plain


def test_html_is_escaped_and_only_http_links_are_kept() -> None:
    """Alert text cannot inject markup, and javascript: links are dropped."""
    state = group_of(
        alert("a", annotations={"summary": "<script>alert(1)</script>", "runbook_url": "javascript:alert(1)"})
    )
    message = renderer().group(state)
    assert message.html is not None
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert "javascript:" not in message.html and "javascript:" not in message.plain


async def test_critical_group_mentions_the_room_once(tmp_path: Path) -> None:
    """A critical group's first post says @room with m.mentions; its edits do not mention again."""
    relay = await make_relay(tmp_path / "mention.sqlite3", settings_with())
    try:
        await relay.post(payload([alert("a", labels={"severity": "critical"})]))
        await relay.send_all()
        await relay.post(payload([alert("a", labels={"severity": "critical"}), alert("b")]))
        rows = await relay.rows()
        first, edit = json.loads(rows[0]["payload"]), json.loads(rows[1]["payload"])
        assert first["body"].startswith("@room ") and first["m.mentions"] == {"room": True}
        assert "@room" not in edit["body"] and edit["m.mentions"] == {}
    finally:
        await relay.db.close()


async def test_warning_group_does_not_mention_unless_configured(tmp_path: Path) -> None:
    """mention_room_severities decides: warning is quiet by default, loud when listed."""
    state = group_of(alert("a"))
    assert not renderer().should_mention(state)
    assert renderer(mention_room_severities=["warning"]).should_mention(state)


def test_long_groups_are_cut_with_and_n_more() -> None:
    """A group with more alerts than max_alerts_shown lists that many and says how many more."""
    state = group_of(*(alert(f"i{n:03}") for n in range(50)))
    message = renderer(max_alerts_shown=5).group(state)
    assert "… and 45 more" in message.plain
    assert message.html is not None and "… and 45 more" in message.html


def test_templates_can_be_overridden_from_configuration(tmp_path: Path) -> None:
    """A templates_dir with alert_group templates replaces the shipped look; others stay."""
    (tmp_path / "alert_group.txt.j2").write_text("CUSTOM {{ title }} {{ firing_count }}")
    (tmp_path / "alert_group.html.j2").write_text("<i>CUSTOM {{ title }}</i>")
    custom = renderer(templates_dir=str(tmp_path))
    message = custom.group(group_of(alert("a")))
    assert (message.plain, message.html) == ("CUSTOM DiskFull 1", "<i>CUSTOM DiskFull</i>")
    custom.self_check()


def event_size_worst_case(content: dict[str, Any]) -> int:
    """Bytes of the content sent as an edit in an encrypted room: JSON, base64 (4/3), plus the envelope."""
    _, event = build_event(OutboxKind.EDIT, content, "$" + "x" * 254)
    plaintext = len(json.dumps({"type": "m.room.message", "content": event, "room_id": "!" + "r" * 254}))
    return plaintext * 4 // 3 + 4 + 2_000


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=3_000)
_labels = st.dictionaries(st.from_regex(r"[a-z_]{1,40}", fullmatch=True), _text, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alerts=st.lists(st.tuples(_labels, _text, _text), min_size=1, max_size=60),
    group_labels=_labels,
    summary=_text,
    description=_text,
)
def test_rendered_events_never_exceed_the_matrix_limit(
    alerts: list[tuple[dict[str, str], str, str]],
    group_labels: dict[str, str],
    summary: str,
    description: str,
) -> None:
    """Any group (huge labels, any Unicode, many alerts) renders under 65,536 bytes as an encrypted edit."""
    states = [
        AlertState(
            f"fp{i}",
            "firing" if i % 3 else "resolved",
            labels,
            {"summary": s, "description": d},
            100.0,
            None,
            "http://prometheus.example/" + d[:50],
        )
        for i, (labels, s, d) in enumerate(alerts)
    ]
    note = Notification(
        group_key="k",
        receiver="r",
        status="firing",
        group_labels=group_labels,
        common_labels=group_labels,
        common_annotations={
            "summary": summary,
            "description": description,
            "runbook_url": "https://x/" + summary,
        },
        external_url="http://am.example/" + description[:100],
        alerts=states,
    )
    state, change = merge(None, note, 1.0)
    alerts_renderer = renderer(max_alerts_shown=500)
    for message in (
        alerts_renderer.group(state, mention=True),
        alerts_renderer.thread_line(state, change),
        alerts_renderer.digest([state] * 60),
    ):
        assert event_size_worst_case(message.content()) < MATRIX_EVENT_LIMIT


async def test_maintenance_on_a_locked_store_warns_without_a_stack_trace(
    r: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A locked store is an operational condition: maintenance logs one warning line and goes on."""
    monkeypatch.setattr(relay_module, "MAINTENANCE_INTERVAL_S", 0.01)
    stop = asyncio.Event()
    async with write_lock_held(r.db, tmp_path / "readybot.sqlite3"):
        task = asyncio.create_task(r.relay.run_maintenance(stop))
        async with asyncio.timeout(10):
            while "maintenance failed" not in caplog.text:
                await asyncio.sleep(0.01)
        stop.set()
        await task
    failures = [rec for rec in caplog.records if "maintenance failed" in rec.getMessage()]
    assert failures and all(rec.levelname == "WARNING" and rec.exc_info is None for rec in failures)
    assert "database is locked" in failures[0].getMessage()
