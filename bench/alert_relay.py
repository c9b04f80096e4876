"""Alertmanager webhook → room: answer times, time to visible, and storms, against a local Synapse.

readybot runs as its own process with its default configuration (send
budget: burst 10, 12/min, as a production homeserver allows). A person's
E2EE client watches the encrypted room. In one run:

1. latency: alert groups posted one at a time, alternating with a bare
   matrix-nio client sending a message to the same room; for both, the time
   until the person's client sees it (the bare client's send-to-sync time is
   the floor), and the webhook's answer time. Sends are 100 ms apart, so
   each starts with the homeserver and all clients idle;
2. burst: 1,000 distinct groups (1-3 alerts each) posted 20 at a time: the
   answer times, whether every group became visible (in its own message or a
   digest line), none twice, and the time until the last one was visible;
3. raised limits: the same burst against a Synapse with its default limits
   where the bot user's rate limit is lifted with the admin API
   (``override_ratelimit``, what docs/operations.md tells operators to do
   when the bot falls behind) and the bot's ``send_budget`` raised to match:
   here nothing needs folding, so it measures how fast the outbox drains;
4. the same burst of 100 groups against a Synapse with its default
   rate limits (rc_message 0.2/s, burst 10) for the bot user, after one
   warm-up group (the bot's first message in a room sets up encryption) and
   a pause that refills the homeserver's bucket.

For each burst: last and median time until a group is visible (and the
median after its own webhook answer), when the last webhook was answered,
the bot process's CPU seconds during the burst and its RSS (idle before,
peak after). One table at the end. The bot runs from compiled bytecode, as
in the image. ``--py-spy DIR`` and ``--memray DIR`` profile the bot
(bench/profiling.py, bench/README.md); ``--timeline`` prints each burst's
progress every 0.25 s. ``--store postgresql`` keeps the bot's state in a
PostgreSQL started here on 127.0.0.1 (``store.url``); ``--store both`` runs
each chosen phase on SQLite, then on PostgreSQL, and adds their ratio.

    uv run python bench/alert_relay.py [--latency 100] [--burst 1000] [--raised 1000] [--limited 100]
    uv run python bench/alert_relay.py --quick   # smaller sizes, under 2 minutes
    uv run python bench/alert_relay.py --store both --latency 0 --burst 0 --limited 0 --raised 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nio import Event, RoomMessageNotice, RoomMessageText

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    cpu_seconds,
    peak_rss_mib,
    percentile,
    postgres_server,
    rss_mib,
    tree_cpu_seconds,
    wait_ready,
)
from bench.profiling import CpuProfile, memray_argv, memray_report  # noqa: E402
from bot.demo.synapse import SynapseServer, free_port  # noqa: E402
from tests.integration.people import Person, register_account  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

TOKEN = "bench-hook-token-5s8Kq"
MARK = re.compile(r"bench-(\d+)-(\d{6})")
VISIBLE_TIMEOUT_S = 180.0
ROUND_PAUSE_S = 0.1
MESSAGE_LIMIT = 65_536
# --timeline: print each burst's progress every 0.25 s.
TIMELINE = False
# --bot-log: the bot's log level (its log goes to this process's stderr).
BOT_LOG_LEVEL = "WARNING"
# --store: the backends, and the names the table gives them.
STORES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def group_payload(run: int, index: int, alerts: int) -> dict[str, Any]:
    """A webhook body as Alertmanager 0.25 sends it: one group, ``alerts`` firing alerts."""
    name = f"bench-{run}-{index:06}"
    group = {"alertname": "BenchAlert", "bench": name}
    items = []
    for n in range(alerts):
        labels = {**group, "instance": f"node-{n}", "severity": "warning", "job": "bench"}
        items.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": f"Synthetic alert {n} of {name}"},
                "startsAt": "2026-11-25T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph?g0.expr=up",
                "fingerprint": f"{run:04x}{index:06x}{n:02x}",
            }
        )
    common = {k: v for k, v in items[0]["labels"].items() if all(a["labels"].get(k) == v for a in items)}
    return {
        "receiver": "readybot",
        "status": "firing",
        "alerts": items,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="BenchAlert", bench="' + name + '"}',
        "truncatedAlerts": 0,
    }


# -- watching the room ------------------------------------------------------------


def text_of(event: Event) -> tuple[str | None, str]:
    """(the original message an edit replaces, or None; the text a client shows now)."""
    content = getattr(event, "source", {}).get("content", {})
    relates = content.get("m.relates_to", {})
    if relates.get("rel_type") == "m.replace":
        return relates.get("event_id"), content.get("m.new_content", {}).get("body", "")
    return None, getattr(event, "body", "")


@dataclass
class Visibility:
    """Which bench groups the person's client shows, in which message, since when."""

    run: int
    first_seen: dict[int, float] = field(default_factory=dict)
    # group index -> original messages whose current text shows it
    shown_in: dict[int, set[str]] = field(default_factory=dict)
    # Every event of the bot's seen: messages, edits, thread lines.
    events: int = 0
    _current: dict[str, set[int]] = field(default_factory=dict)
    _position: int = 0

    def scan(self, person: Person, room: str, bot: str) -> None:
        received = person.received
        now = time.perf_counter()
        for room_id, event in received[self._position :]:
            if room_id != room or getattr(event, "sender", None) != bot:
                continue
            if not isinstance(event, RoomMessageNotice | RoomMessageText):
                continue
            self.events += 1
            relates = event.source.get("content", {}).get("m.relates_to", {})
            if relates.get("rel_type") == "m.thread":
                continue
            target, text = text_of(event)
            original = target or event.event_id
            groups = {int(m.group(2)) for m in MARK.finditer(text) if int(m.group(1)) == self.run}
            for index in self._current.get(original, set()) - groups:
                self.shown_in[index].discard(original)
            self._current[original] = groups
            for index in groups:
                self.shown_in.setdefault(index, set()).add(original)
                self.first_seen.setdefault(index, now)
        self._position = len(received)

    def visible(self) -> set[int]:
        return {i for i, where in self.shown_in.items() if where}

    def duplicated(self) -> set[int]:
        return {i for i, where in self.shown_in.items() if len(where) > 1}


