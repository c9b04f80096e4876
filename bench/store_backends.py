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
4. read: ``OutboxRepo.pending_in_room`` (the sender's queue head);
5. relay: ``--n`` distinct Alertmanager groups through the real
   ``AlertRelay.accept`` (group commit, outbox, group rows; the default send
   budget, so most land in digests), 20 notifications at a time, as the
   burst in ``bench/alert_relay.py`` posts them: per-notification answer time.

Prints p50/p99 per call in ms, the total, the PostgreSQL/SQLite ratio
of the p50s, and the relay burst's wall time on each. No assertion: a figure to watch, not a gate.

    uv run python bench/store_backends.py [--n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, postgres_server  # noqa: E402
from bot.alertmanager.relay import AlertRelay  # noqa: E402
from bot.alertmanager.render import AlertRenderer  # noqa: E402
from bot.alertmanager.store import AlertGroupRepo  # noqa: E402
from bot.alertmanager.webhook import parse_payload  # noqa: E402
from bot.outbox import Outbox  # noqa: E402
from bot.outbox.repo import OutboxId, OutboxRepo  # noqa: E402
from bot.render.templates import Templates  # noqa: E402
from bot.schema import MIGRATIONS  # noqa: E402
from bot.store import AuditRepo, Database, KeyValueRepo  # noqa: E402
from config.alertmanager import AlertmanagerSettings  # noqa: E402

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
    started = time.perf_counter()
    times["relay"] = await relay_burst(db, n)
    times["burst"] = [time.perf_counter() - started]
    return times


def _notification(i: int) -> bytes:
    labels = {"alertname": "DiskFull", "severity": "warning", "instance": f"node-{i}"}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "disk almost full"},
        "startsAt": "2026-11-25T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": f"fp{i:06x}",
    }
    body = {
        "receiver": "readybot",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": {"instance": f"node-{i}"},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": f'{{}}:{{instance="node-{i}"}}',
        "truncatedAlerts": 0,
    }
    return json.dumps(body).encode()


async def relay_burst(db: Database, n: int) -> list[float]:
    settings = AlertmanagerSettings.model_validate({"enabled": True, "default_rooms": [ROOM]})
    relay = AlertRelay(
        db=db,
        outbox=Outbox(db),
        repo=AlertGroupRepo(db),
        renderer=AlertRenderer(Templates(settings.templates_dir), settings),
        settings=settings,
        clock=time.time,
    )
    await relay.load()
    answers: list[float] = []
    pending = [parse_payload(_notification(i)) for i in range(n)]
    while pending:
        chunk, pending = pending[:CONCURRENCY], pending[CONCURRENCY:]
        await asyncio.gather(*(_timed(answers, lambda p=p: relay.accept(p)) for p in chunk))
    return answers


async def run(n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="readybot-bench-"))
    with postgres_server() as server:
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

    print(f"store calls, n={n} each (ms per call: p50 / p99; total s)")
    print(f"{'call':<8} {'SQLite':>26} {'PostgreSQL':>26} {'p50 ratio':>10}")
    for name in results["sqlite"]:
        if name == "burst":
            continue
        cells = []
        for backend in ("sqlite", "postgresql"):
            values = results[backend][name]
            cells.append(
                f"{percentile(values, 50):6.2f} / {percentile(values, 99):6.2f}; {sum(values) / 1000:5.1f}"
            )
        ratio = percentile(results["postgresql"][name], 50) / percentile(results["sqlite"][name], 50)
        print(f"{name:<8} {cells[0]:>26} {cells[1]:>26} {ratio:>9.2f}x")
    lite, pg = results["sqlite"]["burst"][0], results["postgresql"]["burst"][0]
    print(
        f"relay burst of {n} groups, wall time: SQLite {lite:.2f} s, PostgreSQL {pg:.2f} s ({pg / lite:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000, help="calls of each kind per backend")
    asyncio.run(run(parser.parse_args().n))


if __name__ == "__main__":
    main()
