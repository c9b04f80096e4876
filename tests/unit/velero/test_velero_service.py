"""The Velero relay's service on the test Kubernetes API: what is recorded and queued, exactly once.

The watches are the real ones (``bot.velero.feature.watch_tasks``) against the
test API server with the upstream CRDs; the store is a real SQLite file; the
"room" is the outbox, read back row by row. No homeserver is needed here:
``tests/integration/test_velero.py`` does the same end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.catalog import enabled_features
from bot.errors import ConfigError
from bot.extensions import Extensions
from bot.features import FeatureContext
from bot.kube.client import KubeApi
from bot.kube.watch import WatchStatus
from bot.outbox import Outbox
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store.database import Database
from bot.velero import render
from bot.velero.feature import CHECK_JOB_ID, DIGEST_JOB_ID, velero_feature, watch_tasks
from bot.velero.service import BACKUPS, LOCATIONS, RESTORES, SCHEDULES, VeleroService
from config.settings import Settings
from config.velero import VeleroSettings
from tests.kube import velero_objects as v
from tests.kube.handle import KubeHandle
from tests.stores import StoreBackend, open_store

ROOM = "!velero:example.org"
RBAC_FILE = Path(__file__).resolve().parents[3] / "deploy" / "base" / "rbac-velero.yaml"
WAIT_S = 10.0


@dataclass
class Relay:
    """The service with its four watches running, until ``close``."""

    kube: KubeHandle
    db: Database
    service: VeleroService
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def status(self, plural: str) -> WatchStatus:
        status = self.service.statuses[plural]
        assert isinstance(status, WatchStatus)
        return status

    async def bodies(self) -> list[str]:
        rows = await self.db.fetchall("SELECT payload FROM outbox WHERE room_id = ? ORDER BY id", (ROOM,))
        return [json.loads(row["payload"])["body"] for row in rows]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 5)
        await self.db.close()


async def until(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` (sync or async) until it is true."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                result = condition()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
async def relays(
    kube_api: KubeHandle, tmp_path: Path, store_backend: StoreBackend
) -> AsyncIterator[Callable[..., Any]]:
    """``await start(**settings)``: a relay on one store file; start again after ``close`` to restart."""
    started: list[Relay] = []
    kube_api.require_server()

    async def start(**overrides: Any) -> Relay:
        db = await store_backend.open(tmp_path / "readybot.sqlite3", migrations=MIGRATIONS)
        values: dict[str, Any] = {
            "enabled": True,
            "namespace": kube_api.namespace,
            "rooms": [ROOM],
            "completed": "each",
            "missed_grace_s": 60,
        }
        settings = VeleroSettings(**(values | overrides))
        service = VeleroService(settings, db=db, outbox=Outbox(db), templates=Templates(), clock=time.time)
        relay = Relay(kube_api, db, service)
        relay.tasks = [asyncio.create_task(task(relay.stop)) for task in watch_tasks(kube_api.api, service)]
        started.append(relay)
        plurals = (BACKUPS, RESTORES, SCHEDULES, LOCATIONS)
        await until(lambda: all(relay.status(p).lists >= 1 for p in plurals), "the first listings")
        return relay

    yield start
    for relay in started:
        if not relay.stop.is_set():
            with contextlib.suppress(Exception):
                await relay.close()


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


async def bodies_with(relay: Relay, text: str, count: int = 1) -> list[str]:
    """Wait until ``count`` messages mention ``text``; return every message so far."""
    found: list[str] = []

    async def enough() -> bool:
        found[:] = await relay.bodies()
        return sum(text in body for body in found) >= count

    await until(enough, f"{count} message(s) mentioning {text!r}")
    return found


def mentioning(bodies: list[str], text: str) -> list[str]:
    return [body for body in bodies if text in body]


# --- outcomes ------------------------------------------------------------------------------


async def test_the_first_listing_adopts_what_is_there_without_a_word(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """Outcomes present at the very first start are recorded silently; later ones are reported."""
    kube_api.store.put(v.backup("old-failure", "Failed", started=ago(hours=2)), namespace=kube_api.namespace)
    relay = await relays()
    kube_api.store.put(
        v.backup("new-failure", "Failed", started=ago(seconds=5)), namespace=kube_api.namespace
    )
    bodies = await bodies_with(relay, "new-failure")
    assert mentioning(bodies, "old-failure") == []
    assert len(bodies) == 1


async def test_a_backup_moving_through_its_phases_is_reported_once_at_its_end(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """New → InProgress → PartiallyFailed gives one message with the counts; later changes repeat nothing."""
    relay = await relays()
    store, ns = kube_api.store, kube_api.namespace
    start = ago(minutes=4)
    store.put(v.backup("daily-1", "New", schedule="daily"), namespace=ns)
    store.put(v.backup("daily-1", "InProgress", schedule="daily", started=start, total=10), namespace=ns)
    done = v.backup(
        "daily-1",
        "PartiallyFailed",
        schedule="daily",
        started=start,
        completed=start + timedelta(minutes=3, seconds=12),
        errors=2,
        warnings=7,
        items=9,
        total=10,
    )
    store.put(done, namespace=ns)
    done["metadata"]["labels"]["extra"] = "touched"
    store.put(done, namespace=ns)
    bodies = await bodies_with(relay, "daily-1")
    (message,) = mentioning(bodies, "daily-1")
    assert message.startswith("⚠️ Velero backup daily-1 partially failed (schedule daily)")
    assert "ran 3m12s, 9 of 10 items; 2 errors, 7 warnings." in message
    assert f"`velero backup logs daily-1 -n {ns}`" in message
    # A relist after compaction (410) sees it again and says nothing.
    lists = relay.status(BACKUPS).lists
    kube_api.require_server().compact()
    kube_api.require_server().expire_watches()
    await until(lambda: relay.status(BACKUPS).lists > lists, "the relist after 410")
    kube_api.store.put(v.backup("marker", "Failed", started=ago(seconds=1)), namespace=ns)
    bodies = await bodies_with(relay, "marker")
    assert len(mentioning(bodies, "daily-1")) == 1 and len(bodies) == 2


async def test_failed_validation_lists_the_errors_and_has_no_logs_hint(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """A FailedValidation message quotes the validation errors and points at describe, not logs."""
    relay = await relays()
    errors = ["an existing backup storage location wasn't specified", "invalid included namespace"]
    kube_api.store.put(
        v.backup("bad", "FailedValidation", validation_errors=errors, created=ago(seconds=2)),
        namespace=kube_api.namespace,
    )
    (message,) = mentioning(await bodies_with(relay, "bad"), "bad")
    assert "failed validation (no schedule)" in message
    assert all(f"• {error}" in message for error in errors)
    assert "describe bad --details" in message and "logs bad" not in message


async def test_restores_are_reported_with_their_backup(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """A failed restore names its backup and points at `velero restore logs`."""
    relay = await relays()
    kube_api.store.put(
        v.restore("r1", "Failed", backup_name="daily-1", schedule="daily", started=ago(seconds=30), errors=1),
        namespace=kube_api.namespace,
    )
    (message,) = mentioning(await bodies_with(relay, "r1"), "r1")
    assert message.startswith("❌ Velero restore r1 failed (schedule daily)")
    assert "From backup daily-1" in message and "`velero restore logs r1 -n " in message


async def test_outcomes_while_away_are_reported_once_and_a_burst_is_one_summary(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """Restarted: 7 failures from the downtime → one summary; too old → nothing; once more → nothing."""
    relay = await relays(summary_threshold=5)
    await relay.close()
    for index in range(7):
        kube_api.store.put(
            v.backup(f"away-{index}", "Failed", started=ago(minutes=10 + index)), namespace=kube_api.namespace
        )
    kube_api.store.put(v.backup("ancient", "Failed", started=ago(days=9)), namespace=kube_api.namespace)
    relay = await relays(summary_threshold=5)
    bodies = await bodies_with(relay, "away-0")
    (summary,) = bodies
    assert summary.startswith("Velero: 7 outcomes to report")
    assert all(f"backup away-{index} failed" in summary for index in range(7))
    assert "ancient" not in summary
    await relay.close()
    relay = await relays(summary_threshold=5)
    kube_api.store.put(
        v.backup("later-failure", "Failed", started=ago(seconds=1)), namespace=kube_api.namespace
    )
    bodies = await bodies_with(relay, "later-failure")
    assert len(bodies) == 2


async def test_completed_runs_wait_for_the_digest_in_digest_mode(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """completed: digest → no message per backup; one digest lists them; the next digest is empty."""
    relay = await relays(completed="digest")
    for index in range(3):
        kube_api.store.put(
            v.backup(
                f"d-{index}", "Completed", schedule="daily", started=ago(minutes=5), completed=ago(minutes=4)
            ),
            namespace=kube_api.namespace,
        )
    await sentinel_failure(relay, "marker")
    assert await relay.service.post_digest() == 3
    bodies = await relay.bodies()
    assert len(bodies) == 2 and "d-" not in bodies[0]
    assert bodies[1].startswith("✅ Velero digest: 3 backups completed since the last digest.")
    assert "schedule daily: 3 backups, last d-" in bodies[1]
    assert await relay.service.post_digest() == 0


async def sentinel_failure(relay: Relay, name: str) -> list[str]:
    relay.kube.store.put(v.backup(name, "Failed", started=ago(seconds=1)), namespace=relay.kube.namespace)
    return await bodies_with(relay, name)


# --- missed schedules -------------------------------------------------------------------------


async def test_an_overdue_schedule_alerts_once_and_a_completed_backup_clears_it(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """Last backup 30 min ago on */5 → one alert (also after a restart); a new completed backup clears it."""
    store, ns = kube_api.store, kube_api.namespace
    store.put(v.schedule("often", "*/5 * * * *", created=ago(days=1)), namespace=ns)
    store.put(
        v.backup(
            "often-old", "Completed", schedule="often", started=ago(minutes=30), completed=ago(minutes=29)
        ),
        namespace=ns,
    )
    relay = await relays()
    now = time.time()
    assert await relay.service.check_missed(now) == 1
    assert await relay.service.check_missed(now + 60) == 0
    (alert,) = await relay.bodies()
    assert alert.startswith("⏰ Velero schedule often missed a run")
    assert "Its last backup started 30m" in alert
    await relay.close()

    relay = await relays()
    assert await relay.service.check_missed(time.time()) == 0
    store.put(
        v.backup(
            "often-new", "Completed", schedule="often", started=ago(seconds=20), completed=ago(seconds=5)
        ),
        namespace=ns,
    )
    bodies = await bodies_with(relay, "runs again")
    # completed: each also announces the backup itself, just before the alert clears.
    assert len(bodies) == 3 and bodies[1].startswith("✅ Velero backup often-new completed (schedule often)")
    assert bodies[2].startswith("✅ Velero schedule often runs again: backup often-new Completed.")
    reply = await relay.db.fetchone("SELECT kind, target_outbox_id FROM outbox ORDER BY id DESC LIMIT 1")
    assert reply is not None and reply["kind"] == "reply" and reply["target_outbox_id"] == 1
    assert await relay.service.check_missed(time.time()) == 0


async def test_a_schedule_that_never_ran_alerts_and_paused_ones_do_not(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """A schedule created an hour ago without any backup is missed ('never'); a paused one is not."""
    store, ns = kube_api.store, kube_api.namespace
    store.put(v.schedule("never", "*/10 * * * *", created=ago(hours=1)), namespace=ns)
    store.put(v.schedule("resting", "*/10 * * * *", created=ago(hours=1), paused=True), namespace=ns)
    relay = await relays()
    assert await relay.service.check_missed(time.time()) == 1
    (alert,) = await relay.bodies()
    assert "schedule never missed a run" in alert and "It has never produced a backup" in alert


async def test_missed_checks_wait_while_the_cluster_is_unreachable(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """With the API down the view may be stale: no alert, and !backups says 'cluster unreachable'."""
    kube_api.store.put(
        v.schedule("never", "*/10 * * * *", created=ago(hours=1)), namespace=kube_api.namespace
    )
    relay = await relays()
    with kube_api.require_server().unreachable():
        await until(lambda: relay.service.problem() is not None, "the watches to notice the outage")
        assert await relay.service.check_missed(time.time()) == 0
        overview = await relay.service.overview()
        shown = Templates().render("velero_overview", **render.overview_context(overview, datetime.now(UTC)))
        assert shown.plain.startswith("⚠️ cluster unreachable: ")
        assert "never (`*/10 * * * *`)" in shown.plain
    await until(lambda: relay.service.problem() is None, "the watches to recover")
    assert await relay.service.check_missed(time.time()) == 1


async def test_a_deleted_schedule_takes_its_alert_along(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """Deleting a schedule with an open alert drops the alert, so a new schedule of that name starts clean."""
    kube_api.store.put(v.schedule("gone", "*/10 * * * *", created=ago(hours=1)), namespace=kube_api.namespace)
    relay = await relays()
    assert await relay.service.check_missed(time.time()) == 1
    await kube_api.api.delete_resource("velero.io", "v1", "schedules", "gone", namespace=kube_api.namespace)

    async def no_alert() -> bool:
        return not await relay.service.open_alerts()

    await until(no_alert, "the alert to be dropped")


# --- storage locations and !backups ----------------------------------------------------------------


async def test_a_storage_location_going_unavailable_and_back_is_said_once_each(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """Available (silent) → Unavailable (one alarm, also after a restart) → Available (one recovery reply)."""
    store, ns = kube_api.store, kube_api.namespace
    store.put(v.location("default", "Available"), namespace=ns)
    relay = await relays()
    store.put(v.location("default", "Unavailable", message="bucket not found"), namespace=ns)
    bodies = await bodies_with(relay, "is Unavailable")
    assert bodies == [
        "🔴 Velero backup storage location default (the default) is Unavailable: bucket not found\n"
        "Backups to it fail until it is back.\n"
        f"Where to look: `velero backup-location get -n {ns}`, `kubectl -n {ns} logs deploy/velero`"
    ]
    await relay.service.check()
    await relay.close()
    relay = await relays()
    await relay.service.check()
    store.put(v.location("default", "Available"), namespace=ns)
    bodies = await bodies_with(relay, "Available again")
    assert len(bodies) == 2 and bodies[1].startswith(
        "🟢 Velero backup storage location default is Available again"
    )


async def test_the_overview_and_history_show_schedules_last_backups_and_next_runs(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """!backups lists schedules with last backup, phase, age and next run; history lists the backups."""
    store, ns = kube_api.store, kube_api.namespace
    # A daily schedule whose last three runs backed up, the last two hours ago, whatever the hour.
    due = ago(hours=2).replace(second=0, microsecond=0)
    cron = f"{due.minute} {due.hour} * * *"
    store.put(v.schedule("daily", cron, created=ago(days=3)), namespace=ns)
    store.put(v.schedule("weekly", "@weekly", created=ago(days=3), paused=True), namespace=ns)
    for index, days in enumerate((2, 1, 0)):
        started = due - timedelta(days=days)
        store.put(
            v.backup(
                f"daily-{index}",
                "Completed" if index != 1 else "PartiallyFailed",
                schedule="daily",
                started=started,
                completed=started + timedelta(minutes=3),
                errors=1 if index == 1 else 0,
                items=100,
                total=100,
            ),
            namespace=ns,
        )
    store.put(v.location("default", "Available"), namespace=ns)
    relay = await relays()
    now = datetime.now(UTC)
    templates = Templates()
    overview = templates.render(
        "velero_overview", **render.overview_context(await relay.service.overview(), now)
    )
    lines = overview.plain.splitlines()
    assert lines[0] == f"Velero schedules in namespace {ns}:"
    assert lines[1].startswith(f"• daily (`{cron}`): last backup daily-2 Completed 2h")
    assert f"next run {due + timedelta(days=1):%Y-%m-%d %H:%M} UTC (in " in lines[1]
    assert lines[2] == "• weekly (`@weekly`): last backup none yet; ⏸ paused"
    assert lines[3] == "Storage locations: default: Available"
    history = await relay.service.history("daily")
    assert history is not None
    shown = templates.render("velero_history", **render.history_context(history, now)).plain.splitlines()
    assert shown[1] == "Last 3 of 3 backups, newest first:"
    assert shown[2].startswith("• daily-2 — Completed, started 2h")
    assert shown[2].endswith(" ago, took 3m, 100 items")
    assert shown[3].endswith("; 1 error")
    assert await relay.service.history("nope") is None


async def test_the_relay_needs_no_more_than_deploy_rbac_velero_grants(
    relays: Callable[..., Any], kube_api: KubeHandle
) -> None:
    """Every request of the relay (lists, watches, relists) is granted by deploy/base/rbac-velero.yaml."""
    role, binding = yaml.safe_load_all(RBAC_FILE.read_text(encoding="utf-8"))
    assert (role["kind"], binding["roleRef"]["name"]) == ("Role", role["metadata"]["name"])
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["velero.io"] and sorted(rule["verbs"]) == ["list", "watch"]
    granted = {(verb, "velero.io", resource) for verb in rule["verbs"] for resource in rule["resources"]}
    relay = await relays()
    kube_api.require_server().compact()
    kube_api.require_server().expire_watches()
    await until(lambda: relay.status(SCHEDULES).lists >= 2, "a relist")
    made = {(r.verb, r.group, r.resource) for r in kube_api.requests if r.group == "velero.io"}
    assert made and made <= granted
    assert {r.namespace for r in kube_api.requests if r.group == "velero.io"} == {kube_api.namespace}
    assert {resource for _, _, resource in made} == set(rule["resources"])


# --- the feature ----------------------------------------------------------------------------------


def feature_context(settings: Settings, extensions: Extensions, db: Database) -> FeatureContext:
    """A FeatureContext with what velero_feature uses; the rest is never touched by it."""
    unused: Any = None
    return FeatureContext(
        settings=settings,
        db=db,
        kv=unused,
        audit=unused,
        outbox=Outbox(db),
        metrics=unused,
        templates=Templates(),
        scheduler=AsyncIOScheduler(timezone="UTC"),
        authorizer=unused,
        extensions=extensions,
        clock=time.time,
        bot_user_id="@bot:example.org",
    )


def velero_settings(*, kubernetes: bool, completed: str = "digest") -> Settings:
    return Settings.model_validate(
        {
            "matrix": {"homeserver": "https://m.example.org", "user_id": "@bot:example.org", "password": "x"},
            "kubernetes": {"enabled": kubernetes},
            "velero": {"enabled": True, "rooms": [ROOM], "completed": completed},
        }
    )


async def test_the_feature_needs_kubernetes_and_adds_watches_and_jobs(
    kube_api: KubeHandle, tmp_path: Path
) -> None:
    """Without kubernetes.enabled it refuses to start; with it: 4 watches, the check (and digest) job."""
    db = await open_store(tmp_path / "readybot.sqlite3", migrations=MIGRATIONS)
    try:
        with pytest.raises(ConfigError) as refused:
            await velero_feature(feature_context(velero_settings(kubernetes=False), Extensions(), db))
        assert refused.value.problems == ["velero.enabled: needs kubernetes.enabled"]

        settings = velero_settings(kubernetes=True)
        names = [factory.__name__ for factory in enabled_features(settings)]
        assert names.index("kubernetes_feature") < names.index("velero_feature")
        extensions = extensions_with(kube_api)
        ctx = feature_context(settings, extensions, db)
        parts = await velero_feature(ctx)
        assert len(parts.root_tasks) == 4
        assert {job.id for job in ctx.scheduler.get_jobs()} == {CHECK_JOB_ID, DIGEST_JOB_ID}
        assert extensions.get(VeleroService).namespace == "velero"
        each = feature_context(
            velero_settings(kubernetes=True, completed="each"), extensions_with(kube_api), db
        )
        await velero_feature(each)
        assert {job.id for job in each.scheduler.get_jobs()} == {CHECK_JOB_ID}
    finally:
        await db.close()


def extensions_with(kube_api: KubeHandle) -> Extensions:
    extensions = Extensions()
    extensions.put(KubeApi, kube_api.api)
    return extensions