# -- posting ------------------------------------------------------------------------


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """POST one notification; its answer time in ms (raises unless 200)."""
    began = time.perf_counter()
    async with session.post(
        url, data=body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"webhook answered {response.status}")
    return (time.perf_counter() - began) * 1000


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[float], float, list[float]]:
    """Post every body, ``concurrency`` at a time.

    (answer times in ms, wall-clock start, each body's answer in seconds after the start).
    """
    times: list[float] = []
    answered = [0.0] * len(bodies)
    queue = list(enumerate(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.time()

        async def worker() -> None:
            while queue:
                index, body = queue.pop(0)
                times.append(await post(session, url, body))
                answered[index] = time.time() - began

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times, began, answered


def burst_in_process(
    url: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], float, list[float]]:
    """``post_all`` in a process of its own; (answer times, perf_counter when the burst began, answered).

    Its own process: the answer times must measure the bot, not this
    process's client decrypting events (or the GIL it would share with it).
    """
    request = json.dumps({"url": url, "concurrency": concurrency, "bodies": [b.decode() for b in bodies]})
    done = subprocess.run(
        [sys.executable, __file__, "--post-worker"], input=request.encode(), capture_output=True, check=True
    )
    result = json.loads(done.stdout)
    began = time.perf_counter() - (time.time() - result["began"])
    return result["times"], began, result["answered"]


def post_worker() -> None:
    """The child side of ``burst_in_process``: a request on stdin, the result on stdout."""
    request = json.loads(sys.stdin.read())
    bodies = [b.encode() for b in request["bodies"]]
    times, began, answered = asyncio.run(post_all(request["url"], bodies, request["concurrency"]))
    json.dump({"times": times, "began": began, "answered": answered}, sys.stdout)


# -- one homeserver ------------------------------------------------------------------


@dataclass
class Profiling:
    """Where to write profiles of the bot (None: not profiled)."""

    # py-spy attached during each burst: DIR/<phase>.txt (collapsed stacks).
    cpu_dir: Path | None = None
    # The bot run under memray: DIR/<phase>.bin, its flame graph DIR/<phase>.html.
    memory_dir: Path | None = None


@dataclass
class Setup:
    synapse: SynapseServer
    person: Person
    bare: Person
    room: str
    bot_user: str
    url: str
    bot: subprocess.Popen[bytes]
    name: str = ""
    profiling: Profiling = field(default_factory=Profiling)
    # The PostgreSQL server holding the bot's state (its postmaster), None on SQLite.
    db_pid: int | None = None


# A send budget no homeserver limit lifted by override_ratelimit would contradict.
RAISED_BUDGET = "  send_budget:\n    burst: 100000\n    per_minute: 1000000\n"


async def lift_rate_limit(synapse: SynapseServer, admin: Person, user_id: str) -> None:
    """Lift one user's message rate limit: Synapse's admin API, as an operator would."""
    url = f"{synapse.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit"
    headers = {"Authorization": f"Bearer {admin.client.access_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"messages_per_second": 0, "burst_count": 0}, headers=headers) as response,
    ):
        if response.status != 200:
            raise RuntimeError(f"override_ratelimit answered {response.status}: {await response.text()}")


def compile_bytecode() -> None:
    """Compile the bot and its dependencies to bytecode once, as the image does (UV_COMPILE_BYTECODE=1).

    Without it, a checkout run with PYTHONDONTWRITEBYTECODE compiles some 800
    modules from source at every start, which costs the bot ~7 MiB of RSS
    that a deployed bot never has.
    """
    targets = [ROOT / "bot", ROOT / "commands", ROOT / "config", *map(Path, site.getsitepackages())]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *map(str, filter(Path.is_dir, targets))],
        check=False,
        stdout=subprocess.DEVNULL,
    )


