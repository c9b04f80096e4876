"""The fencing token: which leadership term may act, kept in the shared store.

With two replicas (``ha.enabled``) the Kubernetes Lease decides who leads,
but a leader can lose its Lease without knowing (paused, cut off from the
API server). So every externally visible act also checks, in the same store
transaction as the act, that the store's ``leadership`` row still holds the
token of this replica's term. A new leader writes its (larger) token when it
takes the lead, after which every act of an old leader fails its check.

The token is the Lease's ``leaseTransitions`` at acquisition, which only
grows while the Lease exists; the elector never lets a new term's token fall
to or below the stored one (a recreated Lease starts again from 0).

Portable SQL only (SQLite and PostgreSQL): the check is a conditional UPDATE
of the one row, so on PostgreSQL it also takes the row lock, and a new
leader's takeover waits for an old leader's fenced transaction to commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.store.database import Database
from bot.store.tx import Tx

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """No longer the leader: stop acting (the process exits and restarts as a standby)."""


async def migrate_leadership(conn: Tx) -> None:
    """The one-row table of the current leadership term (id is always 1)."""
    await conn.execute(
        "CREATE TABLE leadership ("
        " id INTEGER PRIMARY KEY,"
        " holder TEXT NOT NULL,"
        " token INTEGER NOT NULL,"
        " since REAL NOT NULL)"
    )
    await conn.execute("INSERT INTO leadership (id, holder, token, since) VALUES (1, '', 0, 0)")


class Fence:
    """This replica's term: taken when it gains the lead, checked before every act.

    A failed check means another replica took over: ``lost`` is set (the
    composition root ends the process on it) and ``LeadershipLost`` is raised,
    so the act in hand is not done.
    """

    def __init__(self, db: Database, *, clock: Callable[[], float] | None = None) -> None:
        self._db = db
        self._clock = clock or db.clock
        self.holder: str | None = None
        self.token: int | None = None
        self.lost = asyncio.Event()
        # Set by the elector: True while this replica renewed its Lease within
        # the renew deadline, on the local monotonic clock. A process that was
        # paused (SIGSTOP, a long GC, a frozen VM) past that deadline wakes up
        # still holding the store's token until the new leader writes its
        # own; this check stops it before the act instead of after.
        self.within_lease: Callable[[], bool] | None = None

    async def stored(self) -> tuple[str, int]:
        """The holder and token the store holds now."""
        row = await self._db.fetchone("SELECT holder, token FROM leadership WHERE id = 1")
        return ("", 0) if row is None else (str(row[0]), int(row[1]))

    async def take(self, holder: str, token: int) -> bool:
        """Record a new term; False when the store already holds this token or a larger one (we are stale)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE leadership SET holder = ?, token = ?, since = ? WHERE id = 1 AND token < ?",
                (holder, token, self._clock(), token),
            )
            taken = cursor.rowcount == 1
        if taken:
            self.holder, self.token = holder, token
        return taken

    async def check_in(self, conn: Tx) -> None:
        """Raise ``LeadershipLost`` unless the store still holds our token (in the caller's transaction)."""
        if self.token is None:
            raise LeadershipLost("this replica has not taken the lead")
        if self.within_lease is not None and not self.within_lease():
            self._lose()
            raise LeadershipLost(f"term {self.token}: the lease was not renewed within the renew deadline")
        # A conditional write rather than a read: on PostgreSQL it locks the
        # row until the act commits, so a takeover is ordered after it.
        cursor = await conn.execute(
            "UPDATE leadership SET token = token WHERE id = 1 AND token = ?", (self.token,)
        )
        if cursor.rowcount != 1:
            self._lose()
            raise LeadershipLost(f"another replica took the lead after term {self.token}")

    async def check(self) -> None:
        """``check_in`` in a transaction of its own (before an act outside the store, e.g. a send)."""
        async with self._db.transaction() as conn:
            await self.check_in(conn)

    def _lose(self) -> None:
        if not self.lost.is_set():
            log.error("fenced: the store holds a newer leadership term than ours (%s); stopping", self.token)
            self.lost.set()


async def fence_check(fence: Fence | None, conn: Tx) -> None:
    """The check where one is needed: a bot without ``ha.enabled`` has no fence and always acts."""
    if fence is not None:
        await fence.check_in(conn)
