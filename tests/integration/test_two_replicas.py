"""Two bot processes, one leader: the test Kubernetes API server's Lease decides, the store is shared.

Both processes are the real bot (``python -m bot run``) with ``ha.enabled``,
each its own Matrix device (its own crypto store) on the real Synapse, both
on one PostgreSQL database (``store.url``, a real server the tests start on
127.0.0.1). The Lease lives in the test API server (``bot/demo/kube``),
spoken to by the real kubernetes client.

Durations are shorter than the defaults (lease 10 s, deadline 7 s, retry
1 s) so that the takeover bound the issue sets, 15 s from the SIGKILL, holds
with the standby's polling on top of the lease.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from bot.demo.synapse import SynapseServer
from tests.faults.alert_groups import RoomShowing, group_payload, new_run
from tests.integration.botprocess import BotProcess, http_status
from tests.integration.botrunner import bot_config
from tests.integration.fixtures import BotProcessFactory
from tests.integration.people import Account, PersonFactory
from tests.kube.handle import KubeTarget
from tests.stores import PostgresForTests

TOKEN = "replicas-hook-token-7Hq2"
LEASE = {"lease_duration_s": 10.0, "renew_deadline_s": 7.0, "retry_period_s": 1.0}
TAKEOVER_BOUND_S = 15.0
SETTLE_S = 3.0


def replica_config(
    synapse: SynapseServer,
    account: Account,
    tmp_path: Path,
    kube: KubeTarget,
    room: str,
    n: int,
    **sections: Any,
) -> dict[str, Any]:
    """A replica's configuration (``sections`` add to or replace its parts); the store URL is in the env."""
    parts: dict[str, Any] = {
        "alertmanager": {"enabled": True, "default_rooms": [room]},
        "kubernetes": {"enabled": True, "in_cluster": False, "kubeconfig": str(kube.kubeconfig_path)},
        "ha": {"enabled": True, "namespace": kube.namespace, "identity": f"readybot-{n}", **LEASE},
    } | sections
    return bot_config(synapse.base_url, account, tmp_path / f"replica-{n}", [room], **parts)


async def readyz(bot: BotProcess) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(bot.url("/readyz"), timeout=1) as response:  # noqa: S310 (127.0.0.1)
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()
        except OSError:
            return 0, ""

    return await asyncio.to_thread(get)


async def post_like_alertmanager(urls: list[str], body: bytes, deadline: float) -> list[int]:
    """POST to whichever replica takes it, retrying 503 and refused connections as Alertmanager does."""
    statuses: list[int] = []
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            for url in urls:
                try:
                    async with http.post(url, data=body, headers=headers) as response:
                        statuses.append(response.status)
                        if response.status == 200:
                            return statuses
                except aiohttp.ClientError:
                    statuses.append(0)
            await asyncio.sleep(0.5)
    return statuses


