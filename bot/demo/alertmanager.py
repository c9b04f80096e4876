"""A real Alertmanager (Debian's prometheus-alertmanager) on 127.0.0.1, for the demo and the tests.

They write its configuration (receivers pointing at the bot's webhook),
start it (the tests also stop it, to simulate outages), and push alerts
through its API v2 as Prometheus would. It is optional: ``find_alertmanager``
says whether it is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from bot.demo.synapse import free_port, parent_death_preexec

BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")


class AlertmanagerError(RuntimeError):
    pass


def find_alertmanager() -> str | None:
    """The Alertmanager binary: $READYBOT_ALERTMANAGER, else on PATH, else /usr/bin."""
    override = os.environ.get("READYBOT_ALERTMANAGER")
    if override:
        return override
    for name in BINARY_NAMES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


class AlertmanagerServer:
    """One Alertmanager process; the port is kept across restarts, the data dir too."""

    def __init__(self, workdir: Path, config_yaml: str, *, port: int | None = None) -> None:
        binary = find_alertmanager()
        if binary is None:
            raise AlertmanagerError("Alertmanager is not installed (apt-get install prometheus-alertmanager)")
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = workdir / "alertmanager.yml"
        self.log_path = workdir / "alertmanager.log"
        self.write_config(config_yaml)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def write_config(self, config_yaml: str) -> None:
        self.config_path.write_text(config_yaml)

    def start(self, timeout: float = 20) -> None:
        if self.is_running:
            return
        log = self.log_path.open("ab")
        # As for Synapse: from the main thread, it dies with us even when we are killed.
        preexec = None
        if threading.current_thread() is threading.main_thread() and sys.platform == "linux":
            preexec = parent_death_preexec(os.getpid())
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.base_url}",
                "--cluster.listen-address=",  # no HA gossip: a single instance on loopback
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - only prctl and getppid, no locks
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AlertmanagerError(f"Alertmanager exited early:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AlertmanagerError(f"Alertmanager did not become ready:\n{self._tail()}")

    def stop(self, timeout: float = 10) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def reload(self) -> None:
        """Re-read the configuration (as a config change in a cluster would)."""
        self._request("POST", "/-/reload")

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- API v2 ------------------------------------------------------------

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Push alerts as Prometheus does; each needs at least ``labels``."""
        self._request("POST", "/api/v2/alerts", alerts)

    def fire(
        self, labels: dict[str, str], annotations: dict[str, str] | None = None, *, minutes: int = 60
    ) -> dict[str, Any]:
        """One firing alert ending ``minutes`` from now (Prometheus re-sends before then)."""
        now = datetime.now(UTC)
        alert = {
            "labels": labels,
            "annotations": annotations or {},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        }
        self.post_alerts([alert])
        return alert

    def resolve(self, labels: dict[str, str], annotations: dict[str, str] | None = None) -> None:
        """Resolve an alert: the same labels with endsAt in the past."""
        now = datetime.now(UTC)
        self.post_alerts(
            [
                {
                    "labels": labels,
                    "annotations": annotations or {},
                    "startsAt": (now - timedelta(minutes=5)).isoformat(),
                    "endsAt": (now - timedelta(seconds=1)).isoformat(),
                }
            ]
        )

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/api/v2/alerts")
        return result

    def silences(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/api/v2/silences")
        return result

    def _request(self, method: str, path: str, body: object = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - loopback only
            f"{self.base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise AlertmanagerError(f"{method} {path}: HTTP {error.code}: {error.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def receiver_config(
    bot_url: str,
    token: str,
    *,
    receiver: str = "readybot",
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    watchdog_repeat: str = "2s",
) -> str:
    """A configuration routing everything to the bot, with the Watchdog on its own fast route."""
    return f"""
route:
  receiver: {receiver}
  group_by: ['alertname', 'namespace']
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: {repeat_interval}
  routes:
    - receiver: {receiver}
      matchers: ['alertname = "Watchdog"']
      group_wait: 0s
      group_interval: 1s
      repeat_interval: {watchdog_repeat}
receivers:
  - name: {receiver}
    webhook_configs:
      - url: {bot_url}/hooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""
