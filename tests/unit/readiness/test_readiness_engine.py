"""Scoring, coverage, group marks, the change since the previous run, and the stored runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.readiness.engine import CriterionResult, Tally, compare, notices, score
from bot.readiness.probes import ProbeEnv
from bot.readiness.results import Cause, Mark, ProbeResult, all_of, any_of
from bot.readiness.service import ReadinessService
from bot.readiness.store import ReadinessRepo
from bot.schema import MIGRATIONS
from bot.store.database import Database
from config.readiness import ReadinessSettings
from tests.stores import StoreBackend
from tests.unit.readiness_env import shipped_plan


def results(marks: dict[str, Mark], default: Mark = Mark.MANUAL) -> list[CriterionResult]:
    """Every criterion of the shipped plan with the given marks (others: default)."""
    return [
        CriterionResult(c.id, marks.get(c.id, default), f"found {c.id}", f"expected {c.id}")
        for _, _, c in shipped_plan().criteria()
    ]


def test_unknown_is_never_a_pass_and_lowers_the_score_not_the_coverage_of_checked_ones() -> None:
    """2 pass, 1 fail, 1 unknown: score 2/4, coverage 3/4; manual criteria change neither."""
    card = score(
        shipped_plan(),
        results({"1.1.1": Mark.PASS, "1.1.3": Mark.PASS, "1.2.1": Mark.FAIL, "1.2.3": Mark.UNKNOWN}),
        at=0,
    )
    assert card.overall == Tally(passed=2, failed=1, unknown=1, manual=42)
    assert card.overall.score == 0.5
    assert card.overall.coverage == 0.75


def test_all_unknown_scores_zero_with_zero_coverage() -> None:
    """A cluster nobody can reach scores 0 %, never 100 %."""
    card = score(shipped_plan(), results({}, default=Mark.UNKNOWN), at=0)
    assert card.overall.score == 0.0 and card.overall.coverage == 0.0


def test_groups_are_tallied_by_category_phase_and_step_with_a_mark_each() -> None:
    """A fail marks its category, phase and step; unknown alone ❔; all pass ✅; manual only 📝; empty —."""
    card = score(
        shipped_plan(),
        results({"1.1.1": Mark.PASS, "1.1.3": Mark.PASS, "1.3.1": Mark.FAIL, "2.1.1": Mark.UNKNOWN}),
        at=0,
    )
    assert card.steps["1.1"] == Tally(passed=2, manual=1) and card.steps["1.1"].mark == "pass"
    assert card.steps["1.3"].mark == "fail" and card.phases["1"].mark == "fail"
    assert card.categories["security"].mark == "fail"
    assert card.steps["2.1"].mark == "unknown"
    assert card.steps["5.1"].mark == "manual"
    assert card.steps["5.3"].mark == "none"  # deferred, no criteria
    assert card.categories["culture"] == Tally() and card.categories["culture"].score is None
    # Criteria may override their step's category: 2.1.5, 2.2.3, 4.4.1 and 5.2.2 are team readiness.
    assert card.categories["team"].manual == 4


def test_unknown_criteria_are_counted_per_cause_with_cluster_unreachable_first() -> None:
    """Causes shared by unknown criteria are summed; "cluster unreachable" comes first even if rarer."""
    prometheus = Cause("Prometheus is not configured", general=True)
    unreachable = Cause("cluster unreachable: connection refused", general=True)
    found = [
        CriterionResult("a", Mark.UNKNOWN, "Prometheus is not configured", "", (prometheus,)),
        CriterionResult("b", Mark.UNKNOWN, "0 found; Prometheus is not configured", "", (prometheus,)),
        CriterionResult("c", Mark.UNKNOWN, "…", "", (prometheus, unreachable)),
        CriterionResult("d", Mark.FAIL, "cluster unreachable: ignored for fails", "", (unreachable,)),
        CriterionResult("e", Mark.UNKNOWN, "a reason only once", "", (Cause("a reason only once"),)),
        CriterionResult("f", Mark.UNKNOWN, "a shared reason", "", (Cause("a shared reason"),)),
        CriterionResult("g", Mark.UNKNOWN, "a shared reason", ""),
    ]
    assert notices(found) == (
        "cluster unreachable: connection refused (1 criterion unknown)",
        "Prometheus is not configured (3 criteria unknown)",
        "a shared reason (2 criteria unknown)",
    )


def test_missing_types_of_one_product_are_one_line_naming_each_type() -> None:
    """Two Velero CRDs missing in three criteria: one line naming both; a lone RBAC refusal is shown."""
    schedules = Cause("Velero is not installed", missing="schedules.velero.io", general=True)
    restores = Cause("Velero is not installed", missing="restores.velero.io", general=True)
    forbidden = Cause("forbidden: the bot may not list cronjobs.batch", general=True)
    found = [
        CriterionResult("a", Mark.UNKNOWN, "…", "", (schedules,)),
        CriterionResult("b", Mark.UNKNOWN, "…", "", (schedules, restores)),
        CriterionResult("c", Mark.UNKNOWN, "0 found; …", "", (restores,)),
        CriterionResult("d", Mark.UNKNOWN, "…", "", (forbidden,)),
    ]
    assert notices(found) == (
        "Velero is not installed: schedules.velero.io, restores.velero.io are not served"
        " (3 criteria unknown)",
        "forbidden: the bot may not list cronjobs.batch (1 criterion unknown)",
    )


def test_the_change_lists_criteria_whose_mark_moved_and_ignores_new_ones() -> None:
    """Previous marks vs now: a new pass, a new fail and a new unknown; criteria new to the plan left out."""
    before = {"1.1.1": Mark.FAIL, "1.2.1": Mark.PASS, "1.3.1": Mark.PASS, "1.1.3": Mark.PASS}
    card = score(
        shipped_plan(),
        results({"1.1.1": Mark.PASS, "1.2.1": Mark.FAIL, "1.3.1": Mark.UNKNOWN, "1.1.3": Mark.PASS}),
        at=10,
    )
    change = compare(card, before, since=5, previous=Tally(passed=3, failed=1))
    assert change.to(Mark.PASS) == ["1.1.1"]
    assert change.to(Mark.FAIL) == ["1.2.1"]
    assert change.to(Mark.UNKNOWN) == ["1.3.1"]
    assert change.passed_delta(card.overall) == -1
    assert compare(card, None, None, None).first_run


def test_kleene_combinations_of_probe_results() -> None:
    """all: a fail decides, else unknown; any: a pass decides, else unknown, else fail."""
    ok, bad, unk = (
        ProbeResult(Mark.PASS, "ok", "e1"),
        ProbeResult(Mark.FAIL, "bad", "e2"),
        ProbeResult(Mark.UNKNOWN, "unk", "e3"),
    )
    assert all_of([ok, unk, bad]).mark is Mark.FAIL and all_of([ok, unk, bad]).found == "bad"
    assert all_of([ok, unk]).mark is Mark.UNKNOWN
    assert all_of([ok, ok]).found == "ok"
    assert any_of([bad, unk, ok]).found == "ok"
    assert any_of([bad, unk]).mark is Mark.UNKNOWN
    assert any_of([bad, bad]).mark is Mark.FAIL


# --- the store and the service ----------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Database]:
    database = await store_backend.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS)
    yield database
    await database.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_770_000_000.0

    def __call__(self) -> float:
        return self.now


def service(db: Database, clock: Clock, env: Callable[[], ProbeEnv], keep: int = 500) -> ReadinessService:
    return ReadinessService(
        shipped_plan(),
        ReadinessSettings(history_runs=keep),
        env_factory=env,
        clock=clock,
        repo=ReadinessRepo(db),
    )


async def test_runs_are_stored_and_the_next_run_reports_what_changed(db: Database) -> None:
    """A second run compares with the first: the gate criterion that now passes is listed."""
    clock = Clock()
    gates: frozenset[str] = frozenset()
    svc = service(db, clock, lambda: ProbeEnv(gated_apps=gates, clock=clock))
    first = await svc.run()
    assert first.change.first_run and first.run_id is not None
    clock.now += 3600
    gates = frozenset({"cilium", "cert-manager", "metallb"})
    second = await svc.run()
    assert second.change.since == clock.now - 3600
    # 5.2.1 is all(field: unknown without a cluster, gates): fail before, unknown now.
    assert second.change.to(Mark.UNKNOWN) == ["5.2.1"]
    history = await svc.history()
    assert [run.at for run in history] == [clock.now - 3600, clock.now]
    last = await svc.last_result("5.2.1")
    assert last is not None and last.result.mark is Mark.UNKNOWN and last.at == clock.now


async def test_the_digest_compares_with_the_previous_digest_not_the_last_command(db: Database) -> None:
    """digest → command → digest: the second digest's change is since the first digest."""
    clock = Clock()
    svc = service(db, clock, lambda: ProbeEnv(clock=clock))
    await svc.run("digest")
    first_digest = clock.now
    clock.now += 100
    await svc.run("command")
    clock.now += 100
    report = await svc.run("digest")
    assert report.change.since == first_digest