def audit_rows(url: str, event_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT action, outcome FROM audit WHERE event_id = %s", (event_id,))
        return [(str(action), str(outcome)) for action, outcome in rows.fetchall()]


async def start_replicas(
    synapse: SynapseServer,
    account: Account,
    alice: Any,
    room: str,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    tmp_path: Path,
    store_url: str,
    *,
    sections: dict[str, Any] | None = None,
    first_env: dict[str, str] | None = None,
) -> tuple[BotProcess, BotProcess]:
    """readybot-0 (leading) and readybot-1 (standing by, its first sync done), on one database.

    ``sections`` go into both configurations, ``first_env`` into readybot-0's
    environment only (e.g. a test hold point for the leader).
    """
    extra = sections or {}
    first = bot_process(replica_config(synapse, account, tmp_path, kube, room, 0, **extra), name="replica-0")
    second = bot_process(replica_config(synapse, account, tmp_path, kube, room, 1, **extra), name="replica-1")
    first.env.update(first_env or {})
    for bot in (first, second):
        bot.env["READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER"] = TOKEN
        # As a deployment passes it: from a Secret, in the environment.
        bot.env["READYBOT_STORE__URL"] = store_url
    # One after the other: the first makes the bot's cross-signing identity,
    # the second finds it in the shared store and signs its own device with it.
    first.start()
    await first.wait_ready()
    await alice.wait_joined(room, account.user_id, timeout=60)
    second.start()
    await second.wait_http()
    while "ready: serving" not in second.log_text():
        assert second.process is not None and second.process.poll() is None, second.log_tail()
        await asyncio.sleep(0.2)
    return first, second


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sigkill_of_the_leader_hands_over_to_the_standby_and_nothing_is_lost_or_repeated(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    postgres: PostgresForTests,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """One replica answers; SIGKILL it: the standby leads within 15 s, a group sent meanwhile shows once."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_user])
    url = postgres.create(migrated=False)  # the first replica runs every migration
    first, second = await start_replicas(synapse, bot_account, alice, room, bot_process, kube, tmp_path, url)
    status, text = await readyz(second)
    assert (status, text.strip()) == (503, "not ready: standby: not the leader")

    # Only the leader answers a command (each replica sees it: two devices, one account).
    asked = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, bot_user, after_event_id=asked, timeout=30)
    await asyncio.sleep(SETTLE_S)
    answers = [
        e
        for r, e in alice.received
        if r == room and getattr(e, "sender", None) == bot_user and asked in json.dumps(e.source)
    ]
    assert len(answers) == 1, "exactly one replica answered !ping"

    # SIGKILL the leader; a command in the gap, and an alert group retried until someone takes it.
    assert await first.kill() == -signal.SIGKILL
    killed = time.monotonic()
    gap_command = await alice.send_text(room, "!ping")
    run = new_run()
    body = json.dumps(group_payload(run, 1, "a")).encode()
    urls = [first.url("/hooks/alertmanager"), second.url("/hooks/alertmanager")]
    statuses = await post_like_alertmanager(urls, body, killed + 60)
    assert statuses[-1] == 200, statuses
    while (await readyz(second))[0] != 200:
        assert time.monotonic() - killed < 60, second.log_tail()
        await asyncio.sleep(0.1)
    took_over_s = time.monotonic() - killed
    record_property("takeover_s", round(took_over_s, 1))
    record_property("webhook_attempts", len(statuses))
    assert took_over_s <= TAKEOVER_BOUND_S, second.log_tail()

    deadline = time.monotonic() + 60
    while 1 not in RoomShowing.read(alice, room, bot_user, run).visible():
        assert time.monotonic() < deadline, "the group never showed:\n" + second.log_tail()
        await asyncio.sleep(0.25)
    await asyncio.sleep(SETTLE_S)
    showing = RoomShowing.read(alice, room, bot_user, run)
    assert showing.visible() == {1}
    assert showing.duplicated() == set()
    assert 503 in statuses, "the standby refused the group before it led"
    # The command sent while nobody led: audited, not run (the restart rule, from the takeover).
    assert audit_rows(url, gap_command) == [("command:skipped", "sent-before-start")]
    assert "took the lead as readybot-1" in second.log_text()
    assert http_status(second.port, "/readyz") == 200


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_leader_paused_past_its_lease_sends_nothing_when_it_wakes(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    kube: KubeTarget,
    postgres: PostgresForTests,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """SIGSTOP a leader holding an unsent group; the standby leads and sends it; SIGCONT: no second copy."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("alerts", encrypted=True, invite=[bot_user])
    url = postgres.create(migrated=False)  # the first replica runs every migration
    first, second = await start_replicas(synapse, bot_account, alice, room, bot_process, kube, tmp_path, url)
    run = new_run()
    body = json.dumps(group_payload(run, 7, "a")).encode()
    assert first.process is not None
    # The homeserver away: the leader commits the group (200) but cannot send it.
    await asyncio.to_thread(synapse.stop)
    try:
        statuses = await post_like_alertmanager(
            [first.url("/hooks/alertmanager")], body, time.monotonic() + 30
        )
        assert statuses[-1] == 200, statuses
        first.process.send_signal(signal.SIGSTOP)
    finally:
        # Other tests share this Synapse: it comes back whatever happened.
        synapse.start()
    try:
        stopped = time.monotonic()
        while (await readyz(second))[0] != 200:
            assert time.monotonic() - stopped < 60, second.log_tail()
            await asyncio.sleep(0.1)
        record_property("takeover_after_sigstop_s", round(time.monotonic() - stopped, 1))
        deadline = time.monotonic() + 90
        while 7 not in RoomShowing.read(alice, room, bot_user, run).visible():
            assert time.monotonic() < deadline, "the new leader never sent the group:\n" + second.log_tail()
            await asyncio.sleep(0.25)
    finally:
        first.process.send_signal(signal.SIGCONT)
    # Awake, the old leader finds a newer term (Lease or store) and exits without sending.
    assert await first.wait_exit(timeout_s=30) == 75, first.log_tail()
    await asyncio.sleep(SETTLE_S)
    showing = RoomShowing.read(alice, room, bot_user, run)
    assert showing.visible() == {7}
    assert showing.duplicated() == set(), first.log_tail()
    assert "lost the lead" in first.log_text() or "fenced" in first.log_text()
