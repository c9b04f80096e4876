"""Two electors in one process against a Kubernetes API (the test server's Leases), sharing one SQLite store.

The real client (CoordinationV1Api) reads and writes the Lease; each elector
has its own Database on the same store, as two replicas would: an SQLite file,
then a real PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.ha.election import LeaseRecord
from bot.ha.elector import LeaderElector
from bot.ha.lease import KubeLeases, LeaseConflict
from bot.metrics import Metrics
from bot.outbox import Outbox, OutboxSender
from bot.store.database import Database
from bot.store.leadership import Fence, LeadershipLost
from config.ha import HaSettings
from config.settings import OutboxSettings
from tests.kube.handle import KubeTarget
from tests.stores import open_store

pytestmark = pytest.mark.usefixtures("store_backend")

# Short, so a handover takes seconds; the ratios are client-go's (lease > deadline > retry).
LEASE_S, DEADLINE_S, RETRY_S = 2.0, 1.5, 0.2
# Generous bounds on liveness (a loaded machine), not measurements.
ACQUIRE_WITHIN_S = 10.0


@dataclass
class Replica:
    name: str
    db: Database
    leases: KubeLeases
    fence: Fence
    elector: LeaderElector
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    led_at: float | None = None

    async def on_lead(self, _term: object) -> None:
        self.led_at = time.monotonic()

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.stop, self.on_lead), name=self.name)

    async def outcome(self) -> BaseException | None:
        assert self.task is not None
        try:
            await self.task
        except Exception as error:
            return error
        return None


def ha(target: KubeTarget, identity: str, lease_s: float, deadline_s: float) -> HaSettings:
    return HaSettings(
        enabled=True,
        lease_name="readybot-leader",
        namespace=target.namespace,
        identity=identity,
        lease_duration_s=lease_s,
        renew_deadline_s=deadline_s,
        retry_period_s=RETRY_S,
    )


@pytest.fixture
async def replicas(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    async with open_replicas(kube, tmp_path, LEASE_S, DEADLINE_S) as made:
        yield made


@contextlib.asynccontextmanager
async def open_replicas(
    kube: KubeTarget, tmp_path: Path, lease_s: float, deadline_s: float
) -> AsyncIterator[list[Replica]]:
    made: list[Replica] = []
    for name in ("readybot-0", "readybot-1"):
        db = await open_store(tmp_path / "shared.sqlite3")
        settings = ha(kube, name, lease_s, deadline_s)
        leases = KubeLeases.from_settings(kube.settings(), settings)
        fence = Fence(db)
        made.append(Replica(name, db, leases, fence, LeaderElector(leases, settings, fence, Metrics())))
    try:
        yield made
    finally:
        for replica in made:
            replica.stop.set()
            if replica.task is not None:
                replica.task.cancel()
                with contextlib.suppress(BaseException):
                    await replica.task
            await replica.leases.close()
            await replica.db.close()


async def first_leader(replicas: list[Replica]) -> Replica:
    async def wait(replica: Replica) -> Replica:
        await replica.elector.leading.wait()
        return replica

    tasks = [asyncio.create_task(wait(r)) for r in replicas]
    done, pending = await asyncio.wait(tasks, timeout=ACQUIRE_WITHIN_S, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "nobody took the lead"
    return next(iter(done)).result()


def lease_of(kube: KubeTarget) -> dict[str, Any]:
    obj = kube.store.find("coordination.k8s.io", "leases", "readybot-leader", kube.namespace)
    assert obj is not None
    return obj


async def test_exactly_one_of_two_replicas_leads(replicas: list[Replica], kube: KubeTarget) -> None:
    """Two replicas start together: one leads, the other stands by through several lease durations."""
    for replica in replicas:
        replica.start()
    leader = await first_leader(replicas)
    standby = next(r for r in replicas if r is not leader)
    await asyncio.sleep(LEASE_S * 3)
    assert leader.elector.leading.is_set()
    assert not standby.elector.leading.is_set()
    spec = lease_of(kube)["spec"]
    assert spec["holderIdentity"] == leader.name
    assert await leader.fence.stored() == (leader.name, spec["leaseTransitions"])
    assert standby.task is not None and not standby.task.done()


async def test_a_leader_that_cannot_renew_steps_down_and_the_standby_takes_over(
    replicas: list[Replica], kube: KubeTarget, record_property: Any
) -> None:
    """Renewals stopped: the leader exits (LeadershipLost) by its deadline; the standby leads after expiry."""
    for replica in replicas:
        replica.start()
    old = await first_leader(replicas)
    new = next(r for r in replicas if r is not old)
    old.elector.renewals_paused = True
    paused_at = time.monotonic()
    error = await asyncio.wait_for(old.outcome(), ACQUIRE_WITHIN_S)
    assert isinstance(error, LeadershipLost)
    stepped_down_after = time.monotonic() - paused_at
    await asyncio.wait_for(new.elector.leading.wait(), ACQUIRE_WITHIN_S)
    assert new.led_at is not None
    record_property("step_down_s", round(stepped_down_after, 2))
    record_property("handover_s", round(new.led_at - paused_at, 2))
    # The old leader stopped acting before the new one began (deadline < lease).
    assert old.led_at is not None and stepped_down_after < new.led_at - paused_at
    spec = lease_of(kube)["spec"]
    assert spec["holderIdentity"] == new.name
    assert spec["leaseTransitions"] == (old.fence.token or 0) + 1
    assert await new.fence.stored() == (new.name, spec["leaseTransitions"])


@dataclass
class RecordingTransport:
    sent: list[str] = field(default_factory=list)

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        self.sent.append(txn_id)
        return f"$event-{len(self.sent)}"


async def test_an_old_leaders_fenced_send_fails_and_sends_nothing(replicas: list[Replica]) -> None:
    """After a handover the old leader's sender claims no row: LeadershipLost, nothing is sent."""
    for replica in replicas:
        replica.start()
    old = await first_leader(replicas)
    new = next(r for r in replicas if r is not old)
    # The old leader is paused (as by SIGSTOP): it neither renews nor knows it lost.
    old.elector.renewals_paused = True
    old.stop.set()
    await old.outcome()
    await asyncio.wait_for(new.elector.leading.wait(), ACQUIRE_WITHIN_S)

    outbox = Outbox(old.db)
    await outbox.send_message("!room:example.org", {"msgtype": "m.notice", "body": "late"})
    transport = RecordingTransport()
    sender = OutboxSender(old.db, transport, OutboxSettings(), Metrics(), fence=old.fence)
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(sender.run(asyncio.Event()), ACQUIRE_WITHIN_S)
    assert caught.group_contains(LeadershipLost)
    assert transport.sent == []
    assert old.fence.lost.is_set()
    # The new leader's sender sends the same row.
    new_transport = RecordingTransport()
    new_sender = OutboxSender(new.db, new_transport, OutboxSettings(), Metrics(), fence=new.fence)
    stop = asyncio.Event()
    running = asyncio.create_task(new_sender.run(stop))
    for _ in range(100):
        if new_transport.sent:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await running
    assert len(new_transport.sent) == 1