class Store:
    """Where the bots of a run keep their state: the SQLite file, or a fresh database on one PostgreSQL."""

    def __init__(self, postgres: PostgresServer | None) -> None:
        self.postgres = postgres

    @property
    def backend(self) -> str:
        return "sqlite" if self.postgres is None else "postgresql"

    def new_url(self) -> str | None:
        """A fresh, empty database for one bot (None: SQLite, its file in the phase's directory)."""
        if self.postgres is None:
            return None
        return self.postgres.url(self.postgres.create_database())

    def server_pid(self) -> int | None:
        """The postmaster's pid, whose process tree does the database's work (None on SQLite)."""
        if self.postgres is None:
            return None
        return int((self.postgres.data / "postmaster.pid").read_text(encoding="utf-8").split()[0])


async def set_up(
    work: Path,
    *,
    open_limits: bool,
    raised: bool = False,
    profiling: Profiling | None = None,
    store: Store | None = None,
) -> Setup:
    profiling = profiling or Profiling()
    store = store or Store(None)
    synapse = SynapseServer(work / "synapse", open_rate_limits=open_limits)
    synapse.start()
    person_account = register_account(synapse, "person", admin=raised)
    bare_account = register_account(synapse, "bare")
    bot_account = register_account(synapse, "readybot")
    person = await Person.login(synapse.base_url, person_account.user_id, person_account.password, work / "p")
    bare = await Person.login(synapse.base_url, bare_account.user_id, bare_account.password, work / "b")
    room = await person.create_room(
        "bench alerts", encrypted=True, invite=[bot_account.user_id, bare_account.user_id]
    )
    await bare.join(room)
    if raised:
        await lift_rate_limit(synapse, person, bot_account.user_id)
    port = free_port()
    config = work / "readybot.yaml"
    config.write_text(
        f"matrix:\n  homeserver: {synapse.base_url}\n  user_id: '{bot_account.user_id}'\n"
        f"  store_dir: {work / 'bot' / 'crypto'}\n  rooms: ['{room}']\n"
        f"http:\n  host: 127.0.0.1\n  port: {port}\n"
        f"store:\n  path: {work / 'bot' / 'readybot.sqlite3'}\nlogging:\n  level: {BOT_LOG_LEVEL}\n"
        f"alertmanager:\n  enabled: true\n  default_rooms: ['{room}']\n" + (RAISED_BUDGET if raised else "")
    )
    env = {
        **os.environ,
        "READYBOT_MATRIX__PASSWORD": bot_account.password,
        "READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER": TOKEN,
    }
    store_url = store.new_url()
    if store_url is not None:
        # A secret in production, so the environment, as a deployment passes it; store.path goes unused.
        env["READYBOT_STORE__URL"] = store_url
    command = [sys.executable, "-m", "bot", "run", "-c", str(config)]
    if profiling.memory_dir is not None:
        # memray runs the module in its own process: the pid is still the bot's.
        command = [*memray_argv(profiling.memory_dir / f"{work.name}.bin"), *command[1:]]
    bot = subprocess.Popen(command, env=env, cwd=ROOT)
    await asyncio.to_thread(wait_ready, port)
    await person.wait_joined(room, bot_account.user_id, timeout=60)
    await bare.wait_joined(room, person_account.user_id, timeout=60)
    return Setup(
        synapse,
        person,
        bare,
        room,
        bot_account.user_id,
        f"http://127.0.0.1:{port}/hooks/alertmanager",
        bot,
        work.name,
        profiling,
        store.server_pid(),
    )


