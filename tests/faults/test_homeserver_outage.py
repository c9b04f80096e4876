"""A 60 s homeserver outage with a crash in the middle: 1,000 alert groups, none lost, none twice.
The order that holds: every edit (and reply, reaction, thread line) after the
event it relates to; groups' own messages and digests may overtake one
another, as several of a room's sends are in flight at once
(``outbox.max_in_flight_per_room``, default 4; set 1 for strict per-room
order).

The bot runs as its own process with the Alertmanager relay routing groups
by a ``shard`` label to two encrypted rooms. With Synapse stopped, 1,000
distinct groups are posted to ``/hooks/alertmanager`` (8 at a time, so the
relay's group commit is exercised); every one must be answered 2xx, i.e.
committed. Then the bot is SIGKILLed and started again while Synapse is still
down (it answers /healthz but cannot be ready), Synapse comes back at the
60 s mark, and a person's client in both rooms must end up showing every
group exactly once, and every edit after the message it edits. Groups'
relative order is not promised: the outbox sends several messages of a room
at once (``outbox.max_in_flight_per_room``), so one group's message may
overtake another's; the test records how many did (``out_of_order``).

**Send budget: the defaults** (burst 10, 12/min, a storm folds past 1 s), as a
production homeserver needs them. The test Synapse has open rate limits,
so letting each group have its own message would also work, but it would
test a configuration nobody should run against a real homeserver, and it
would cost ~1,000 encrypted events to drain. With the defaults the first
handful of groups get their own message and the rest fold into storm
digests (~70 lines each), which is the path an outage really takes: digests
rewritten while queued, reloaded after the crash, edited after it. So a
group counts as shown when its marker is in a message's current text (its
newest edit): its own message, or one line of a digest.

Counted from what the person's client received: lost (never shown),
duplicated (shown in two messages, or on two lines of one digest),
edits that arrived before their message (must be none), out of order
(groups shown before another whose webhook was answered before theirs was
even sent: recorded, not asserted), and the drain time from Synapse's return to the last
group shown. The drain includes the restarted bot's wait to log in again
(``ready_after_s``): its login back-off doubles up to 30 s while the
homeserver is away, so depending on where that back-off stands when
Synapse returns it adds anything from under a second to about 30 s;
``drain_after_ready_s`` is the part after it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.demo.synapse import SynapseServer
from tests.faults.alert_groups import Answered, RoomShowing, group_payload, new_run, out_of_order
from tests.integration.botprocess import BotProcess, http_status
from tests.integration.botrunner import bot_config
from tests.integration.fixtures import BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory

TOKEN = "outage-hook-token-9fK2mQ"
GROUPS = 1_000
CONCURRENCY = 8
OUTAGE_S = 60.0
# Generous: two cores shared with other test sessions, a person's client
# decrypting everything, and the bot's login back-off after the outage.
DRAIN_CEILING_S = 180.0
# After the last group shows, how long a late duplicate has to show up.
SETTLE_S = 3.0


async def post_groups(url: str, bodies: list[tuple[int, str, bytes]]) -> list[Answered]:
    """POST every body, CONCURRENCY at a time; when each was sent and answered."""
    answers: list[Answered] = []
    queue = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def worker() -> None:
            while queue:
                index, room, body = queue.pop()
                sent = time.monotonic()
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answers.append(Answered(index, room, sent, time.monotonic(), response.status))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return answers


async def outbox_depth(bot: BotProcess) -> float | None:
    """The bot's readybot_outbox_depth from /metrics; None if it did not answer."""

    def read() -> str | None:
        try:
            with urllib.request.urlopen(bot.url("/metrics"), timeout=2) as response:  # noqa: S310 (127.0.0.1)
                return str(response.read().decode())
        except OSError:
            return None

    text = await asyncio.to_thread(read)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("readybot_outbox_depth "):
            return float(line.split()[1])
    return None


