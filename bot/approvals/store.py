"""The approvals tables: sync requests, the reactions on their prompts, early redactions.

Only SQL lives here; the rules are in ``bot.approvals``. Every state change is
a compare-and-set (``UPDATE … WHERE id = ? AND state = ?``) so two tasks, a
replayed reaction or a restarted bot can never make the same transition
twice. At most one request per Application is active: a partial unique index
says so, not application code.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from bot.store.tx import Row, Tx

if TYPE_CHECKING:
    # Type-only: bot.store.migrations imports this module while
    # bot.store.database (which imports the migrations) is still loading.
    from bot.outbox.repo import OutboxId
    from bot.store.database import Database

# The states in which a request holds its Application (see bot.approvals.machine).
ACTIVE_STATES = ("requested", "approved", "started")
# Columns a transition may set besides state; never interpolated from input.
_TRANSITION_FIELDS = frozenset({"decided_at", "decided_by", "started_at", "finished_at", "outcome"})


async def migrate_approvals(conn: Tx) -> None:
    """Create the approvals tables (a migration: append-only, runs once)."""
    await conn.execute(
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            app TEXT NOT NULL,
            namespace TEXT NOT NULL,
            application TEXT NOT NULL,
            room_id TEXT NOT NULL,
            requester TEXT NOT NULL,
            request_event_id TEXT NOT NULL,
            prompt_outbox_id INTEGER,
            prompt_event_id TEXT UNIQUE,
            state TEXT NOT NULL CHECK (state IN ('requested', 'approved', 'started', 'succeeded',
                'failed', 'error', 'rejected', 'expired', 'cancelled', 'revision_moved', 'aborted')),
            current_revision TEXT,
            -- The pinned revision shown in the prompt; the only one ever synced.
            target_revision TEXT NOT NULL,
            source_fingerprint TEXT NOT NULL,
            approvals_required INTEGER NOT NULL CHECK (approvals_required >= 1),
            four_eyes INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            decided_at REAL,
            decided_by TEXT,
            started_at REAL,
            finished_at REAL,
            -- JSON: what the prompt showed (statuses, out-of-sync resources, approvers).
            facts TEXT NOT NULL,
            -- JSON: how it ended (message, revision, failed resources…).
            outcome TEXT,
            updated_at REAL NOT NULL
        )
        """
    )
    await conn.execute(
        "CREATE UNIQUE INDEX approvals_one_active ON approvals (namespace, application)"
        " WHERE state IN ('requested', 'approved', 'started')"
    )
    await conn.execute("CREATE INDEX approvals_state ON approvals (state, expires_at)")
    await conn.execute(
        """
        CREATE TABLE approval_votes (
            reaction_event_id TEXT PRIMARY KEY,
            approval_id TEXT NOT NULL REFERENCES approvals (id),
            room_id TEXT NOT NULL,
            voter TEXT NOT NULL,
            reaction_key TEXT NOT NULL,
            sent_at REAL NOT NULL,
            recorded_at REAL NOT NULL,
            effect TEXT NOT NULL CHECK (effect IN ('approve', 'reject', 'ignored')),
            reason TEXT,
            withdrawn_at REAL
        )
        """
    )
    await conn.execute("CREATE INDEX approval_votes_approval ON approval_votes (approval_id)")
    # A redaction can be handled before the reaction it removes (handlers run
    # as separate tasks): remember it so the late reaction does not count.
    await conn.execute(
        "CREATE TABLE approval_redactions (redacted_event_id TEXT PRIMARY KEY, at REAL NOT NULL)"
    )


@dataclass(frozen=True, slots=True)
class NewApproval:
    id: str
    app: str
    namespace: str
    application: str
    room_id: str
    requester: str
    request_event_id: str
    current_revision: str | None
    target_revision: str
    source_fingerprint: str
    approvals_required: int
    four_eyes: bool
    created_at: float
    expires_at: float
    facts: dict[str, Any]
    # What is gated: "sync" (an Argo CD sync) or "restore-drill" (bot.approvals.kinds).
    kind: str = "sync"


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    id: str
    app: str
    namespace: str
    application: str
    room_id: str
    requester: str
    request_event_id: str
    prompt_outbox_id: OutboxId | None
    prompt_event_id: str | None
    state: str
    current_revision: str | None
    target_revision: str
    source_fingerprint: str
    approvals_required: int
    four_eyes: bool
    created_at: float
    expires_at: float
    decided_at: float | None
    decided_by: str | None
    started_at: float | None
    finished_at: float | None
    facts: dict[str, Any]
    outcome: dict[str, Any] | None
    updated_at: float
    kind: str = "sync"


