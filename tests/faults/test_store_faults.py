"""Store faults under webhooks: a locked database and a full disk, with the bot as a subprocess.

A real Alertmanager sends its notifications to the bot and retries on its own
after each 503; the Falco webhook is posted by the test, as falcosidekick
would (it does not retry, so the test is the retrying sender). While the
fault lasts every delivery must get 503 and leave nothing behind; once the
fault is cleared, the retried deliveries must reach the room exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import RoomMessageNotice

from bot.demo.synapse import SynapseServer, free_port
from tests.integration.alertmanager import receiver_config
from tests.integration.botprocess import BotProcess, http_status
from tests.integration.botrunner import bot_config, eventually
from tests.integration.fixtures import AlertmanagerFactory, BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory

from .store_tools import ExclusiveLock, FileSizeLimit, StoreSnapshot, metric, metrics_text

AM_TOKEN = "am-store-fault-token-Lk42"
FALCO_TOKEN = "falco-store-fault-token-Rt93"
# Nothing folds into a digest: each delivery is its own message, easy to count.
OPEN_BUDGET = {"burst": 200, "per_minute": 6_000, "reserve": 1, "edit_floor": 10}
# How many Alertmanager deliveries must fail before the fault is cleared: the
# first one and at least one of Alertmanager's own retries.
AM_FAILURES = 2
WAIT_S = 90.0
# After the first successful delivery: time for any duplicate to show up
# (Alertmanager's group_interval is 1 s here).
SETTLE_S = 4.0


def falco_event(rule: str) -> dict[str, Any]:
    """One event as falcosidekick posts it."""
    return {
        "uuid": str(uuid.uuid4()),
        "output": f"09:00:00.000000001: Warning {rule} (user=root pod=web-1 proc=bash)",
        "priority": "Warning",
        "rule": rule,
        "time": "2027-01-15T09:00:00.000000001Z",
        "output_fields": {"k8s.ns.name": "shop", "k8s.pod.name": "web-1", "proc.name": "bash"},
        "source": "syscall",
        "tags": ["container", "shell"],
        "hostname": "node-a",
    }


async def post_falco(bot: BotProcess, event: dict[str, Any]) -> int:
    headers = {"Authorization": f"Bearer {FALCO_TOKEN}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(bot.url("/hooks/falco"), data=json.dumps(event), headers=headers) as response,
    ):
        return response.status


def bot_messages(person: Person, room: str, bot: str, text: str, since: int = 0) -> list[RoomMessageNotice]:
    """The bot's top-level messages (not edits, not thread lines) mentioning ``text``."""
    return [
        e
        for r, e in person.received[since:]
        if r == room
        and isinstance(e, RoomMessageNotice)
        and e.sender == bot
        and "m.relates_to" not in e.source.get("content", {})
        and text in e.body
    ]