async def tear_down(setup: Setup) -> None:
    await setup.person.close()
    await setup.bare.close()
    setup.bot.terminate()
    try:
        setup.bot.wait(timeout=15)
    except subprocess.TimeoutExpired:
        setup.bot.kill()
    setup.synapse.stop()
    if setup.profiling.memory_dir is not None:
        print(f"memray, bot of the {setup.name!r} phase:")
        print(memray_report(setup.profiling.memory_dir / f"{setup.name}.bin"))


async def bare_send(bare: Person, room: str, body: str) -> None:
    """What a bare nio client does to send: encrypt and PUT (no extra key queries)."""
    client = bare.client
    if client.olm is not None and client.should_query_keys:
        await client.keys_query()
    await client.room_send(
        room, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
    )


async def timed_until_seen(
    person: Person, room: str, marker: str, send: Callable[[], Awaitable[Any]]
) -> float:
    since = person.mark()
    began = time.perf_counter()
    await send()
    await person.wait_for(
        lambda e: marker in (getattr(e, "body", "") or ""), room_id=room, since=since, timeout=30
    )
    return (time.perf_counter() - began) * 1000


async def latency(setup: Setup, count: int, run: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"answer": [], "visible": [], "bare": []}
    async with aiohttp.ClientSession() as session:
        for index in range(-10, count):  # 10 warm-up rounds: key sharing, caches
            body = json.dumps(group_payload(run, index + 10, 1)).encode()
            answer: list[float] = []

            async def send_hook(body: bytes = body, answer: list[float] = answer) -> None:
                answer.append(await post(session, setup.url, body))

            marker = f"bench-{run}-{index + 10:06}"
            # Each send starts with everyone idle: without the pause, it would
            # start exactly when the bot's own sync delivers the last message
            # (the person's and the bot's long polls return together).
            await asyncio.sleep(ROUND_PAUSE_S)
            visible = await timed_until_seen(setup.person, setup.room, marker, send_hook)
            bare_marker = f"bare-{run}-{index + 10:06}"
            await asyncio.sleep(ROUND_PAUSE_S)
            bare = await timed_until_seen(
                setup.person,
                setup.room,
                bare_marker,
                lambda m=bare_marker: bare_send(setup.bare, setup.room, m),
            )
            if index >= 0:
                results["answer"].append(answer[0])
                results["visible"].append(visible)
                results["bare"].append(bare)
    return results


@dataclass
class BurstResult:
    groups: int
    answers: list[float]
    visible: int
    duplicated: int
    last_visible_s: float | None
    messages: int
    events: int
    median_visible_s: float | None = None
    cpu_s: float = float("nan")
    rss_idle_mib: float = float("nan")
    rss_peak_mib: float = float("nan")
    # When the last webhook was answered, and the median of each group's
    # time from its own 200 to visible (what the bot adds to the burst).
    all_answered_s: float = float("nan")
    median_after_answer_s: float | None = None
    # Seconds after the start -> (groups answered, groups visible, bot events seen) by then.
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    # CPU seconds of the PostgreSQL server's processes during the burst (None on SQLite,
    # whose work is the bot's own CPU).
    db_cpu_s: float | None = None