async def test_a_frozen_leader_is_fenced_at_its_renew_deadline_though_nobody_took_over(
    replicas: list[Replica],
) -> None:
    """A leader frozen past its renew deadline (no loop runs, as under SIGSTOP) fails its fence check."""
    leader = replicas[0]
    leader.start()  # alone: nobody else can take the lead and bump the store's token
    await asyncio.wait_for(leader.elector.leading.wait(), ACQUIRE_WITHIN_S)
    await leader.fence.check()
    assert leader.task is not None
    leader.task.cancel()  # frozen: no renewals, no step-down by its own loop
    with contextlib.suppress(asyncio.CancelledError):
        await leader.task
    await asyncio.sleep(DEADLINE_S + 0.1)
    assert await leader.fence.stored() == (leader.name, leader.fence.token)
    with pytest.raises(LeadershipLost):
        await leader.fence.check()
    assert leader.fence.lost.is_set()


async def test_a_clean_stop_releases_the_lease_and_the_standby_takes_it_at_once(
    kube: KubeTarget, tmp_path: Path
) -> None:
    """A stopped leader releases the Lease (no holder): the standby leads long before it could expire."""
    # A lease far longer than the wait below: only a release can hand over in time.
    async with open_replicas(kube, tmp_path, lease_s=120.0, deadline_s=60.0) as replicas:
        for replica in replicas:
            replica.start()
        old = await first_leader(replicas)
        new = next(r for r in replicas if r is not old)
        old.stop.set()
        assert await old.outcome() is None
        await old.elector.release()
        assert lease_of(kube)["spec"]["holderIdentity"] == ""
        await asyncio.wait_for(new.elector.leading.wait(), ACQUIRE_WITHIN_S)
        assert lease_of(kube)["spec"]["holderIdentity"] == new.name


async def test_lease_round_trip_and_optimistic_concurrency(kube: KubeTarget) -> None:
    """Create, read back as V1Lease (times, transitions), replace on the read version; a stale one is 409."""
    settings = ha(kube, "readybot-0", LEASE_S, DEADLINE_S)
    leases = KubeLeases.from_settings(kube.settings(), settings)
    try:
        assert await leases.get() is None
        now = datetime.now(UTC).replace(microsecond=123456)
        record = LeaseRecord("readybot-0", 15, now, now, 3)
        created = await leases.create(record)
        assert created.record == record
        read = await leases.get()
        assert read is not None and read.record == record
        with pytest.raises(LeaseConflict):
            await leases.create(record)
        renewed = dataclasses.replace(record, renew_time=now + timedelta(seconds=2))
        replaced = await leases.replace(renewed, read.resource_version)
        assert replaced.record == renewed
        assert replaced.resource_version != read.resource_version
        with pytest.raises(LeaseConflict):
            await leases.replace(dataclasses.replace(record, holder="readybot-1"), read.resource_version)
        current = await leases.get()
        assert current is not None and current.record.holder == "readybot-0"
    finally:
        await leases.close()
