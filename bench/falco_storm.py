"""A Falco storm through falcosidekick's webhook, against a Synapse with its default rate limits.

readybot runs as its own process with the Falco relay on and its default
send budget (burst 10, 12/min: what Synapse's default ``rc_message`` allows a
user). A person's E2EE client watches the encrypted room. The storm is
``--events`` events spread evenly over ``--seconds`` (10,000 over 60 s by
default), POSTed as falcosidekick does (one event per request, many in
flight), in a realistic mix:

- a few noisy rules, each from a handful of pods (most of the events), some
  of them below the default minimum priority (warning);
- ~120 distinct kinds (unique pods of a CronJob, a crypto miner's short-lived
  containers), a few events each;
- two falcosidekick test events.

It prints the events accepted per second, the webhook's answer times, the
Matrix events the bot sent (in the storm's minute, and until it is quiet),
whether that is within the homeserver's default limit, and whether every
event is accounted for: in the counters (sum over outcomes = events
accepted) and in the room (the counts its messages and digest show add up to
every event routed there).

    uv run python bench/falco_storm.py [--events 10000] [--seconds 60] [--concurrency 32] [--show]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from nio import RoomMessageNotice

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, wait_ready  # noqa: E402
from bot.demo.synapse import SynapseServer, free_port  # noqa: E402
from tests.integration.people import Person, register_account  # noqa: E402

TOKEN = "bench-falco-token-3Jw9e"
# Synapse's default rc_message for a user: 0.2 messages/s after a burst of 10.
RC_BURST = 10
RC_PER_SECOND = 0.2
QUIET_TIMEOUT_S = 600.0

# (rule, priority, pods, share of the noisy events)
NOISY = [
    (
        "Read sensitive file untrusted",
        "Warning",
        ["vault-agent-7f9c-1", "vault-agent-7f9c-2", "vault-agent-7f9c-3"],
        35,
    ),
    ("Write below etc", "Error", ["config-sync-0", "config-sync-1"], 15),
    ("Drop and execute new binary in container", "Critical", ["build-runner-5d2a"], 8),
    (
        "Contact K8S API Server From Container",
        "Notice",
        ["ingress-a", "ingress-b", "ingress-c", "ingress-d"],
        25,
    ),
    ("Falco internal: syscall event drop", "Debug", [""], 5),
]
DISTINCT_RULES = [
    ("Terminal shell in container", "Warning"),
    ("Launch Suspicious Network Tool in Container", "Warning"),
    ("Detect crypto miners using the Stratum protocol", "Critical"),
    ("Search Private Keys or Passwords", "Warning"),
    ("Clear Log Activities", "Warning"),
    ("Packet socket created in container", "Error"),
    ("Netcat Remote Code Execution in Container", "Warning"),
    ("Create Symlink Over Sensitive Files", "Warning"),
]
DISTINCT_KINDS = 120
DISTINCT_SHARE = 0.10


def metrics(port: int) -> dict[str, float]:
    """The bot's /metrics, as {"name{labels}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def outcome_totals(values: dict[str, float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, value in values.items():
        if name.startswith("readybot_falco_events_total{"):
            outcome = re.search(r'outcome="([^"]*)"', name)
            assert outcome is not None
            totals[outcome.group(1)] = totals.get(outcome.group(1), 0.0) + value
    return totals