@dataclass(frozen=True, slots=True)
class Vote:
    reaction_event_id: str
    approval_id: str
    room_id: str
    voter: str
    reaction_key: str
    sent_at: float
    recorded_at: float
    effect: str
    reason: str | None = None
    withdrawn_at: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """Extra columns set with a state change."""

    decided_at: float | None = None
    decided_by: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outcome: dict[str, Any] | None = field(default=None)

    def columns(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": None if self.outcome is None else json.dumps(self.outcome, ensure_ascii=False),
        }
        return {name: value for name, value in values.items() if value is not None}


class ActiveRequestExists(Exception):
    """The Application already has a request that is open or syncing."""


_COLUMNS = (
    "id, app, namespace, application, room_id, requester, request_event_id, prompt_outbox_id,"
    " prompt_event_id, state, current_revision, target_revision, source_fingerprint,"
    " approvals_required, four_eyes, created_at, expires_at, decided_at, decided_by, started_at,"
    " finished_at, facts, outcome, updated_at, kind"
)


def _record(row: Row) -> ApprovalRecord:
    values = dict(row)
    outbox_id = row["prompt_outbox_id"]
    values["prompt_outbox_id"] = None if outbox_id is None else cast("OutboxId", int(outbox_id))
    values["four_eyes"] = bool(row["four_eyes"])
    values["facts"] = json.loads(row["facts"])
    values["outcome"] = None if row["outcome"] is None else json.loads(row["outcome"])
    return ApprovalRecord(**values)


def _vote(row: Row) -> Vote:
    return Vote(**dict(row))


