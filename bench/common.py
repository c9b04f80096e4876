"""What every benchmark here needs: percentiles, the bot's readiness, its memory, a PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer


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


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children, live and reaped, in seconds (Linux /proc).

    For a server that forks a process per connection (PostgreSQL): a
    backend that exits between two readings moves from the children's sum
    into its parent's reaped-children times, so a difference of two
    readings counts it once.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: the 14th to the 17th fields.
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it exited while we looked
            continue
        if int(child[1]) == pid:
            total += (int(child[11]) + int(child[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL on 127.0.0.1, started as the tests start theirs; removed on exit."""
    # Imported here: tests.pgserver brings pytest, which the benches without PostgreSQL do not need.
    from tests.pgserver import PostgresServer, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="readybot-pg-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
