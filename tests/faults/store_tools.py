"""Store faults for a bot running as a subprocess: a locked database, a full disk, and what they left.

Both faults are made from outside the bot, as they happen in production:

- ``ExclusiveLock``: another process opens the bot's SQLite file and holds
  ``BEGIN EXCLUSIVE`` (in WAL mode readers go on, every writer waits for the
  bot's busy timeout and then gets "database is locked").
- ``FileSizeLimit``: ``RLIMIT_FSIZE`` of the running bot is lowered to the
  current size of its write-ahead log, so the next write past it fails in the
  kernel (EFBIG); raising the limit again is the disk being freed. CPython
  ignores SIGXFSZ from start-up, so the bot gets the error instead of dying.
  SQLite reports this as "disk I/O error" (SQLITE_IOERR_WRITE); a real full
  disk (ENOSPC) says "database or disk is full" (SQLITE_FULL). Both are the
  ``sqlite3.OperationalError`` the bot handles, and both fail the write the
  same way: the transaction is rolled back.

``StoreSnapshot`` reads the relay tables through a separate read-only
connection, the way an operator would inspect the file.
"""

from __future__ import annotations

import re
import resource
import sqlite3
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# The tables a relayed webhook writes; a delivery answered 503 must add to none.
RELAY_TABLES = (
    "alert_groups",
    "alert_group_posts",
    "alert_digests",
    "falco_aggregates",
    "falco_digests",
    "outbox",
)


class ExclusiveLock:
    """``BEGIN EXCLUSIVE`` on the bot's store from this process until ``release()``."""

    def __init__(self, path: Path) -> None:
        # Our own wait for the bot's short write transactions to finish.
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.close()


class FileSizeLimit:
    """The bot's files may not grow past their size now (its WAL being the largest): a full disk."""

    def __init__(self, pid: int, store: Path, others: list[Path]) -> None:
        self._pid = pid
        wal = store.with_name(store.name + "-wal")
        self.limit = wal.stat().st_size
        # Every other file the bot appends to must stay below the limit, or
        # the fault would hit the log or the crypto store first and the test
        # would measure something else.
        for path in others:
            size = path.stat().st_size
            assert size < self.limit // 2, f"{path} ({size} B) is too close to the limit ({self.limit} B)"
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.limit, resource.RLIM_INFINITY))

    def release(self) -> None:
        resource.prlimit(self._pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@dataclass(frozen=True)
class StoreSnapshot:
    counts: dict[str, int]
    # Rows that break the relay's invariants: a group without its post, a
    # post without its group or its outbox row, an aggregate without its row.
    orphans: int

    @classmethod
    def read(cls, path: Path) -> StoreSnapshot:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            counts = {
                table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 (fixed names)
                for table in RELAY_TABLES
            }
            orphans = sum(
                conn.execute(sql).fetchone()[0]
                for sql in (
                    "SELECT COUNT(*) FROM alert_groups g"
                    " WHERE NOT EXISTS (SELECT 1 FROM alert_group_posts p WHERE p.group_key = g.group_key)",
                    "SELECT COUNT(*) FROM alert_group_posts p"
                    " WHERE NOT EXISTS (SELECT 1 FROM alert_groups g WHERE g.group_key = p.group_key)",
                    "SELECT COUNT(*) FROM alert_group_posts p WHERE p.message_outbox_id IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = p.message_outbox_id)",
                    "SELECT COUNT(*) FROM falco_aggregates a WHERE a.message_outbox_id IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = a.message_outbox_id)",
                )
            )
        finally:
            conn.close()
        return cls(counts, orphans)

    def added_since(self, before: StoreSnapshot) -> int:
        return sum(self.counts[t] - before.counts[t] for t in RELAY_TABLES)


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        text: str = response.read().decode()
    return text


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total
