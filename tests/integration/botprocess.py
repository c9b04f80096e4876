"""The real bot as a separate process: started from a config dict, killed with SIGKILL, restarted.

The fault and security suites need what an in-process bot cannot give: a
crash that skips every ``finally`` (SIGKILL), and the process's whole output
to search for secrets. Each start appends to one log file, so a test can read
everything the bot ever printed across its restarts.
"""

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
from typing import IO, Any

import yaml

from bot.demo.synapse import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0


class BotProcess:
    """``python -m bot run`` on a YAML file written from ``config``; secrets go in through ``env``.

    ``config["http"]["port"]`` is fixed here once, so a restart keeps the same
    webhook URL (a sender retrying after a crash finds the bot again).
    """

    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        http = config.setdefault("http", {})
        http.setdefault("host", "127.0.0.1")
        if not http.get("port"):
            http["port"] = free_port()
        self.port: int = http["port"]
        self.config_path = workdir / "readybot.yaml"
        self.log_path = workdir / "bot.log"
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        """Spawn the process (the config file is rewritten from ``self.config`` each time)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("READYBOT_")} | self.env
        self.starts += 1
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts} ---\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "-c", str(self.config_path)],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until /readyz answers 200; fails with the log's tail if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the bot exited with {self.process.returncode}:\n{self.log_tail()}")
            if await asyncio.to_thread(http_status, self.port, "/readyz") == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the bot was not ready within {timeout_s} s:\n{self.log_tail()}")

    async def wait_http(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the HTTP server answers at all (/healthz 200), ready or not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await asyncio.to_thread(http_status, self.port, "/healthz") == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the bot's HTTP server did not answer within {timeout_s} s:\n{self.log_tail()}")

    async def wait_exit(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Until the process ends by itself (a refused start); its exit code."""
        process = self.process
        assert process is not None
        try:
            return await asyncio.to_thread(process.wait, timeout_s)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    async def kill(self) -> int:
        """SIGKILL: no handler, no drain, no flush; whatever was not committed is gone."""
        return await self._signal(signal.SIGKILL)

    async def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        return await self._signal(signal.SIGTERM, timeout_s)

    async def _signal(self, signum: int, timeout_s: float = 15.0) -> int:
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signum)
        try:
            code = await asyncio.to_thread(process.wait, timeout_s)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if self._log is not None:
                self._log.close()
                self._log = None
        return code

    def close(self) -> None:
        """Teardown: kill whatever is still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def http_status(port: int, path: str, timeout_s: float = 1.0) -> int:
    """The status of a GET to 127.0.0.1:port, 0 if nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0
