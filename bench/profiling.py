"""Profiling the bot process a benchmark starts: py-spy for CPU, memray for memory.

Both are dev dependencies (pyproject.toml). ``CpuProfile`` attaches py-spy to
a running bot for one phase (a burst) and writes its collapsed stacks (the
"raw" format flamegraph.pl and speedscope.app read); ``summarize_stacks``
turns them into the few lines a person reads first: the share of samples per
thread (the event loop, the SQLite worker, nio's executor) and the functions
where the samples were. ``memray_argv`` starts the bot under ``memray run``
instead; ``memray_report`` writes the flame graph of the memory held at the
high-water mark and prints memray's own summary.
"""

from __future__ import annotations

import linecache
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_BIN = Path(sys.executable).parent


class CpuProfile:
    """py-spy attached to ``pid`` until ``stop``: collapsed stacks in ``output``, one line per stack."""

    def __init__(self, pid: int, output: Path, rate: int = 200) -> None:
        self.output = output
        output.parent.mkdir(parents=True, exist_ok=True)
        # --threads puts the thread (name and id) at the root of each stack;
        # --gil would hide the SQLite worker's time outside the GIL, so not that.
        self._process = subprocess.Popen(
            [
                str(_BIN / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--threads",
                "--full-filenames",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> str:
        """Stop sampling (py-spy writes its file on SIGINT); a summary of what it saw."""
        self._process.send_signal(signal.SIGINT)
        try:
            _, err = self._process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return "py-spy did not stop"
        if not self.output.exists():
            return f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]}"
        return summarize_stacks(self.output.read_text())


_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):(?P<line>\d+)\)$")
# A thread parked on one of these (a queue, the selector, a lock) is waiting,
# not working, even if py-spy could not tell (its idle test misses some).
_WAITING = re.compile(r"\.get\(|\.select\(|\.wait\(|\.acquire\(|\.poll\(")


def _waiting(leaf: str) -> bool:
    frame = _FRAME.match(leaf)
    if frame is None:
        return False
    return _WAITING.search(linecache.getline(frame["path"], int(frame["line"]))) is not None


def _short(leaf: str) -> str:
    """``function (package/module.py)``: the frame without line number and site-packages prefix."""
    frame = _FRAME.match(leaf)
    if frame is None:
        return leaf
    path = re.sub(r"^.*/(site-packages|python3\.\d+)/", "", frame["path"])
    path = re.sub(r"^.*/(bot|commands|config)/", r"\1/", path)
    return f"{frame['function']} ({path})"


def _thread_role(stack: str) -> str:
    """What a thread does, told from its frames (py-spy names only the main thread)."""
    if "aiosqlite" in stack:
        return "SQLite worker (aiosqlite)"
    if "_worker (concurrent/futures/thread.py" in stack or "ThreadPoolExecutor" in stack:
        return "executor threads"
    if "run_forever" in stack or "asyncio" in stack or "<module> (bot/__main__.py" in stack:
        return "event loop"
    return "other threads"


def summarize_stacks(raw: str, top: int = 12) -> str:
    """Thread shares and the functions holding most samples (self time) in py-spy's raw output."""
    per_thread: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        leaf = stack.split(";")[-1]
        if _waiting(leaf):
            waiting += count
            continue
        per_thread[_thread_role(stack)] += count
        self_time[_short(leaf)] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; {waiting / total:.1%} of them waiting (queue, selector, lock)"]
    lines += [f"  {n / total:6.1%}  {role}" for role, n in per_thread.most_common()]
    lines.append("  where (self):")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in self_time.most_common(top)]
    return "\n".join(lines)


def memray_argv(output: Path) -> list[str]:
    """The argv prefix that runs ``-m bot …`` under memray, tracking into ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    # Python allocators traced too: otherwise pymalloc's arenas are charged to
    # whichever frame happened to need a new arena, not to what holds the memory.
    return [
        sys.executable,
        "-m",
        "memray",
        "run",
        "--quiet",
        "--force",
        "--trace-python-allocators",
        "--output",
        str(output),
    ]


def memray_report(capture: Path) -> str:
    """Write ``<capture>.html`` (memory held at the peak, by stack) and return memray's summary."""
    html = capture.with_suffix(".html")
    subprocess.run(
        [sys.executable, "-m", "memray", "flamegraph", "--force", "--output", str(html), str(capture)],
        check=False,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "memray", "stats", "--num-largest", "15", str(capture)],
        check=False,
        capture_output=True,
        text=True,
    )
    return f"{done.stdout.strip()}\nflame graph: {html}"