async def warm_up(setup: Setup, run: int, refill_s: float) -> None:
    """One group first, as a bot that has been running would have sent before.

    The bot's first message in the room creates and shares its encryption
    session (CPU-heavy, once); then wait ``refill_s`` for the homeserver's
    rate-limit bucket to be full again.
    """
    async with aiohttp.ClientSession() as session:
        body = json.dumps(group_payload(run, 0, 1)).encode()
        marker = f"bench-{run}-{0:06}"
        await timed_until_seen(setup.person, setup.room, marker, lambda: post(session, setup.url, body))
    await asyncio.sleep(refill_s)


async def burst(setup: Setup, groups: int, run: int, concurrency: int = 20) -> BurstResult:
    rng = random.Random(run)
    bodies = [json.dumps(group_payload(run, i, rng.randint(1, 3))).encode() for i in range(groups)]
    seen = Visibility(run, _position=len(setup.person.received))  # only what comes from now on
    samples: list[tuple[float, int, int]] = []
    pid = setup.bot.pid
    rss_idle, cpu_before, rss_peak = rss_mib(pid), cpu_seconds(pid), 0.0
    db_before = None if setup.db_pid is None else tree_cpu_seconds(setup.db_pid)
    cpu_dir = setup.profiling.cpu_dir
    spy = None if cpu_dir is None else CpuProfile(pid, cpu_dir / f"{setup.name}.txt")
    posting = asyncio.create_task(asyncio.to_thread(burst_in_process, setup.url, bodies, concurrency))
    deadline = time.perf_counter() + VISIBLE_TIMEOUT_S
    # Scan while posting too: a group's visibility time is when it was seen.
    while (not posting.done() or len(seen.visible()) < groups) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
        seen.scan(setup.person, setup.room, setup.bot_user)
        samples.append((time.perf_counter(), len(seen.first_seen), seen.events))
        rss_peak = max(rss_peak, rss_mib(pid))
    cpu = cpu_seconds(pid) - cpu_before
    db_cpu = None if setup.db_pid is None or db_before is None else tree_cpu_seconds(setup.db_pid) - db_before
    if spy is not None:
        print(f"py-spy, bot during the {setup.name!r} burst ({spy.output}):\n{spy.stop()}")
    answers, began, answered = await posting
    # A little longer: a group shown twice would show up now.
    await asyncio.sleep(2)
    seen.scan(setup.person, setup.room, setup.bot_user)
    visible = seen.visible()
    last = max(seen.first_seen[i] for i in visible) - began if len(visible) == groups else None
    times = [seen.first_seen[i] - began for i in visible]
    median = percentile(times, 50) if len(visible) == groups else None
    lags = [seen.first_seen[i] - began - answered[i] for i in visible]
    median_lag = percentile(lags, 50) if len(visible) == groups else None
    timeline = []
    for at in (t / 4 for t in range(1, 4 * 60)):
        shown = [(n, e) for t, n, e in samples if t - began <= at]
        timeline.append((at, sum(1 for a in answered if a <= at), *(shown[-1] if shown else (0, 0))))
        if shown and shown[-1][0] >= groups:
            break
    originals = {o for where in seen.shown_in.values() for o in where}
    # VmHWM: the process's peak, in case a spike fell between two samples.
    peak = max(rss_peak, peak_rss_mib(pid))
    return BurstResult(
        groups,
        answers,
        len(visible),
        len(seen.duplicated()),
        last,
        len(originals),
        seen.events,
        median,
        cpu,
        rss_idle,
        peak,
        max(answered),
        median_lag,
        timeline,
        db_cpu,
    )


# -- reporting -------------------------------------------------------------------------


def line(name: str, values: list[float]) -> str:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   max {max(values):7.1f} ms   ({name}, n={len(values)})"


