"""Who asked the bot to do what, and how it went."""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.database import Database
from bot.store.tx import Tx


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    room_id: str | None
    event_id: str | None
    action: str
    args: str | None
    outcome: str
    detail: str | None
    # The device a command was sent from, and whether its owner cross-signed
    # it; None where not known (a reaction, an unencrypted message).
    sender_device: str | None = None
    cross_signed: bool | None = None


class AuditRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        actor: str,
        action: str,
        outcome: str,
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        args: str | None = None,
        detail: str | None = None,
        sender_device: str | None = None,
        cross_signed: bool | None = None,
        tx: Tx | None = None,
    ) -> int:
        """Append one entry stamped with the store's clock; return its id."""
        signed = None if cross_signed is None else int(cross_signed)
        async with self._db.transaction(tx) as conn:
            cursor = await conn.execute(
                "INSERT INTO audit (at, actor, room_id, event_id, action, args, outcome, detail,"
                " sender_device, cross_signed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    self._db.clock(),
                    actor,
                    room_id,
                    event_id,
                    action,
                    args,
                    outcome,
                    detail,
                    sender_device,
                    signed,
                ),
            )
            row = await cursor.fetchone()
        assert row is not None  # an INSERT … RETURNING always returns its row
        return int(row["id"])

    async def recent(self, limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        rows = await self._db.fetchall(
            "SELECT id, at, actor, room_id, event_id, action, args, outcome, detail,"
            " sender_device, cross_signed FROM audit ORDER BY at DESC, id DESC LIMIT ?",
            (limit,),
        )
        entries = []
        for row in rows:
            values = dict(row)
            signed = values.pop("cross_signed")
            entries.append(AuditEntry(**values, cross_signed=None if signed is None else bool(signed)))
        return entries
