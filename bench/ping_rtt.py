"""`!ping` round trip through a local Synapse: readybot vs a bare matrix-nio echo client.

Both run as their own processes, in their own encrypted room, answering the
same person's client; pings alternate between them so both see the same
machine noise. Prints p50/p95 of each, their ratio, and readybot's resident
memory after start-up.

    uv run python bench/ping_rtt.py [--pings 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, rss_mib, wait_ready  # noqa: E402
from bot.demo.synapse import SynapseServer, free_port  # noqa: E402
from tests.integration.people import Person, register_account  # noqa: E402


async def ping_once(person: Person, room: str, responder: str) -> float:
    began = time.perf_counter()
    event_id = await person.send_text(room, "!ping")
    await person.wait_for_reply(room, responder, after_event_id=event_id, timeout=30)
    return (time.perf_counter() - began) * 1000


async def run(pings: int, work: Path) -> None:
    synapse = SynapseServer(work / "synapse", open_rate_limits=True)
    synapse.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        person_account = register_account(synapse, "person")
        bot_account = register_account(synapse, "readybot")
        echo_account = register_account(synapse, "echo")
        person = await Person.login(
            synapse.base_url, person_account.user_id, person_account.password, work / "p"
        )
        bot_room = await person.create_room("bench readybot", encrypted=True, invite=[bot_account.user_id])
        echo_room = await person.create_room("bench echo", encrypted=True, invite=[echo_account.user_id])

        http_port = free_port()
        config = work / "readybot.yaml"
        config.write_text(
            f"matrix:\n  homeserver: {synapse.base_url}\n  user_id: '{bot_account.user_id}'\n"
            f"  store_dir: {work / 'bot' / 'crypto'}\n  rooms: ['{bot_room}']\n"
            f"http:\n  host: 127.0.0.1\n  port: {http_port}\n"
            f"store:\n  path: {work / 'bot' / 'readybot.sqlite3'}\nlogging:\n  level: WARNING\n"
        )
        env = {**os.environ, "READYBOT_MATRIX__PASSWORD": bot_account.password}
        bot = subprocess.Popen([sys.executable, "-m", "bot", "run", "-c", str(config)], env=env, cwd=ROOT)
        processes.append(bot)
        echo = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "echo_client.py"),
                "--homeserver",
                synapse.base_url,
                "--user",
                echo_account.user_id,
                "--password",
                echo_account.password,
                "--store",
                str(work / "echo"),
            ],
            stdout=subprocess.PIPE,
        )
        processes.append(echo)
        await asyncio.to_thread(wait_ready, http_port)
        started_rss = rss_mib(bot.pid)
        assert echo.stdout is not None
        await asyncio.to_thread(echo.stdout.readline)
        await person.wait_joined(bot_room, bot_account.user_id, timeout=30)
        await person.wait_joined(echo_room, echo_account.user_id, timeout=30)

        for _ in range(10):  # warm-up: key sharing, caches
            await ping_once(person, bot_room, bot_account.user_id)
            await ping_once(person, echo_room, echo_account.user_id)
        bot_ms: list[float] = []
        echo_ms: list[float] = []
        for _ in range(pings):
            bot_ms.append(await ping_once(person, bot_room, bot_account.user_id))
            echo_ms.append(await ping_once(person, echo_room, echo_account.user_id))
        end_rss = rss_mib(bot.pid)
        await person.close()

        report(pings, bot_ms, echo_ms, started_rss, end_rss)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        synapse.stop()


def report(pings: int, bot_ms: list[float], echo_ms: list[float], started_rss: float, end_rss: float) -> None:
    print(f"!ping round trip through Synapse, {pings} pings each, encrypted rooms")
    for name, values in (("readybot", bot_ms), ("bare nio echo", echo_ms)):
        p50, p95, mean = percentile(values, 50), percentile(values, 95), statistics.mean(values)
        print(f"  {name:<14} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   mean {mean:7.1f} ms")
    p50_ratio = percentile(bot_ms, 50) / percentile(echo_ms, 50)
    p95_ratio = percentile(bot_ms, 95) / percentile(echo_ms, 95)
    print(f"  ratio readybot/echo: p50 {p50_ratio:.2f}x   p95 {p95_ratio:.2f}x   (target p50 <= 1.15x)")
    print(f"  readybot RSS: {started_rss:.1f} MiB after start-up, {end_rss:.1f} MiB after the run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="readybot-bench-") as work:
        asyncio.run(run(args.pings, Path(work)))


if __name__ == "__main__":
    main()