def report_latency(results: dict[str, list[float]]) -> None:
    print("latency (groups posted one at a time; open rate limits)")
    print("  webhook answer        " + line("POST → 200", results["answer"]))
    print("  alert visible         " + line("POST → person's client shows it", results["visible"]))
    print("  bare client message   " + line("send → person's client shows it", results["bare"]))
    gap = percentile(results["visible"], 50) - percentile(results["bare"], 50)
    print(f"  visible p50 - bare p50: {gap:+.1f} ms (target <= +5 ms)")


def report_burst(title: str, result: BurstResult, target_s: float) -> None:
    print(title)
    print("  webhook answer        " + line("POST → 200", result.answers))
    last = "never" if result.last_visible_s is None else f"{result.last_visible_s:.1f} s"
    print(
        f"  visible {result.visible}/{result.groups}, lost {result.groups - result.visible}, "
        f"shown twice {result.duplicated}; {result.messages} messages, {result.events} events in all"
    )
    print(f"  last group visible after {last} (target <= {target_s:.0f} s)")
    if TIMELINE:
        print("  timeline: seconds, groups answered, groups visible, bot events seen")
        for at, answered, shown, events in result.timeline:
            print(f"    {at:5.2f}  {answered:5d}  {shown:5d}  {events:4d}")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _ratio(pg: float | None, lite: float | None) -> str:
    """PostgreSQL's figure over SQLite's, as ``1.23x``; ``-`` where either is missing or SQLite's is 0."""
    if pg is None or lite is None or lite == 0 or math.isnan(pg) or math.isnan(lite):
        return "-"
    return f"{pg / lite:.2f}x"


def _store_cpu(b: BurstResult) -> float:
    """CPU the bot and its store used: SQLite works inside the bot, PostgreSQL in its own processes too."""
    return b.cpu_s + (b.db_cpu_s or 0.0)


# The table's rows: name, a burst's cell, and PostgreSQL's over SQLite's ("" where no ratio means anything).
Row = tuple[str, Callable[[BurstResult], str], Callable[[BurstResult, BurstResult], str]]


def _seconds_row(name: str, value: Callable[[BurstResult], float | None]) -> Row:
    """A row of seconds, and their ratio."""
    return (name, lambda b: _seconds(value(b)), lambda pg, lite: _ratio(value(pg), value(lite)))


ROWS: list[Row] = [
    ("groups (alerts posted 20 at a time)", lambda b: str(b.groups), lambda pg, lite: ""),
    (
        "webhook answer p50 / p99",
        lambda b: f"{percentile(b.answers, 50):.1f} / {percentile(b.answers, 99):.1f} ms",
        lambda pg, lite: (
            f"{_ratio(percentile(pg.answers, 50), percentile(lite.answers, 50))} / "
            f"{_ratio(percentile(pg.answers, 99), percentile(lite.answers, 99))}"
        ),
    ),
    (
        "visible / lost / shown twice",
        lambda b: f"{b.visible} / {b.groups - b.visible} / {b.duplicated}",
        lambda pg, lite: "",
    ),
    _seconds_row("last group visible after", lambda b: b.last_visible_s),
    _seconds_row("median group visible after", lambda b: b.median_visible_s),
    _seconds_row("all webhooks answered after", lambda b: b.all_answered_s),
    _seconds_row("median group visible after its 200", lambda b: b.median_after_answer_s),
    ("messages / events", lambda b: f"{b.messages} / {b.events}", lambda pg, lite: ""),
    ("bot CPU during the burst", lambda b: f"{b.cpu_s:.1f} s", lambda pg, lite: _ratio(pg.cpu_s, lite.cpu_s)),
    (
        "bot RSS idle / peak",
        lambda b: f"{b.rss_idle_mib:.0f} / {b.rss_peak_mib:.0f} MiB",
        lambda pg, lite: (
            f"{_ratio(pg.rss_idle_mib, lite.rss_idle_mib)} / {_ratio(pg.rss_peak_mib, lite.rss_peak_mib)}"
        ),
    ),
]
# Shown only when a column is on PostgreSQL: there part of the store's work is the server's,
# where SQLite's is inside the bot's own CPU.
STORE_CPU_ROW: Row = (
    "bot + database CPU",
    lambda b: (
        f"{b.cpu_s:.1f} s (SQLite is in the bot)"
        if b.db_cpu_s is None
        else f"{_store_cpu(b):.1f} s ({b.db_cpu_s:.1f} s server)"
    ),
    lambda pg, lite: _ratio(_store_cpu(pg), _store_cpu(lite)),
)


