"""The readiness feature: built last when enabled, its service in the extensions, the scheduled digest."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.catalog import enabled_features
from bot.errors import ConfigError
from bot.extensions import Extensions
from bot.features import FeatureContext
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.permissions import Authorizer
from bot.readiness.feature import DIGEST_JOB_ID, readiness_feature
from bot.readiness.service import ReadinessService
from bot.render.templates import Templates
from bot.scheduling import CronScheduleTrigger
from bot.schema import MIGRATIONS
from bot.store.audit import AuditRepo
from bot.store.database import Database
from bot.store.kv import KeyValueRepo
from config.settings import Settings
from tests.stores import StoreBackend

ROOM = "!digest:example.org"


def settings(**readiness: Any) -> Settings:
    return Settings.model_validate(
        {
            "matrix": {
                "homeserver": "https://matrix.example.org",
                "user_id": "@bot:example.org",
                "password": "p",
            },
            "readiness": {"enabled": True, **readiness},
        }
    )


@pytest.fixture
async def db(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Database]:
    database = await store_backend.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS)
    yield database
    await database.close()


def context(db: Database, config: Settings) -> FeatureContext:
    return FeatureContext(
        settings=config,
        db=db,
        kv=KeyValueRepo(db),
        audit=AuditRepo(db),
        outbox=Outbox(db),
        metrics=Metrics(),
        templates=Templates(),
        scheduler=AsyncIOScheduler(timezone="UTC"),
        authorizer=Authorizer(),
        extensions=Extensions(),
        clock=time.time,
        bot_user_id="@bot:example.org",
    )


def test_readiness_is_built_last_and_only_when_enabled() -> None:
    """Enabled: the last feature (after Kubernetes and the dead-man's switch it looks up); else absent."""
    assert enabled_features(settings())[-1] is readiness_feature
    off = Settings.model_validate(
        {
            "matrix": {
                "homeserver": "https://matrix.example.org",
                "user_id": "@bot:example.org",
                "password": "p",
            }
        }
    )
    assert readiness_feature not in enabled_features(off)


async def test_the_feature_provides_the_service_and_schedules_the_weekly_digest(db: Database) -> None:
    """A ReadinessService in the extensions; the digest job fires Mondays 09:00 UTC by default."""
    ctx = context(db, settings(rooms=[ROOM]))
    await readiness_feature(ctx)
    service = ctx.extensions.get(ReadinessService)
    assert len(service.plan.criteria()) == 46
    job = ctx.scheduler.get_job(DIGEST_JOB_ID)
    assert job is not None and isinstance(job.trigger, CronScheduleTrigger)
    wednesday = datetime(2026, 3, 4, 12, tzinfo=UTC)
    assert job.trigger.get_next_fire_time(None, wednesday) == datetime(2026, 3, 9, 9, tzinfo=UTC)


async def test_without_rooms_no_digest_is_scheduled(db: Database) -> None:
    """No readiness.rooms: the commands work, no digest job exists."""
    ctx = context(db, settings())
    await readiness_feature(ctx)
    assert ctx.scheduler.get_job(DIGEST_JOB_ID) is None


async def test_the_digest_posts_the_scorecard_to_each_room_and_stores_a_run(db: Database) -> None:
    """Running the job queues the digest in every room and stores a digest run."""
    other = "!second:example.org"
    ctx = context(db, settings(rooms=[ROOM, other], digest_schedule="30 7 * * *"))
    await readiness_feature(ctx)
    job = ctx.scheduler.get_job(DIGEST_JOB_ID)
    assert job is not None
    await job.func()
    rows = await db.fetchall("SELECT room_id, payload FROM outbox ORDER BY id")
    assert [row["room_id"] for row in rows] == [ROOM, other]
    body = json.loads(rows[0]["payload"])["body"]
    assert body.startswith("Readiness digest (")
    assert "Production Readiness Plan: 0%" in body
    runs = await db.fetchall("SELECT trigger FROM readiness_runs")
    assert [row["trigger"] for row in runs] == ["digest"]


async def test_an_invalid_plan_stops_the_start_with_its_problems(db: Database, tmp_path: Path) -> None:
    """A plan file that does not validate raises ConfigError (the bot exits 78)."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("categories: []\nphases: []\n")
    with pytest.raises(ConfigError) as raised:
        await readiness_feature(context(db, settings(plan=str(plan))))
    assert raised.value.problems[0].startswith(f"readiness plan {plan}: categories: ")