def metric_sum(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


# -- the storm ------------------------------------------------------------------------------------


def falco_event(rule: str, priority: str, pod: str, node: str, proc: str, at: float) -> dict[str, Any]:
    """An event as falcosidekick 2.x posts it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e9):09d}Z"
    fields: dict[str, Any] = {"evt.time": int(at * 1e9), "proc.name": proc, "user.name": "root"}
    if pod:
        fields |= {
            "k8s.ns.name": "prod",
            "k8s.pod.name": pod,
            "container.id": f"{abs(hash(pod)) % 16**12:012x}",
        }
    return {
        "uuid": f"{random.getrandbits(128):032x}",
        "output": f"{stamp[11:]}: {priority} {rule} (user=root proc={proc} pod={pod or '<NA>'} node={node})",
        "priority": priority,
        "rule": rule,
        "time": stamp,
        "output_fields": fields,
        "source": "syscall",
        "tags": ["container", "mitre_discovery"],
        "hostname": node,
    }


def storm(events: int, seed: int = 7) -> list[dict[str, Any]]:
    """The mix; event times are filled in when each is sent."""
    rng = random.Random(seed)
    distinct = round(events * DISTINCT_SHARE)
    noisy_total = events - distinct - 2
    weights = [share for *_, share in NOISY]
    mix: list[dict[str, Any]] = []
    for rule, priority, pods, _ in rng.choices(NOISY, weights, k=noisy_total):
        mix.append({"rule": rule, "priority": priority, "pod": rng.choice(pods), "proc": "cat"})
    for n in range(distinct):
        kind = n % DISTINCT_KINDS
        rule, priority = DISTINCT_RULES[kind % len(DISTINCT_RULES)]
        mix.append({"rule": rule, "priority": priority, "pod": f"job-{kind:03d}-x7k2", "proc": "sh"})
    rng.shuffle(mix)
    test_event = {"rule": "Test rule", "priority": "Debug", "pod": "", "proc": "falcosidekick"}
    mix.insert(len(mix) // 3, test_event)
    mix.insert(2 * len(mix) // 3, dict(test_event))
    return mix


@dataclass
class StormResult:
    answers: list[float]
    statuses: dict[int, int]
    began: float
    ended: float


def send_storm(url: str, mix: list[dict[str, Any]], seconds: float, concurrency: int) -> StormResult:
    """POST every event at its slot (evenly spread), from a thread with its own event loop.

    Its own loop: answer times must not include the person's client
    decrypting on the main loop.
    """
    result: list[StormResult] = []
    nodes = [f"node-{n}" for n in range(6)]

    async def run() -> None:
        answers: list[float] = []
        statuses: dict[int, int] = {}
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        interval = seconds / len(mix)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            began = time.perf_counter()
            wall = time.time()
            next_index = 0

            async def worker() -> None:
                nonlocal next_index
                while next_index < len(mix):
                    index = next_index
                    next_index += 1
                    delay = began + index * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    spec = mix[index]
                    node = nodes[index % len(nodes)]
                    body = falco_event(
                        spec["rule"], spec["priority"], spec["pod"], node, spec["proc"], time.time()
                    )
                    sent = time.perf_counter()
                    async with session.post(url, data=json.dumps(body).encode(), headers=headers) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                    answers.append((time.perf_counter() - sent) * 1000)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            result.append(StormResult(answers, statuses, wall, time.time()))

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="falco-storm")
    thread.start()
    thread.join()
    return result[0]


# -- the room ---------------------------------------------------------------------------------------


@dataclass
class RoomView:
    """What the person's client shows: each bot message's newest text, and when events arrived."""

    texts: dict[str, str]
    event_times_ms: list[int]


def room_view(person: Person, room: str, bot: str) -> RoomView:
    texts: dict[str, str] = {}
    times: list[int] = []
    for room_id, event in person.received:
        if room_id != room or not isinstance(event, RoomMessageNotice) or event.sender != bot:
            continue
        times.append(event.server_timestamp)
        relates = event.source.get("content", {}).get("m.relates_to", {})
        if relates.get("rel_type") == "m.replace":
            texts[relates["event_id"]] = event.source["content"]["m.new_content"]["body"]
        else:
            texts.setdefault(event.event_id, event.body)
    return RoomView(texts, times)


def counts_shown(view: RoomView) -> int:
    """Events the room accounts for: "xN" (or "Once") per own message, the header count per digest."""
    total = 0
    for text in view.texts.values():
        if text.startswith("🌩"):
            match = re.match(r"🌩 Falco storm: (\d+) event", text)
        else:
            match = re.search(r"^×(\d+) in ", text, re.MULTILINE)
            if match is None and "Once, at" in text:
                total += 1
                continue
        if match is not None:
            total += int(match.group(1))
    return total


# -- the run ------------------------------------------------------------------------------------------


async def run(events: int, seconds: float, concurrency: int, work: Path, *, show: bool) -> None:
    synapse = SynapseServer(work / "synapse", open_rate_limits=False)
    synapse.start()
    bot_process: subprocess.Popen[bytes] | None = None
    person: Person | None = None
    try:
        person_account = register_account(synapse, "person")
        bot_account = register_account(synapse, "readybot")
        person = await Person.login(
            synapse.base_url, person_account.user_id, person_account.password, work / "p"
        )
        room = await person.create_room("falco storm", encrypted=True, invite=[bot_account.user_id])
        port = free_port()
        config = work / "readybot.yaml"
        config.write_text(
            f"matrix:\n  homeserver: {synapse.base_url}\n  user_id: '{bot_account.user_id}'\n"
            f"  store_dir: {work / 'bot' / 'crypto'}\n  rooms: ['{room}']\n"
            f"http:\n  host: 127.0.0.1\n  port: {port}\n"
            f"store:\n  path: {work / 'bot' / 'readybot.sqlite3'}\nlogging:\n  level: WARNING\n"
            f"falco:\n  enabled: true\n  default_rooms: ['{room}']\n"
        )
        env = {
            **os.environ,
            "READYBOT_MATRIX__PASSWORD": bot_account.password,
            "READYBOT_HTTP__HOOK_TOKENS__FALCO": TOKEN,
        }
        bot_process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "-c", str(config)], env=env, cwd=ROOT
        )
        await asyncio.to_thread(wait_ready, port)
        await person.wait_joined(room, bot_account.user_id, timeout=60)

        mix = storm(events)
        print(f"Falco storm: {len(mix)} events over {seconds:.0f} s, concurrency {concurrency}")
        print("  (Synapse with its default rate limits; readybot with its default Falco settings)")
        result = await asyncio.to_thread(
            send_storm, f"http://127.0.0.1:{port}/hooks/falco", mix, seconds, concurrency
        )
        at_storm_end = metrics(port)
        # Until the bot has nothing left to show: no pending update, nothing queued.
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while time.monotonic() < deadline:
            values = metrics(port)
            if (
                values.get("readybot_falco_pending_updates", 1) == 0
                and values.get("readybot_outbox_depth", 1) == 0
            ):
                break
            await asyncio.sleep(1)
        quiet_after = time.time() - result.ended
        await asyncio.sleep(3)  # the person's client syncs the last edits
        final = metrics(port)
        view = room_view(person, room, bot_account.user_id)
        report(result, at_storm_end, final, view, seconds, quiet_after)
        if show:
            for text in view.texts.values():
                print("\n" + text)
    finally:
        if person is not None:
            await person.close()
        if bot_process is not None:
            bot_process.terminate()
            try:
                bot_process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                bot_process.kill()
        synapse.stop()


def report(
    result: StormResult,
    at_storm_end: dict[str, float],
    final: dict[str, float],
    view: RoomView,
    seconds: float,
    quiet_after: float,
) -> None:
    accepted = result.statuses.get(200, 0)
    sent_total = len(result.answers)
    elapsed = result.ended - result.began
    statuses = dict(sorted(result.statuses.items()))
    print(f"  accepted             {accepted}/{sent_total} answered 200 ({statuses})")
    print(f"  events accepted/s    {accepted / elapsed:.1f} (storm lasted {elapsed:.1f} s)")
    p50, p99, worst = percentile(result.answers, 50), percentile(result.answers, 99), max(result.answers)
    print(f"  webhook answer       p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {worst:.1f} ms")

    storm_end_ms = result.began * 1000 + seconds * 1000
    in_minute = sum(1 for t in view.event_times_ms if result.began * 1000 <= t <= storm_end_ms)
    allowed = RC_BURST + int(RC_PER_SECOND * seconds)
    sent = metric_sum(final, "readybot_messages_sent_total")
    limited = final.get('readybot_outbox_send_failures_total{reason="rate_limited"}', 0.0)
    verdict = "within" if in_minute <= allowed else "OVER"
    print(
        f"  Matrix events        {in_minute} during the storm's {seconds:.0f} s "
        f"({verdict} the default limit: {RC_BURST} + {RC_PER_SECOND}/s × {seconds:.0f} s = {allowed}); "
        f"{sent:.0f} in all, quiet {quiet_after:.0f} s after the storm; 429 answers: {limited:.0f}"
    )
    messages = sum(1 for t in view.texts.values() if not t.startswith("🌩"))
    digests = len(view.texts) - messages
    seen = len(view.event_times_ms)
    print(f"  room messages        {messages} own messages + {digests} digest(s), {seen} events seen")

    outcomes = outcome_totals(final)
    counted = sum(outcomes.values())
    at_end = sum(outcome_totals(at_storm_end).values())
    order = ["posted", "aggregated", "folded", "muted", "below_min", "test"]
    listed = ", ".join(f"{name} {outcomes.get(name, 0):.0f}" for name in order)
    print(f"  outcomes             {listed}")
    print(
        f"  counters             sum {counted:.0f} = accepted {accepted}: "
        f"{accepted - counted:.0f} unaccounted (at the storm's end already {at_end:.0f})"
    )
    routed = outcomes.get("posted", 0) + outcomes.get("aggregated", 0) + outcomes.get("folded", 0)
    shown = counts_shown(view)
    print(
        f"  room accounting      the messages' counts add up to {shown} of the {routed:.0f} routed events "
        f"({routed - shown:.0f} missing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events in the storm")
    parser.add_argument("--seconds", type=float, default=60.0, help="the storm's length")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    parser.add_argument("--show", action="store_true", help="print what the room shows at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="readybot-falco-") as work:
        asyncio.run(run(args.events, args.seconds, args.concurrency, Path(work), show=args.show))


if __name__ == "__main__":
    main()