def _placeholders(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


class ApprovalRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- requests -------------------------------------------------------------

    async def insert(self, conn: Tx, new: NewApproval) -> None:
        """Insert a request in state ``requested`` inside the caller's transaction.

        Raises ``ActiveRequestExists`` if its Application already has an active one.
        """
        try:
            await conn.execute(
                "INSERT INTO approvals (id, app, namespace, application, room_id, requester,"
                " request_event_id, state, current_revision, target_revision, source_fingerprint,"
                " approvals_required, four_eyes, created_at, expires_at, facts, updated_at, kind)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'requested', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.id,
                    new.app,
                    new.namespace,
                    new.application,
                    new.room_id,
                    new.requester,
                    new.request_event_id,
                    new.current_revision,
                    new.target_revision,
                    new.source_fingerprint,
                    new.approvals_required,
                    int(new.four_eyes),
                    new.created_at,
                    new.expires_at,
                    json.dumps(new.facts, ensure_ascii=False),
                    new.created_at,
                    new.kind,
                ),
            )
        except sqlite3.IntegrityError as error:
            if "approvals.namespace" in str(error) or "approvals_one_active" in str(error):
                raise ActiveRequestExists(new.application) from None
            raise

    async def set_prompt(self, conn: Tx, approval_id: str, outbox_id: OutboxId) -> None:
        await conn.execute("UPDATE approvals SET prompt_outbox_id = ? WHERE id = ?", (outbox_id, approval_id))

    async def set_prompt_event(self, approval_id: str, event_id: str, *, tx: Tx | None = None) -> None:
        """Remember the prompt's event id once the outbox has sent it."""
        async with self._db.transaction(tx) as conn:
            await conn.execute(
                "UPDATE approvals SET prompt_event_id = ? WHERE id = ? AND prompt_event_id IS NULL",
                (event_id, approval_id),
            )

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,))  # noqa: S608 (constant column list)
        return None if row is None else _record(row)

    async def get_in(self, conn: Tx, approval_id: str) -> ApprovalRecord | None:
        cursor = await conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,))  # noqa: S608
        row = await cursor.fetchone()
        await cursor.close()
        return None if row is None else _record(row)

    async def by_prompt_event(self, event_id: str) -> ApprovalRecord | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM approvals WHERE prompt_event_id = ?",  # noqa: S608
            (event_id,),
        )
        return None if row is None else _record(row)

    async def unresolved_prompts(self, created_after: float) -> list[tuple[str, OutboxId]]:
        """Recent requests whose prompt's event id is not known yet: (id, outbox id)."""
        rows = await self._db.fetchall(
            "SELECT id, prompt_outbox_id FROM approvals"
            " WHERE prompt_event_id IS NULL AND prompt_outbox_id IS NOT NULL AND created_at > ?",
            (created_after,),
        )
        return [(str(row["id"]), cast("OutboxId", int(row["prompt_outbox_id"]))) for row in rows]

    async def active_for(self, namespace: str, application: str) -> ApprovalRecord | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM approvals WHERE namespace = ? AND application = ?"  # noqa: S608
            f" AND state IN ({_placeholders(ACTIVE_STATES)})",
            (namespace, application, *ACTIVE_STATES),
        )
        return None if row is None else _record(row)

    async def in_states(self, states: Iterable[str], *, room_id: str | None = None) -> list[ApprovalRecord]:
        """Requests in any of ``states`` (optionally of one room), oldest first."""
        wanted = list(states)
        sql = f"SELECT {_COLUMNS} FROM approvals WHERE state IN ({_placeholders(wanted)})"  # noqa: S608
        params: list[object] = list(wanted)
        if room_id is not None:
            sql += " AND room_id = ?"
            params.append(room_id)
        rows = await self._db.fetchall(sql + " ORDER BY created_at, id", params)
        return [_record(row) for row in rows]

    async def due_for_expiry(self, now: float) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT id FROM approvals WHERE state = 'requested' AND expires_at < ? ORDER BY expires_at",
            (now,),
        )
        return [str(row["id"]) for row in rows]

    async def transition(
        self,
        conn: Tx,
        approval_id: str,
        source: str,
        target: str,
        at: float,
        extra: Transition | None = None,
    ) -> bool:
        """Compare-and-set ``source → target``; False if the request was no longer in ``source``."""
        columns = (extra or Transition()).columns()
        assert set(columns) <= _TRANSITION_FIELDS  # names are ours, never input
        assignments = "".join(f", {name} = ?" for name in columns)
        cursor = await conn.execute(
            f"UPDATE approvals SET state = ?, updated_at = ?{assignments}"  # noqa: S608 (whitelisted names)
            " WHERE id = ? AND state = ?",
            (target, at, *columns.values(), approval_id, source),
        )
        return cursor.rowcount == 1

    # -- votes ----------------------------------------------------------------

    async def insert_vote(self, conn: Tx, vote: Vote) -> bool:
        """Record a reaction once; False if this reaction event was already recorded."""
        cursor = await conn.execute(
            "INSERT OR IGNORE INTO approval_votes (reaction_event_id, approval_id, room_id, voter,"
            " reaction_key, sent_at, recorded_at, effect, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                vote.reaction_event_id,
                vote.approval_id,
                vote.room_id,
                vote.voter,
                vote.reaction_key,
                vote.sent_at,
                vote.recorded_at,
                vote.effect,
                vote.reason,
            ),
        )
        return cursor.rowcount == 1

    async def vote_in(self, conn: Tx, reaction_event_id: str) -> Vote | None:
        cursor = await conn.execute(
            "SELECT * FROM approval_votes WHERE reaction_event_id = ?", (reaction_event_id,)
        )
        row = await cursor.fetchone()
        await cursor.close()
        return None if row is None else _vote(row)

    async def votes(self, approval_id: str) -> list[Vote]:
        rows = await self._db.fetchall(
            "SELECT * FROM approval_votes WHERE approval_id = ? ORDER BY recorded_at, reaction_event_id",
            (approval_id,),
        )
        return [_vote(row) for row in rows]

    async def approving_voters(self, conn: Tx, approval_id: str) -> list[str]:
        """Distinct people whose ✅ counts now (not withdrawn), in the order they approved."""
        cursor = await conn.execute(
            "SELECT voter FROM approval_votes WHERE approval_id = ? AND effect = 'approve'"
            " AND withdrawn_at IS NULL GROUP BY voter ORDER BY MIN(recorded_at), voter",
            (approval_id,),
        )
        rows = await cursor.fetchall()
        await cursor.close()
        return [str(row["voter"]) for row in rows]

    async def withdraw_vote(self, conn: Tx, reaction_event_id: str, at: float) -> bool:
        cursor = await conn.execute(
            "UPDATE approval_votes SET withdrawn_at = ? WHERE reaction_event_id = ? AND withdrawn_at IS NULL",
            (at, reaction_event_id),
        )
        return cursor.rowcount == 1

    # -- early redactions -----------------------------------------------------

    async def remember_redaction(self, conn: Tx, event_id: str, at: float) -> None:
        await conn.execute(
            "INSERT OR IGNORE INTO approval_redactions (redacted_event_id, at) VALUES (?, ?)", (event_id, at)
        )

    async def was_redacted(self, conn: Tx, event_id: str) -> bool:
        cursor = await conn.execute(
            "SELECT 1 FROM approval_redactions WHERE redacted_event_id = ?", (event_id,)
        )
        row = await cursor.fetchone()
        await cursor.close()
        return row is not None

    async def prune_redactions(self, before: float) -> int:
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM approval_redactions WHERE at < ?", (before,))
            return cursor.rowcount
