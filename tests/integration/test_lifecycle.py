"""The bot as a process: SIGTERM, refused credentials, webhooks while the homeserver is away."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bot.cli import EXIT_NOPERM, EXIT_OK
from bot.demo.synapse import SynapseServer, free_port
from tests.integration.people import Account, PersonFactory

ROOT = Path(__file__).resolve().parents[2]


def write_config(
    path: Path, synapse: SynapseServer, account: Account, state: Path, port: int, rooms: list[str]
) -> None:
    path.write_text(
        "matrix:\n"
        f"  homeserver: {synapse.base_url}\n"
        f"  user_id: '{account.user_id}'\n"
        f"  store_dir: {state / 'crypto'}\n"
        f"  rooms: {rooms!r}\n"
        "  sync_timeout_ms: 30000\n"
        f"http:\n  host: 127.0.0.1\n  port: {port}\n"
        f"store:\n  path: {state / 'readybot.sqlite3'}\n"
    )


def start(config: Path, password: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("READYBOT_")}
    env["READYBOT_MATRIX__PASSWORD"] = password
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "-c", str(config)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


async def wait_status(port: int, path: str, status: int, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(http_status, port, path) == status:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{path} never answered {status}")


async def test_sigterm_stops_the_process_cleanly_within_ten_seconds(
    synapse: SynapseServer, bot_account: Account, person_factory: PersonFactory, tmp_path: Path
) -> None:
    """A ready bot mid long-poll exits 0 within 10 s of SIGTERM, and says it stopped."""
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    port = free_port()
    config = tmp_path / "readybot.yaml"
    write_config(config, synapse, bot_account, tmp_path / "state", port, [room])
    process = start(config, bot_account.password)
    try:
        await wait_status(port, "/readyz", 200)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read().decode() if process.stdout else ""
    assert code == EXIT_OK, output
    assert took < 10
    assert "stopped" in output


async def test_refused_credentials_exit_77_without_leaking_the_password(
    synapse: SynapseServer, bot_account: Account, tmp_path: Path
) -> None:
    """A wrong password ends the process with 77 and the password appears nowhere in its output."""
    config = tmp_path / "readybot.yaml"
    write_config(config, synapse, bot_account, tmp_path / "state", free_port(), [])
    wrong = "definitely-wrong-password-4242"
    process = start(config, wrong)
    try:
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read().decode() if process.stdout else ""
    assert code == EXIT_NOPERM, output
    assert "refused" in output
    assert wrong not in output


async def test_http_is_up_and_not_ready_while_the_homeserver_is_unreachable(
    bot_account: Account, tmp_path: Path
) -> None:
    """With no homeserver, /healthz is 200 and /readyz 503 (the bot keeps retrying, webhooks stay open)."""
    port = free_port()
    config = tmp_path / "readybot.yaml"
    config.write_text(
        "matrix:\n"
        f"  homeserver: http://127.0.0.1:{free_port()}\n"
        f"  user_id: '{bot_account.user_id}'\n"
        f"  store_dir: {tmp_path / 'state' / 'crypto'}\n"
        f"http:\n  host: 127.0.0.1\n  port: {port}\n"
        f"store:\n  path: {tmp_path / 'state' / 'readybot.sqlite3'}\n"
    )
    process = start(config, bot_account.password)
    try:
        await wait_status(port, "/healthz", 200)
        assert await asyncio.to_thread(http_status, port, "/readyz") == 503
        await asyncio.sleep(1.5)
        assert process.poll() is None, "the bot must keep retrying, not exit"
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
    assert code == EXIT_OK