def table_columns(bursts: dict[str, dict[str, BurstResult]]) -> tuple[list[Row], dict[str, list[str]]]:
    """The rows, and each column's head and cells: a column per burst, and PostgreSQL / SQLite where both ran.

    On SQLite alone the heads are the phases' names, as before ``--store``.
    """
    results = [b for by_store in bursts.values() for b in by_store.values()]
    rows = [*ROWS, STORE_CPU_ROW] if any(b.db_cpu_s is not None for b in results) else ROWS
    columns: dict[str, list[str]] = {}
    for phase, by_store in bursts.items():
        for backend, result in by_store.items():
            head = phase if list(by_store) == ["sqlite"] else f"{phase}: {STORES[backend]}"
            columns[head] = [cell(result) for _, cell, _ in rows]
        if set(by_store) == set(STORES):
            pg, lite = by_store["postgresql"], by_store["sqlite"]
            columns["PostgreSQL / SQLite"] = [ratio(pg, lite) for _, _, ratio in rows]
    return rows, columns


def report_table(
    latencies: dict[str, dict[str, list[float]]], bursts: dict[str, dict[str, BurstResult]]
) -> None:
    """Every phase in one table: one column per burst and store, and the ratio where both stores ran."""
    rows, columns = table_columns(bursts)
    heads = list(columns)
    width = max(len(r[0]) for r in rows)
    cols = [max(len(h), *(len(cell) for cell in columns[h])) for h in heads]
    print()
    print(
        "| " + " | ".join(["".ljust(width), *(h.ljust(c) for h, c in zip(heads, cols, strict=True))]) + " |"
    )
    print("|" + "|".join("-" * (w + 2) for w in [width, *cols]) + "|")
    for n, (name, _, _) in enumerate(rows):
        cells = [name.ljust(width), *(columns[h][n].ljust(c) for h, c in zip(heads, cols, strict=True))]
        print("| " + " | ".join(cells) + " |")
    for backend, latency in latencies.items():
        answer, visible, bare = latency["answer"], latency["visible"], latency["bare"]
        where = "" if list(latencies) == ["sqlite"] else f" on {STORES[backend]}"
        print(
            f"latency{where}, one group at a time (n={len(answer)}): "
            f"answer p99 {percentile(answer, 99):.1f} ms, "
            f"visible p50 {percentile(visible, 50):.1f} ms, bare client p50 {percentile(bare, 50):.1f} ms"
        )


@contextlib.contextmanager
def stores_for(names: list[str]) -> Iterator[list[Store]]:
    """The stores to run on, in order; a PostgreSQL is started (and removed after) only if asked for."""
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(postgres_server()) if "postgresql" in names else None
        yield [Store(None if name == "sqlite" else postgres) for name in names]


def on_store(store: Store, stores: list[Store]) -> str:
    """`` (PostgreSQL)`` after a title; nothing on SQLite alone, whose output is as before ``--store``."""
    return "" if [s.backend for s in stores] == ["sqlite"] else f" ({STORES[store.backend]})"


def phase_dir(work: Path, phase: str, store: Store) -> Path:
    """A phase's directory; its name names the profiles (``raised.txt`` on SQLite, as before ``--store``)."""
    return work / (phase if store.backend == "sqlite" else f"{phase}-{store.backend}")


