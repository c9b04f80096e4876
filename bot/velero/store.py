"""What the Velero relay has reported, so nothing is posted twice, even across restarts.

Only SQL lives here; the rules are in ``bot.velero``. Every change that goes
with a message is a compare-and-set (INSERT OR IGNORE, DELETE … RETURNING)
made in the caller's transaction, the one that also queues the message in
the outbox: the message exists if and only if the row does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.store.tx import Row, Tx

if TYPE_CHECKING:
    # Only for annotations: bot.store.database imports the migrations, which import this module.
    from bot.store.database import Database


async def migrate_velero(conn: Tx) -> None:
    """Schema of the Velero relay (appended to ``bot.schema.MIGRATIONS``)."""
    await conn.execute(
        """
        CREATE TABLE velero_baselines (
            -- The first complete listing of a kind in a namespace: what it held
            -- was adopted silently (no flood of old outcomes on the first start).
            namespace TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
            at REAL NOT NULL,
            PRIMARY KEY (namespace, kind)
        )
        """
    )
    await conn.execute(
        """
        CREATE TABLE velero_outcomes (
            kind TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
            -- namespace/name@start (bot.velero.model.RunView.outcome_key).
            key TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            schedule TEXT,
            phase TEXT NOT NULL,
            ended_at REAL,
            items INTEGER,
            duration_s REAL,
            recorded_at REAL NOT NULL,
            -- adopted: there before the baseline; posted: a message was queued;
            -- digest: waits for the next digest; digested: was in one.
            disposition TEXT NOT NULL CHECK (disposition IN ('adopted', 'posted', 'digest', 'digested')),
            PRIMARY KEY (kind, key)
        )
        """
    )
    await conn.execute(
        "CREATE INDEX velero_outcomes_digest ON velero_outcomes (recorded_at) WHERE disposition = 'digest'"
    )
    await conn.execute(
        """
        CREATE TABLE velero_missed (
            -- One row per open missed-run alert; deleted when it clears.
            namespace TEXT NOT NULL,
            schedule TEXT NOT NULL,
            expected_at REAL NOT NULL,
            raised_at REAL NOT NULL,
            never INTEGER NOT NULL,
            -- {room_id: outbox id} of the alert, which the clearing message replies to.
            refs TEXT NOT NULL,
            PRIMARY KEY (namespace, schedule)
        )
        """
    )
    await conn.execute(
        """
        CREATE TABLE velero_locations (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            phase TEXT NOT NULL,
            since REAL NOT NULL,
            -- {room_id: outbox id} of the "unavailable" message while it is.
            refs TEXT,
            PRIMARY KEY (namespace, name)
        )
        """
    )


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One outcome as stored (and as the digest lists it)."""

    kind: str
    key: str
    namespace: str
    name: str
    schedule: str | None
    phase: str
    ended_at: float | None
    items: int | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class MissedAlert:
    namespace: str
    schedule: str
    expected_at: float
    raised_at: float
    never: bool
    refs: dict[str, int]


@dataclass(frozen=True, slots=True)
class LocationRecord:
    namespace: str
    name: str
    phase: str
    since: float
    refs: dict[str, int]


_OUTCOME_COLUMNS = "kind, key, namespace, name, schedule, phase, ended_at, items, duration_s"
_MISSED_COLUMNS = "namespace, schedule, expected_at, raised_at, never, refs"


def _refs(text: str | None) -> dict[str, int]:
    return {str(room): int(ref) for room, ref in json.loads(text).items()} if text else {}


def _outcome(row: Row) -> OutcomeRecord:
    return OutcomeRecord(
        kind=row["kind"],
        key=row["key"],
        namespace=row["namespace"],
        name=row["name"],
        schedule=row["schedule"],
        phase=row["phase"],
        ended_at=row["ended_at"],
        items=row["items"],
        duration_s=row["duration_s"],
    )


def _missed(row: Row) -> MissedAlert:
    return MissedAlert(
        namespace=row["namespace"],
        schedule=row["schedule"],
        expected_at=row["expected_at"],
        raised_at=row["raised_at"],
        never=bool(row["never"]),
        refs=_refs(row["refs"]),
    )


async def _all(conn: Tx, sql: str, params: tuple[object, ...]) -> list[Row]:
    cursor = await conn.execute(sql, params)
    try:
        return list(await cursor.fetchall())
    finally:
        await cursor.close()


class VeleroRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- baselines and outcomes ---------------------------------------------

    async def has_baseline(self, namespace: str, kind: str) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 FROM velero_baselines WHERE namespace = ? AND kind = ?", (namespace, kind)
        )
        return row is not None

    async def set_baseline(self, conn: Tx, namespace: str, kind: str, at: float) -> bool:
        """Record the first listing; False if another listing did it first."""
        cursor = await conn.execute(
            "INSERT OR IGNORE INTO velero_baselines (namespace, kind, at) VALUES (?, ?, ?)",
            (namespace, kind, at),
        )
        return cursor.rowcount == 1

    async def claimed_keys(self, namespace: str, kind: str) -> set[str]:
        """Keys of every outcome of ``kind`` in ``namespace`` already recorded (a cheap pre-filter)."""
        rows = await self._db.fetchall(
            "SELECT key FROM velero_outcomes WHERE namespace = ? AND kind = ?", (namespace, kind)
        )
        return {row["key"] for row in rows}

    async def claim(self, conn: Tx, outcome: OutcomeRecord, disposition: str, at: float) -> bool:
        """Record an outcome unless it already is; True when this call recorded it (and may report it)."""
        cursor = await conn.execute(
            f"INSERT OR IGNORE INTO velero_outcomes ({_OUTCOME_COLUMNS}, recorded_at, disposition)"  # noqa: S608 (constant columns)
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                outcome.kind,
                outcome.key,
                outcome.namespace,
                outcome.name,
                outcome.schedule,
                outcome.phase,
                outcome.ended_at,
                outcome.items,
                outcome.duration_s,
                at,
                disposition,
            ),
        )
        return cursor.rowcount == 1

    async def take_digest(self, conn: Tx, namespace: str) -> list[OutcomeRecord]:
        """Every outcome waiting for the digest, now marked as digested (in the caller's transaction)."""
        rows = await _all(
            conn,
            f"UPDATE velero_outcomes SET disposition = 'digested'"  # noqa: S608 (constant columns)
            f" WHERE namespace = ? AND disposition = 'digest' RETURNING {_OUTCOME_COLUMNS}",
            (namespace,),
        )
        return sorted((_outcome(row) for row in rows), key=lambda o: (o.ended_at or 0.0, o.key))

    async def prune_outcomes(self, ended_before: float) -> int:
        """Forget outcomes that ended before ``ended_before`` (never ones still waiting for a digest)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM velero_outcomes WHERE ended_at < ? AND disposition != 'digest'",
                (ended_before,),
            )
            return cursor.rowcount

    # -- missed-run alerts ----------------------------------------------------

    async def open_missed(self, namespace: str) -> dict[str, MissedAlert]:
        rows = await self._db.fetchall(
            f"SELECT {_MISSED_COLUMNS} FROM velero_missed WHERE namespace = ?",  # noqa: S608 (constant columns)
            (namespace,),
        )
        return {row["schedule"]: _missed(row) for row in rows}

    async def raise_missed(
        self,
        conn: Tx,
        namespace: str,
        schedule: str,
        *,
        expected_at: float,
        raised_at: float,
        never: bool,
    ) -> bool:
        """Open an alert for ``schedule`` unless one is open; True when this call opened it."""
        cursor = await conn.execute(
            "INSERT OR IGNORE INTO velero_missed (namespace, schedule, expected_at, raised_at, never, refs)"
            " VALUES (?, ?, ?, ?, ?, '{}')",
            (namespace, schedule, expected_at, raised_at, int(never)),
        )
        return cursor.rowcount == 1

    async def set_missed_refs(self, conn: Tx, namespace: str, schedule: str, refs: dict[str, int]) -> None:
        await conn.execute(
            "UPDATE velero_missed SET refs = ? WHERE namespace = ? AND schedule = ?",
            (json.dumps(refs), namespace, schedule),
        )

    async def clear_missed(self, conn: Tx, namespace: str, schedule: str) -> MissedAlert | None:
        """Close the open alert of ``schedule``; the closed alert, or None if none was open."""
        rows = await _all(
            conn,
            f"DELETE FROM velero_missed WHERE namespace = ? AND schedule = ? RETURNING {_MISSED_COLUMNS}",  # noqa: S608
            (namespace, schedule),
        )
        return _missed(rows[0]) if rows else None

    # -- storage locations ----------------------------------------------------

    async def locations(self, namespace: str) -> dict[str, LocationRecord]:
        rows = await self._db.fetchall(
            "SELECT namespace, name, phase, since, refs FROM velero_locations WHERE namespace = ?",
            (namespace,),
        )
        return {
            row["name"]: LocationRecord(
                row["namespace"], row["name"], row["phase"], row["since"], _refs(row["refs"])
            )
            for row in rows
        }

    async def location(self, conn: Tx, namespace: str, name: str) -> LocationRecord | None:
        rows = await _all(
            conn,
            "SELECT namespace, name, phase, since, refs FROM velero_locations"
            " WHERE namespace = ? AND name = ?",
            (namespace, name),
        )
        if not rows:
            return None
        row = rows[0]
        return LocationRecord(row["namespace"], row["name"], row["phase"], row["since"], _refs(row["refs"]))

    async def set_location(
        self,
        conn: Tx,
        namespace: str,
        name: str,
        *,
        phase: str,
        since: float,
        refs: dict[str, int] | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO velero_locations (namespace, name, phase, since, refs) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (namespace, name) DO UPDATE SET"
            " phase = excluded.phase, since = excluded.since, refs = excluded.refs",
            (namespace, name, phase, since, None if refs is None else json.dumps(refs)),
        )

    # -- objects that are gone --------------------------------------------------

    async def forget_missing(self, conn: Tx, namespace: str, table: str, present: set[str]) -> list[str]:
        """Delete rows of schedules (``velero_missed``) or locations no longer in the cluster."""
        column = {"velero_missed": "schedule", "velero_locations": "name"}[table]
        rows = await _all(conn, f"SELECT {column} AS name FROM {table} WHERE namespace = ?", (namespace,))  # noqa: S608 (fixed names)
        gone = [row["name"] for row in rows if row["name"] not in present]
        for name in gone:
            await conn.execute(f"DELETE FROM {table} WHERE namespace = ? AND {column} = ?", (namespace, name))  # noqa: S608
        return gone