async def wait_shown(
    person: Person, rooms: dict[str, str], bot_user: str, run: str, expected: dict[str, set[int]]
) -> float | None:
    """Until every expected group shows in its room (monotonic time then), or None at the ceiling."""
    deadline = time.monotonic() + DRAIN_CEILING_S
    while time.monotonic() < deadline:
        if all(
            expected[shard] <= RoomShowing.read(person, room, bot_user, run).visible()
            for shard, room in rooms.items()
        ):
            return time.monotonic()
        await asyncio.sleep(0.25)
    return None


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_homeserver_outage_with_a_crash_loses_and_duplicates_no_alert_group(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """1,000 groups posted in a 60 s outage, bot SIGKILLed in it: each shown once, edits after messages."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    rooms = {
        shard: await alice.create_room(f"alerts {shard}", encrypted=True, invite=[bot_user])
        for shard in ("a", "b")
    }
    config = bot_config(
        synapse.base_url,
        bot_account,
        tmp_path / "state",
        list(rooms.values()),
        alertmanager={
            "enabled": True,
            "routes": [{"matchers": {"shard": shard}, "rooms": [room]} for shard, room in rooms.items()],
        },
    )
    bot = bot_process(config)
    # As a deployment passes it: in the environment, not in the config file.
    bot.env["READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER"] = TOKEN
    bot.start()
    await bot.wait_ready()
    for room in rooms.values():
        await alice.wait_joined(room, bot_user, timeout=60)

    run = new_run()
    shard_of = {index: "ab"[index % 2] for index in range(GROUPS)}
    bodies = [
        (index, rooms[shard_of[index]], json.dumps(group_payload(run, index, shard_of[index])).encode())
        for index in range(GROUPS)
    ]
    expected = {shard: {i for i, s in shard_of.items() if s == shard} for shard in rooms}

    await asyncio.to_thread(synapse.stop)
    outage_began = time.monotonic()
    try:
        answers = await post_groups(bot.url("/hooks/alertmanager"), bodies)
        posted_s = time.monotonic() - outage_began
        assert await bot.kill() == -signal.SIGKILL
        bot.start()
        await bot.wait_http()
        # Up, answering webhooks, but not ready without its homeserver.
        assert await asyncio.to_thread(http_status, bot.port, "/readyz") == 503
        await asyncio.sleep(max(0.0, outage_began + OUTAGE_S - time.monotonic()))
    finally:
        # Other tests share this Synapse: it comes back whatever happened.
        # From the event loop's thread (the main one), so that its
        # parent-death signal stays armed.
        synapse.start()
    back = time.monotonic()
    outage_s = back - outage_began

    assert sorted(a.status for a in answers) == [200] * GROUPS, "every webhook answered 2xx"
    await bot.wait_ready(timeout_s=DRAIN_CEILING_S)
    ready_s = time.monotonic() - back
    all_shown = await wait_shown(alice, rooms, bot_user, run, expected)
    drain_s = None if all_shown is None else round(all_shown - back, 1)
    # Let the outbox empty (deferred digest edits) and a late duplicate arrive.
    deadline = time.monotonic() + 60
    while (await outbox_depth(bot)) != 0.0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(SETTLE_S)

    lost = duplicated = early = early_edits = 0
    messages = digests = 0
    for shard, room in rooms.items():
        showing = RoomShowing.read(alice, room, bot_user, run)
        lost += len(expected[shard] - showing.visible())
        duplicated += len(showing.duplicated())
        early_edits += showing.early_edits
        # Groups shown before one whose webhook was answered before theirs was sent.
        early += len({b for _, b in out_of_order([a for a in answers if a.room == room], showing)})
        messages += showing.messages
        digests += showing.digests

    record_property("groups", GROUPS)
    record_property("outage_s", round(outage_s, 1))
    record_property("posting_s", round(posted_s, 1))
    record_property("answer_p99_ms", _p99_ms(answers))
    record_property("lost", lost)
    record_property("duplicated", duplicated)
    record_property("out_of_order", early)
    record_property("edits_before_their_message", early_edits)
    record_property("ready_after_s", round(ready_s, 1))
    record_property("drain_s", drain_s if drain_s is not None else "never")
    if drain_s is not None:
        record_property("drain_after_ready_s", round(drain_s - ready_s, 1))
    record_property("messages", messages)
    record_property("digests", digests)
    assert (lost, duplicated, early_edits) == (0, 0, 0), bot.log_tail()
    assert drain_s is not None


def _p99_ms(answers: list[Answered]) -> float:
    times = sorted((a.answered - a.sent) * 1000 for a in answers)
    return round(times[min(len(times) - 1, int(len(times) * 0.99))], 1)