async def run(
    latency_count: int,
    burst_groups: int,
    raised_groups: int,
    limited_groups: int,
    work: Path,
    profiling: Profiling,
    stores: list[Store],
) -> None:
    bursts: dict[str, dict[str, BurstResult]] = {}
    latencies: dict[str, dict[str, list[float]]] = {}
    # Each phase on each store, one after the other: the two figures of a ratio are
    # measured minutes apart, not an hour apart.
    for store in stores if latency_count or burst_groups else []:
        on = on_store(store, stores)
        setup = await set_up(
            phase_dir(work, "open", store), open_limits=True, profiling=profiling, store=store
        )
        try:
            if latency_count:
                latencies[store.backend] = await latency(setup, latency_count, run=1)
                if on:
                    print(f"latency{on}:")
                report_latency(latencies[store.backend])
            if burst_groups:
                result = await burst(setup, burst_groups, run=2)
                bursts.setdefault("open limits, default budget", {})[store.backend] = result
                title = f"burst of {burst_groups} groups, concurrency 20, open rate limits{on}"
                report_burst(title, result, 10)
        finally:
            await tear_down(setup)
    for store in stores if raised_groups else []:
        on = on_store(store, stores)
        setup = await set_up(
            phase_dir(work, "raised", store), open_limits=False, raised=True, profiling=profiling, store=store
        )
        try:
            await warm_up(setup, run=5, refill_s=0.0)
            result = await burst(setup, raised_groups, run=6)
            bursts.setdefault("raised limits + budget", {})[store.backend] = result
            title = (
                f"burst of {raised_groups} groups, concurrency 20, bot rate limit lifted, budget raised{on}"
            )
            report_burst(title, result, 5)
        finally:
            await tear_down(setup)
    for store in stores if limited_groups else []:
        on = on_store(store, stores)
        setup = await set_up(
            phase_dir(work, "limited", store), open_limits=False, profiling=profiling, store=store
        )
        try:
            # Synapse's rc_message refills 0.2/s: 6 s makes the burst of 10 whole again.
            await warm_up(setup, run=4, refill_s=6.0)
            result = await burst(setup, limited_groups, run=3)
            bursts.setdefault("default limits", {})[store.backend] = result
            report_burst(
                f"burst of {limited_groups} groups, concurrency 20, "
                f"Synapse default rate limits for the bot{on}",
                result,
                60,
            )
        finally:
            await tear_down(setup)
    report_table(latencies, bursts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=int, default=100, help="groups posted one at a time")
    parser.add_argument("--burst", type=int, default=1_000, help="groups in the open-limits burst")
    parser.add_argument("--raised", type=int, default=1_000, help="groups in the raised-limits burst")
    parser.add_argument("--limited", type=int, default=100, help="groups in the default-limits burst")
    parser.add_argument(
        "--quick", action="store_true", help="latency 10, burst 200, raised 500, limited 100: under 2 minutes"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="attach py-spy to the bot during each burst: DIR/<phase>.txt (collapsed stacks) and a summary",
    )
    parser.add_argument(
        "--memray",
        type=Path,
        metavar="DIR",
        help="run the bot under memray: DIR/<phase>.bin, DIR/<phase>.html (RSS figures then include memray)",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="print each burst's progress (answered, visible) every 0.25 s"
    )
    parser.add_argument(
        "--bot-log", default="WARNING", choices=["DEBUG", "INFO", "WARNING"], help="the bot's log level"
    )
    parser.add_argument(
        "--store",
        default="sqlite",
        choices=["sqlite", "postgresql", "both"],
        help="where the bot keeps its state: the SQLite file, a PostgreSQL started here (store.url), "
        "or each phase on both with the ratio PostgreSQL / SQLite",
    )
    parser.add_argument("--post-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.post_worker:
        post_worker()
        return
    if args.quick:
        args.latency, args.burst, args.raised, args.limited = 10, 200, 500, 100
    # Switches set once from the command line.
    global TIMELINE, BOT_LOG_LEVEL
    TIMELINE, BOT_LOG_LEVEL = args.timeline, args.bot_log
    compile_bytecode()
    profiling = Profiling(cpu_dir=args.py_spy, memory_dir=args.memray)
    names = list(STORES) if args.store == "both" else [args.store]
    with tempfile.TemporaryDirectory(prefix="readybot-bench-") as work, stores_for(names) as stores:
        asyncio.run(run(args.latency, args.burst, args.raised, args.limited, Path(work), profiling, stores))


if __name__ == "__main__":
    main()
