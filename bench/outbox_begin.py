"""What the begun mark costs each outbox row: one more small write before its first send.

Every row is now marked begun (``outbox.send_began_at``) before its first
send, so that a new device can tell which rows to look for after a crash
(bot/outbox/inflight.py). On a real SQLite file as the bot opens it (WAL,
``synchronous=NORMAL``), this times the mark against the write each row
already had (``mark_sent``), row by row, and prints p50/p99 of both and
their ratio.

    uv run python bench/outbox_begin.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402
from bot.outbox import Outbox  # noqa: E402
from bot.outbox.inflight import InFlightRepo  # noqa: E402
from bot.outbox.repo import OutboxRepo  # noqa: E402
from bot.schema import MIGRATIONS  # noqa: E402
from bot.store import Database  # noqa: E402

ROOM = "!bench:example.org"


async def run(rows: int, work: Path) -> None:
    db = await Database.open(work / "readybot.sqlite3", migrations=MIGRATIONS)
    try:
        outbox = Outbox(db)
        ids = [
            await outbox.send_message(ROOM, {"msgtype": "m.notice", "body": f"row {i}"}) for i in range(rows)
        ]
        begun = InFlightRepo(db)
        repo = OutboxRepo(db)
        begin_ms: list[float] = []
        sent_ms: list[float] = []
        for outbox_id in ids:
            started = time.perf_counter()
            await begun.begin(outbox_id, time.time())
            begin_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await repo.mark_sent(outbox_id, f"$e{outbox_id}", time.time())
            sent_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await db.close()
    print(f"{rows} rows on SQLite (WAL, synchronous=NORMAL)")
    print(f"  begun mark   p50 {percentile(begin_ms, 50):.3f} ms  p99 {percentile(begin_ms, 99):.3f} ms")
    print(f"  mark_sent    p50 {percentile(sent_ms, 50):.3f} ms  p99 {percentile(sent_ms, 99):.3f} ms")
    print(f"  ratio begun/sent at p50: {percentile(begin_ms, 50) / percentile(sent_ms, 50):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000, help="rows to mark and record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="readybot-bench-") as work:
        asyncio.run(run(args.rows, Path(work)))


if __name__ == "__main__":
    main()