async def test_old_runs_are_pruned_to_history_runs_with_their_results(db: Database) -> None:
    """With history_runs 3, five runs leave the newest three and no orphaned results."""
    clock = Clock()
    svc = service(db, clock, lambda: ProbeEnv(clock=clock), keep=3)
    for _ in range(5):
        await svc.run()
        clock.now += 1
    assert len(await svc.history()) == 3
    row = await db.fetchone("SELECT COUNT(DISTINCT run_id) AS runs FROM readiness_results")
    assert row is not None and row["runs"] == 3


async def test_concurrent_requests_share_one_run(db: Database) -> None:
    """Two `!readiness status` at once probe once and get the same report."""
    clock = Clock()
    made: list[int] = []

    def env() -> ProbeEnv:
        made.append(1)
        return ProbeEnv(clock=clock)

    svc = service(db, clock, env)
    first, second = await asyncio.gather(svc.run(), svc.run())
    assert first is second and len(made) == 1
    assert len(await svc.history()) == 1


async def test_a_run_without_a_store_reports_no_change_and_stores_nothing() -> None:
    """The CLI's service (no repository) scores and returns; history stays empty."""
    svc = ReadinessService(
        shipped_plan(), ReadinessSettings(), env_factory=lambda: ProbeEnv(clock=time.time), clock=time.time
    )
    report = await svc.run()
    assert report.run_id is None and report.change.first_run
    assert await svc.history() == []
