"""Failover time of two replicas: SIGKILL the leader, time until the standby's /readyz is 200.

Two real bot processes (``ha.enabled``) on the local Synapse, one shared
PostgreSQL store (Debian's, started here on 127.0.0.1), the Lease in the test
Kubernetes API server (``bot/demo/kube``) spoken to by the real client.
Each round SIGKILLs whichever replica leads (no release: as a node
failure), measures until the other is ready (it leads), then starts the
killed one again as the standby. Prints p50/p99, min and max over the
kills, and the lease settings they follow from: the standby counts the
lease from when it saw the last renewal, so a takeover lands between the
lease duration and the lease duration plus two retry periods after the kill.

    uv run python bench/failover.py [--kills 20] [--lease 15 --deadline 10 --retry 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, postgres_server  # noqa: E402
from bot.demo.kube.apiserver import FakeApiServer  # noqa: E402
from bot.demo.synapse import SynapseServer  # noqa: E402
from tests.integration.botprocess import BotProcess, http_status  # noqa: E402
from tests.integration.people import register_account  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

NAMESPACE = "readybot"


def replica(
    synapse: SynapseServer,
    account: Any,
    work: Path,
    kubeconfig: Path,
    store_url: str,
    n: int,
    lease: dict[str, float],
) -> BotProcess:
    state = work / f"replica-{n}"
    config: dict[str, Any] = {
        "matrix": {
            "homeserver": synapse.base_url,
            "user_id": account.user_id,
            "store_dir": str(state / "crypto"),
            "rooms": [],
            "sync_timeout_ms": 5_000,
        },
        "http": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(state / "unused.sqlite3")},
        "logging": {"level": "INFO"},
        "kubernetes": {"enabled": True, "in_cluster": False, "kubeconfig": str(kubeconfig)},
        "ha": {"enabled": True, "namespace": NAMESPACE, "identity": f"readybot-{n}", **lease},
    }
    env = {"READYBOT_MATRIX__PASSWORD": account.password, "READYBOT_STORE__URL": store_url}
    return BotProcess(config, state, env=env)


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def run(kills: int, lease: dict[str, float], work: Path) -> list[float]:
    with postgres_server() as postgres:
        return await run_on(postgres, kills, lease, work)


async def run_on(postgres: PostgresServer, kills: int, lease: dict[str, float], work: Path) -> list[float]:
    synapse = SynapseServer(work / "synapse", open_rate_limits=True)
    synapse.start()
    server = FakeApiServer().start()
    bots: list[BotProcess] = []
    try:
        store_url = postgres.url(postgres.create_database())
        server.store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        kubeconfig = server.write_kubeconfig(work / "kubeconfig")
        account = register_account(synapse, "readybot")
        bots = [replica(synapse, account, work, kubeconfig, store_url, n, lease) for n in (0, 1)]
        # The first makes the cross-signing identity; the second finds it in the store.
        bots[0].start()
        await bots[0].wait_ready()
        bots[1].start()
        await wait_for(lambda: "ready: serving" in bots[1].log_text(), 60, "the standby's first sync")
        times: list[float] = []
        for round_ in range(kills):
            leader = next(b for b in bots if http_status(b.port, "/readyz") == 200)
            standby = next(b for b in bots if b is not leader)
            assert await leader.kill() == -signal.SIGKILL
            killed = time.monotonic()
            await wait_for(lambda s=standby: http_status(s.port, "/readyz") == 200, 120, "takeover")
            times.append(time.monotonic() - killed)
            print(f"kill {round_ + 1}/{kills}: standby ready after {times[-1]:.1f} s", flush=True)
            leader.start()
            await wait_for(
                lambda b=leader: "ready: serving" in b.log_text().split("--- start")[-1], 60, "restart"
            )
        return times
    finally:
        for bot in bots:
            bot.close()
        server.stop()
        synapse.stop()


def _synced_since_start(bot: BotProcess) -> bool:
    """Whether the process's latest start has made its first sync (its log since the last start marker)."""
    return "ready: serving" in bot.log_text().split("--- start")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--retry", type=float, default=2.0)
    args = parser.parse_args()
    lease = {"lease_duration_s": args.lease, "renew_deadline_s": args.deadline, "retry_period_s": args.retry}
    with tempfile.TemporaryDirectory(prefix="readybot-failover-") as tmp:
        os.chmod(tmp, 0o700)
        times = asyncio.run(run(args.kills, lease, Path(tmp)))
    print(
        f"failover after SIGKILL over {len(times)} kills (lease {args.lease:g} s, deadline "
        f"{args.deadline:g} s, retry {args.retry:g} s): p50 {percentile(times, 50):.1f} s, "
        f"p99 {percentile(times, 99):.1f} s, min {min(times):.1f} s, max {max(times):.1f} s"
    )


if __name__ == "__main__":
    main()