def outbox_messages(store: Path, text: str) -> int:
    """Outbox rows (new messages) whose content mentions ``text``."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND instr(payload, ?) > 0", (text,)
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


@pytest.mark.parametrize("fault", ["locked", "disk_full"])
async def test_store_fault_answers_503_writes_nothing_and_the_retry_is_relayed_once(
    fault: str,
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """Locked store or full disk: webhooks get 503 and write nothing; after it, each retry is posted once."""
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_account.user_id])
    state = tmp_path / "state"
    store = state / "readybot.sqlite3"
    port = free_port()  # fixed, so Alertmanager's configuration can name it
    bot = bot_process(
        bot_config(
            synapse.base_url,
            bot_account,
            state,
            [room],
            # Long polls: fewer sync-token writes competing with the webhooks
            # for the store while it is locked.
            matrix={"sync_timeout_ms": 30_000},
            http={"hook_tokens": {"alertmanager": AM_TOKEN, "falco": FALCO_TOKEN}, "port": port},
            alertmanager={"enabled": True, "default_rooms": [room]},
            falco={"enabled": True, "default_rooms": [room], "send_budget": OPEN_BUDGET},
        )
    )
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_account.user_id)
    am = alertmanager(receiver_config(f"http://127.0.0.1:{port}", AM_TOKEN))
    alert = f"StoreFault{uuid.uuid4().hex[:8]}"
    rule = f"Shell in container {uuid.uuid4().hex[:8]}"
    me = bot_account.user_id
    assert bot.process is not None

    before = await asyncio.to_thread(StoreSnapshot.read, store)
    bot_before = await asyncio.to_thread(metrics_text, bot.url("/metrics"))
    am_before = await asyncio.to_thread(metrics_text, f"{am.base_url}/metrics")
    mark = alice.mark()

    # -- the fault -------------------------------------------------------------------
    if fault == "locked":
        held: ExclusiveLock | FileSizeLimit = await asyncio.to_thread(ExclusiveLock, store)
    else:
        others = [*(state / "crypto").iterdir(), bot.log_path]
        held = FileSizeLimit(bot.process.pid, store, others)
    began = time.monotonic()

    async def falco_twice() -> list[int]:
        # falcosidekick's one attempt, and a second one as a retrying sender's.
        return [await post_falco(bot, falco_event(rule)) for _ in range(2)]

    falco_posts = asyncio.create_task(falco_twice())
    try:
        await asyncio.to_thread(am.fire, {"alertname": alert, "namespace": "db", "severity": "warning"})

        def am_failed() -> float:
            text = metrics_text(f"{am.base_url}/metrics")
            return metric(text, "alertmanager_notification_requests_failed_total", integration="webhook")

        base_failed = metric(
            am_before, "alertmanager_notification_requests_failed_total", integration="webhook"
        )
        async with asyncio.timeout(WAIT_S):
            while await asyncio.to_thread(am_failed) - base_failed < AM_FAILURES:
                await asyncio.sleep(0.2)
            falco_statuses = await falco_posts

        # What the fault left, read while it still holds.
        during = await asyncio.to_thread(StoreSnapshot.read, store)
        scrape_began = time.monotonic()
        bot_during = await asyncio.to_thread(metrics_text, bot.url("/metrics"))
        scrape_s = time.monotonic() - scrape_began
        readyz_during = await asyncio.to_thread(http_status, bot.port, "/readyz")
        am_retries = await asyncio.to_thread(am_failed) - base_failed
        sent_during = len(bot_messages(alice, room, me, alert, mark)) + len(
            bot_messages(alice, room, me, rule, mark)
        )
        alive_during = bot.process.poll() is None
    finally:
        held.release()
        falco_posts.cancel()  # a no-op unless the wait above failed
    fault_s = time.monotonic() - began

    def delta(name: str, **labels: str) -> int:
        return int(metric(bot_during, name, **labels) - metric(bot_before, name, **labels))

    am_answered = delta("readybot_alertmanager_notifications_total")
    am_503 = delta("readybot_alertmanager_notifications_total", result="store_unavailable")
    falco_503_metric = delta("readybot_falco_webhook_requests_total", status="503")
    webhooks_during_fault = am_answered + len(falco_statuses)
    answered_5xx = am_503 + falco_statuses.count(503)

    # -- recovery: Alertmanager retries by itself; the Falco sender posts once more --------
    falco_retry = await post_falco(bot, falco_event(rule))
    await eventually(
        lambda: bool(
            bot_messages(alice, room, me, alert, mark) and bot_messages(alice, room, me, rule, mark)
        ),
        "the alert group and the Falco event in the room after the fault",
        within_s=WAIT_S,
    )
    await asyncio.sleep(SETTLE_S)

    after = await asyncio.to_thread(StoreSnapshot.read, store)
    group_messages = len(bot_messages(alice, room, me, alert, mark))
    falco_messages = len(bot_messages(alice, room, me, rule, mark))
    outbox_rows = await asyncio.to_thread(outbox_messages, store, alert) + await asyncio.to_thread(
        outbox_messages, store, rule
    )
    half_written = during.added_since(before) + during.orphans + after.orphans + sent_during
    relayed_after_recovery = min(group_messages, 1) + min(falco_messages, 1)
    duplicates = (group_messages - 1) + (falco_messages - 1) + (outbox_rows - 2)

    record_property("fault", fault)
    record_property("fault_s", round(fault_s, 1))
    record_property("webhooks_during_fault", webhooks_during_fault)
    record_property("answered_5xx", answered_5xx)
    record_property("alertmanager_failed_requests", int(am_retries))
    record_property("half_written", half_written)
    record_property("relayed_after_recovery", relayed_after_recovery)
    record_property("duplicates", duplicates)
    record_property("readyz_during_fault", readyz_during)
    record_property("metrics_scrape_during_fault_s", round(scrape_s, 1))

    assert alive_during and bot.process.poll() is None, bot.log_tail()
    assert falco_statuses == [503, 503]
    assert falco_503_metric == 2  # /metrics shows the refusals
    assert am_retries >= AM_FAILURES  # Alertmanager saw failures and retried
    assert am_503 >= 1
    assert answered_5xx == webhooks_during_fault  # nothing was accepted during the fault
    assert half_written == 0
    assert falco_retry == 200
    assert relayed_after_recovery == 2
    assert duplicates == 0
    # No webhook ended in an unhandled error (aiohttp's 500), and nothing logged a
    # stack trace for what is an operational condition.
    assert "Error handling request" not in bot.log_text()
    assert "Traceback" not in bot.log_text()
