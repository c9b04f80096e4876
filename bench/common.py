"""What every benchmark here needs: percentiles, the bot's readiness, its memory."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (``pct`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def wait_ready(port: int, timeout: float = 60) -> None:
    """Block until the bot on 127.0.0.1:port answers /readyz with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("readybot did not become ready")


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux /proc)."""
    return _status_mib(pid, "VmRSS:")


def peak_rss_mib(pid: int) -> float:
    """The highest resident memory a process has had so far, in MiB (VmHWM)."""
    return _status_mib(pid, "VmHWM:")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds (Linux /proc)."""
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
