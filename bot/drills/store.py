"""The restore drills table: what a drill restores where, how it ended, when its scratch namespaces go.

A drill is an approval request of kind ``restore-drill`` (the ``approvals``
table holds its state, votes, prompt and audit trail, exactly as for a sync);
this table holds what only a drill has. Only SQL lives here; the rules are in
``bot.drills.service``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.store.tx import Row, Tx

if TYPE_CHECKING:
    from bot.store.database import Database

VERDICTS = ("passed", "partial", "failed", "error")


async def migrate_restore_drills(conn: Tx) -> None:
    """Give approval requests a kind (existing rows are syncs) and add the drills' own table."""
    await conn.execute("ALTER TABLE approvals ADD COLUMN kind TEXT NOT NULL DEFAULT 'sync'")
    await conn.execute(
        """
        CREATE TABLE restore_drills (
            id TEXT PRIMARY KEY REFERENCES approvals (id),
            backup TEXT NOT NULL,
            schedule TEXT,
            -- Velero's namespace, where the Restore object lives.
            velero_namespace TEXT NOT NULL,
            restore_name TEXT NOT NULL UNIQUE,
            -- JSON object: backed-up namespace -> scratch namespace.
            namespace_mapping TEXT NOT NULL,
            scheduled INTEGER NOT NULL,
            verdict TEXT CHECK (verdict IN ('passed', 'partial', 'failed', 'error')),
            -- The report's first line ("412/412 items, 6/6 pods ready in 48s, 3 PVCs bound").
            summary TEXT,
            ended_at REAL,
            cleanup_due_at REAL,
            cleaned_at REAL
        )
        """
    )
    await conn.execute("CREATE INDEX restore_drills_verdict ON restore_drills (verdict, ended_at)")
    await conn.execute(
        "CREATE INDEX restore_drills_cleanup ON restore_drills (cleanup_due_at) WHERE cleaned_at IS NULL"
    )


@dataclass(frozen=True, slots=True)
class DrillRow:
    id: str
    backup: str
    schedule: str | None
    velero_namespace: str
    restore_name: str
    namespace_mapping: dict[str, str]
    scheduled: bool
    verdict: str | None = None
    summary: str | None = None
    ended_at: float | None = None
    cleanup_due_at: float | None = None
    cleaned_at: float | None = None

    @property
    def scratch_namespaces(self) -> list[str]:
        return sorted(self.namespace_mapping.values())


_COLUMNS = (
    "id, backup, schedule, velero_namespace, restore_name, namespace_mapping, scheduled, verdict,"
    " summary, ended_at, cleanup_due_at, cleaned_at"
)


def _row(row: Row) -> DrillRow:
    values = dict(row)
    values["namespace_mapping"] = json.loads(row["namespace_mapping"])
    values["scheduled"] = bool(row["scheduled"])
    return DrillRow(**values)


class DrillRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, conn: Tx, drill: DrillRow) -> None:
        """Inside the transaction that inserts the drill's approval request."""
        await conn.execute(
            "INSERT INTO restore_drills (id, backup, schedule, velero_namespace, restore_name,"
            " namespace_mapping, scheduled) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                drill.id,
                drill.backup,
                drill.schedule,
                drill.velero_namespace,
                drill.restore_name,
                json.dumps(drill.namespace_mapping, sort_keys=True),
                int(drill.scheduled),
            ),
        )

    async def get(self, drill_id: str) -> DrillRow | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM restore_drills WHERE id = ?", (drill_id,))  # noqa: S608 (constant column list)
        return None if row is None else _row(row)

    async def finish(
        self,
        conn: Tx,
        drill_id: str,
        *,
        verdict: str,
        summary: str,
        ended_at: float,
        cleanup_due_at: float | None,
    ) -> None:
        """Record how the drill ended (in the transaction of its last state change)."""
        assert verdict in VERDICTS
        await conn.execute(
            "UPDATE restore_drills SET verdict = ?, summary = ?, ended_at = ?, cleanup_due_at = ?"
            " WHERE id = ? AND verdict IS NULL",
            (verdict, summary, ended_at, cleanup_due_at, drill_id),
        )

    async def due_for_cleanup(self, now: float) -> list[DrillRow]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM restore_drills"  # noqa: S608
            " WHERE cleaned_at IS NULL AND cleanup_due_at IS NOT NULL AND cleanup_due_at <= ?"
            " ORDER BY cleanup_due_at",
            (now,),
        )
        return [_row(row) for row in rows]

    async def mark_cleaned(self, drill_id: str, at: float) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE restore_drills SET cleaned_at = ? WHERE id = ? AND cleaned_at IS NULL", (at, drill_id)
            )
            return cursor.rowcount == 1

    async def last_passed(self) -> DrillRow | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM restore_drills WHERE verdict = 'passed'"  # noqa: S608
            " ORDER BY ended_at DESC LIMIT 1"
        )
        return None if row is None else _row(row)
