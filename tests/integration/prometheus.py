"""A real Prometheus (Debian's ``prometheus``) on 127.0.0.1 for the readiness tests.

The tests give it rule files (alerting rules such as the plan's, recording
rules that stand in for exporters: ``vector(1)``-style series it can answer
within a second), so the readiness probes meet the real HTTP API and the real
PromQL engine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

from bot.demo.synapse import free_port

PROMETHEUS_MISSING = "Prometheus is not installed: apt-get install prometheus (or set READYBOT_PROMETHEUS)"


class PrometheusError(RuntimeError):
    pass


def find_prometheus() -> str | None:
    """The binary: $READYBOT_PROMETHEUS, else ``prometheus`` on PATH, else /usr/bin/prometheus."""
    override = os.environ.get("READYBOT_PROMETHEUS")
    if override:
        return override
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None


class PrometheusServer:
    """One Prometheus process evaluating its rules every second."""

    def __init__(self, workdir: Path, rules_yaml: str) -> None:
        binary = find_prometheus()
        if binary is None:
            raise PrometheusError(PROMETHEUS_MISSING)
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (workdir / "rules.yml").write_text(rules_yaml)
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Self:
        log = (self.workdir / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrometheusError(f"Prometheus exited early:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise PrometheusError(f"Prometheus did not become ready:\n{self._tail()}")

    def stop(self, timeout: float = 10) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            body = json.loads(response.read())
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 15) -> None:
        """Until ``expr`` returns a series: the rules it needs have been evaluated."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(expr):
                return
            time.sleep(0.1)
        raise PrometheusError(f"{expr} returned nothing within {timeout} s:\n{self._tail()}")

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(
                (self.workdir / "prometheus.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
