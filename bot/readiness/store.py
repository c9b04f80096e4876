"""Stored readiness runs: each run's tallies and every criterion's mark and evidence.

A run is written in one transaction with its results, so a change or a
trend never sees half a run. Old runs are pruned to a count, results with
them (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.readiness.engine import CriterionResult, Scorecard, Tally
from bot.readiness.results import Mark
from bot.store.tx import Row, Tx

if TYPE_CHECKING:
    # Only for annotations: bot.store.database imports the migrations, which import this module.
    from bot.store.database import Database

# What started a run; the digest compares with the previous digest.
TRIGGERS = ("command", "digest", "trend")


async def migrate_readiness(conn: Tx) -> None:
    """Schema of the readiness scorecard (appended to ``bot.schema.MIGRATIONS``)."""
    await conn.execute(
        """
        CREATE TABLE readiness_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            trigger TEXT NOT NULL CHECK (trigger IN ('command', 'digest', 'trend')),
            passed INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            unknown INTEGER NOT NULL,
            manual INTEGER NOT NULL,
            -- JSON {category id: [passed, failed, unknown, manual]}, for the trend chart.
            categories TEXT NOT NULL,
            -- JSON list of the run's notices ("cluster unreachable: …").
            notices TEXT NOT NULL
        )
        """
    )
    await conn.execute("CREATE INDEX readiness_runs_trigger ON readiness_runs (trigger, id)")
    await conn.execute(
        """
        CREATE TABLE readiness_results (
            run_id INTEGER NOT NULL REFERENCES readiness_runs (id) ON DELETE CASCADE,
            criterion_id TEXT NOT NULL,
            mark TEXT NOT NULL CHECK (mark IN ('pass', 'fail', 'unknown', 'manual')),
            found TEXT NOT NULL,
            expected TEXT NOT NULL,
            PRIMARY KEY (run_id, criterion_id)
        )
        """
    )


@dataclass(frozen=True, slots=True)
class StoredRun:
    id: int
    at: float
    trigger: str
    overall: Tally
    categories: Mapping[str, Tally]
    notices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredResult:
    at: float
    result: CriterionResult


def _tally(values: list[int]) -> Tally:
    passed, failed, unknown, manual = (int(value) for value in values)
    return Tally(passed, failed, unknown, manual)


def _run(row: Row) -> StoredRun:
    return StoredRun(
        id=int(row["id"]),
        at=float(row["at"]),
        trigger=str(row["trigger"]),
        overall=Tally(row["passed"], row["failed"], row["unknown"], row["manual"]),
        categories={str(key): _tally(value) for key, value in json.loads(row["categories"]).items()},
        notices=tuple(json.loads(row["notices"])),
    )


_RUN_COLUMNS = "id, at, trigger, passed, failed, unknown, manual, categories, notices"


class ReadinessRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, scorecard: Scorecard, *, trigger: str, keep: int) -> int:
        """Store a run and its results; keep only the newest ``keep`` runs. Returns the run's id."""
        overall = scorecard.overall
        categories = {
            key: [tally.passed, tally.failed, tally.unknown, tally.manual]
            for key, tally in scorecard.categories.items()
        }
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO readiness_runs"
                " (at, trigger, passed, failed, unknown, manual, categories, notices)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    scorecard.at,
                    trigger,
                    overall.passed,
                    overall.failed,
                    overall.unknown,
                    overall.manual,
                    json.dumps(categories),
                    json.dumps(list(scorecard.notices), ensure_ascii=False),
                ),
            )
            inserted = await cursor.fetchone()
            run_id = None if inserted is None else int(inserted["id"])
            assert run_id is not None  # an INSERT always sets it
            await conn.executemany(
                "INSERT INTO readiness_results (run_id, criterion_id, mark, found, expected)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, result.criterion_id, result.mark.value, result.found, result.expected)
                    for result in scorecard.results.values()
                ],
            )
            await conn.execute(
                "DELETE FROM readiness_runs"
                " WHERE id NOT IN (SELECT id FROM readiness_runs ORDER BY id DESC LIMIT ?)",
                (keep,),
            )
        return int(run_id)

    async def latest(self, *, before: int | None = None, trigger: str | None = None) -> StoredRun | None:
        """The newest run (older than run ``before``; of one ``trigger``), or None."""
        row = await self._db.fetchone(
            f"SELECT {_RUN_COLUMNS} FROM readiness_runs"  # noqa: S608 (constant columns)
            " WHERE (? IS NULL OR id < ?) AND (? IS NULL OR trigger = ?) ORDER BY id DESC LIMIT 1",
            (before, before, trigger, trigger),
        )
        return None if row is None else _run(row)

    async def marks(self, run_id: int) -> dict[str, Mark]:
        rows = await self._db.fetchall(
            "SELECT criterion_id, mark FROM readiness_results WHERE run_id = ?", (run_id,)
        )
        return {str(row["criterion_id"]): Mark(row["mark"]) for row in rows}

    async def recent(self, limit: int) -> list[StoredRun]:
        """The newest ``limit`` runs, oldest first (for the trend)."""
        rows = await self._db.fetchall(
            f"SELECT {_RUN_COLUMNS} FROM readiness_runs ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [_run(row) for row in reversed(rows)]

    async def last_result(self, criterion_id: str) -> StoredResult | None:
        """The criterion's result in the newest run that has it."""
        row = await self._db.fetchone(
            "SELECT r.at, x.criterion_id, x.mark, x.found, x.expected FROM readiness_results x"
            " JOIN readiness_runs r ON r.id = x.run_id WHERE x.criterion_id = ? ORDER BY r.id DESC LIMIT 1",
            (criterion_id,),
        )
        if row is None:
            return None
        result = CriterionResult(
            str(row["criterion_id"]), Mark(row["mark"]), str(row["found"]), str(row["expected"])
        )
        return StoredResult(float(row["at"]), result)
