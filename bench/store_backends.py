"""The store on SQLite against PostgreSQL: the same repository calls timed on both.

PostgreSQL is Debian's, started here on 127.0.0.1 (``tests/pgserver.py``;
fsync off, as in the tests, so this measures the protocol and the dialect
layer, not the disk); SQLite is a file in a temp dir with the bot's pragmas
(WAL, synchronous=NORMAL). For each backend, ``--n`` times:

1. enqueue: ``Outbox.send_message`` from 20 concurrent callers (what a burst
   of webhooks does), each call one transaction;
2. batch: one transaction with an outbox row, a kv upsert and an audit row
   (the shape of a relay's group commit);
3. settle: ``OutboxRepo.mark_sent`` of each row (the sender after a send);
4. read: ``OutboxRepo.pending_in_room`` (the sender's queue head).

Prints p50/p99 per call in ms, the total, and the PostgreSQL/SQLite ratio
of the p50s. No assertion: a figure to watch, not a gate.

    uv run python bench/store_backends.py [--n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402
from bot.outbox import Outbox  # noqa: E402
from bot.outbox.repo import OutboxId, OutboxRepo  # noqa: E402
from bot.schema import MIGRATIONS  # noqa: E402
from bot.store import AuditRepo, Database, KeyValueRepo  # noqa: E402
from tests.pgserver import PostgresServer, find_pg_bin  # noqa: E402

ROOM = "!bench:example.org"
CONCURRENCY = 20

Timings = dict[str, list[float]]


async def _timed(into: list[float], call: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await call()
    into.append((time.perf_counter() - started) * 1000)


async def measure(db: Database, n: int) -> Timings:
    outbox, repo, kv, audit = Outbox(db), OutboxRepo(db), KeyValueRepo(db), AuditRepo(db)
    times: Timings = {"enqueue": [], "batch": [], "settle": [], "read": []}
    ids: list[OutboxId] = []

    async def enqueue(i: int) -> None:
        ids.append(await outbox.send_message(ROOM, {"msgtype": "m.notice", "body": f"alert group {i}"}))

    pending = list(range(n))
    while pending:
        chunk, pending = pending[:CONCURRENCY], pending[CONCURRENCY:]
        await asyncio.gather(*(_timed(times["enqueue"], lambda i=i: enqueue(i)) for i in chunk))

    async def batch(i: int) -> None:
        async with db.transaction() as tx:
            ids.append(await outbox.send_message(ROOM, {"msgtype": "m.notice", "body": f"b{i}"}, tx=tx))
            await kv.set(f"bench.{i % 50}", str(i), tx=tx)
            await audit.record("@bench:example.org", "bench", "ok", tx=tx)

    for i in range(n):
        await _timed(times["batch"], lambda i=i: batch(i))
    for i in range(n):
        await _timed(times["read"], lambda: repo.pending_in_room(ROOM, 8))
        await _timed(times["settle"], lambda i=i: repo.mark_sent(ids[i], f"$e{i}", time.time()))
    return times


async def run(n: int) -> None:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    work = Path(tempfile.mkdtemp(prefix="readybot-bench-"))
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="readybot-pg-")))
    server.start()
    try:
        results: dict[str, Timings] = {}
        sqlite = await Database.open(work / "readybot.sqlite3", migrations=MIGRATIONS)
        try:
            results["sqlite"] = await measure(sqlite, n)
        finally:
            await sqlite.close()
        postgres = await Database.open(
            work / "unused", migrations=MIGRATIONS, url=server.url(server.create_database())
        )
        try:
            results["postgresql"] = await measure(postgres, n)
        finally:
            await postgres.close()
    finally:
        server.stop()

    print(f"store calls, n={n} each (ms per call: p50 / p99; total s)")
    print(f"{'call':<8} {'SQLite':>26} {'PostgreSQL':>26} {'p50 ratio':>10}")
    for name in results["sqlite"]:
        cells = []
        for backend in ("sqlite", "postgresql"):
            values = results[backend][name]
            cells.append(
                f"{percentile(values, 50):6.2f} / {percentile(values, 99):6.2f}; {sum(values) / 1000:5.1f}"
            )
        ratio = percentile(results["postgresql"][name], 50) / percentile(results["sqlite"][name], 50)
        print(f"{name:<8} {cells[0]:>26} {cells[1]:>26} {ratio:>9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000, help="calls of each kind per backend")
    asyncio.run(run(parser.parse_args().n))


if __name__ == "__main__":
    main()
