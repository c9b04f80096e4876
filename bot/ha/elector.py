"""The election loop: try for the Lease every retry period, lead, renew, step down.

While standby it reads the Lease each ``retry_period`` and takes it when
released or expired (judged by our monotonic clock, ``bot.ha.election``).
Having taken it, it writes the new term's fencing token to the store
(``bot.store.leadership``) and only then calls ``on_lead``. While leading it
renews each ``retry_period``; when no renewal has succeeded for
``renew_deadline`` or the Lease shows another holder, it raises
``LeadershipLost``, which ends the process: Kubernetes restarts it as a
standby with nothing in memory from its term.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from bot.ha.election import (
    Decision,
    LeaseRecord,
    Observed,
    Term,
    Verb,
    decide,
    must_step_down,
    observe,
    released,
    still_ours,
)
from bot.ha.lease import LeaseConflict, LeaseRead, LeaseUnavailable
from bot.metrics import Metrics
from bot.store.leadership import Fence, LeadershipLost
from config.ha import HaSettings

log = logging.getLogger(__name__)


class Leases(Protocol):
    """The Lease's storage: ``bot.ha.lease.KubeLeases`` (tests may give another)."""

    async def get(self) -> LeaseRead | None: ...
    async def create(self, record: LeaseRecord) -> LeaseRead: ...
    async def replace(self, record: LeaseRecord, resource_version: str) -> LeaseRead: ...


class LeaderElector:
    def __init__(
        self,
        leases: Leases,
        settings: HaSettings,
        fence: Fence,
        metrics: Metrics,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] | None = None,
    ) -> None:
        self._leases = leases
        self._settings = settings
        self._fence = fence
        self._metrics = metrics
        self._monotonic = monotonic
        self._wall = wall or (lambda: datetime.now(UTC))
        self.identity = settings.identity
        self.term: Term | None = None
        self.leading = asyncio.Event()
        self._observed: Observed | None = None
        self._last_renewed = 0.0
        self._gauge = metrics.leader.labels(identity=self.identity)
        self._gauge.set(0)
        # Set by pause_renewals() (tests): the leader stops renewing, as if
        # cut off from the API server, and must step down by its deadline.
        self.renewals_paused = False
        self._api_failing = False
        fence.within_lease = self.within_lease

    @property
    def duration_s(self) -> int:
        return max(1, round(self._settings.lease_duration_s))

    async def run(self, stop: asyncio.Event, on_lead: Callable[[Term], Awaitable[None]]) -> None:
        """Stand by until we lead, call ``on_lead``, renew until ``stop``; ``LeadershipLost`` on losing."""
        log.info("standby: waiting for the lease %s (as %s)", self._settings.lease_name, self.identity)
        while not stop.is_set():
            term = await self._try_acquire()
            if term is not None:
                break
            if await _sleep_or_stop(stop, self._settings.retry_period_s):
                return
        else:
            return
        self.term = term
        self.leading.set()
        self._gauge.set(1)
        self._metrics.leadership_transitions.labels(direction="gained").inc()
        log.warning("took the lead as %s (term %d)", self.identity, term.token)
        await on_lead(term)
        await self._renew_until(stop, term)

    async def release(self) -> None:
        """On a clean stop: give the Lease up, so a standby takes it at once instead of after expiry."""
        term, observed = self.term, self._observed
        if term is None or observed is None or not self.leading.is_set():
            return
        try:
            await self._leases.replace(released(observed.record), observed.resource_version)
        except (LeaseConflict, LeaseUnavailable) as error:
            log.warning("could not release the lease (%s); it expires on its own", error)
            return
        self._lost("released the lead on shutdown")

    async def _try_acquire(self) -> Term | None:
        try:
            decision = await self._decide(term=None)
            self._api_failing = False
            if decision.verb is Verb.WAIT or decision.record is None:
                return None
            written = await self._write(decision)
        except LeaseConflict as error:
            log.debug("lease not acquired: %s", error)
            return None
        except LeaseUnavailable as error:
            # Once per outage, not every retry period.
            if not self._api_failing:
                log.warning("standby cannot read or take the lease: %s; retrying", error)
            self._api_failing = True
            return None
        self._last_renewed = self._monotonic()
        record = written.record
        # Fence before acting: a store holding a newer term means another
        # replica led after the Lease we just took was read (we are stale).
        if not await self._fence.take(self.identity, record.transitions):
            log.warning(
                "took the lease but the store holds a newer term than %d; standing by", record.transitions
            )
            return None
        return Term(record.transitions, record.acquire_time or self._wall())

    async def _renew_until(self, stop: asyncio.Event, term: Term) -> None:
        # Sleeps and renewals are cut at the deadline, so a hung API call
        # cannot keep this replica acting past it.
        while not await _sleep_or_stop(
            stop, max(0.001, min(self._settings.retry_period_s, self._until_deadline()))
        ):
            if self._fence.lost.is_set():
                self._lost("fenced by a newer term in the store")
                raise LeadershipLost("fenced by a newer term in the store")
            if not self.renewals_paused and self._until_deadline() > 0:
                try:
                    await asyncio.wait_for(self._renew(term), max(0.001, self._until_deadline()))
                except TimeoutError:
                    log.warning("lease renewal did not finish before the renew deadline")
            now = self._monotonic()
            if must_step_down(
                last_renewed=self._last_renewed, now=now, renew_deadline_s=self._settings.renew_deadline_s
            ):
                self._lost(f"no renewal for {now - self._last_renewed:.1f} s")
                raise LeadershipLost("could not renew the lease within the renew deadline")

    def within_lease(self) -> bool:
        """True while this replica leads and renewed its Lease within the renew deadline (monotonic clock)."""
        return self.term is not None and self._until_deadline() > 0

    def _until_deadline(self) -> float:
        """Seconds left before this leader must step down (0 or less: it must now)."""
        return self._settings.renew_deadline_s - (self._monotonic() - self._last_renewed)

    async def _renew(self, term: Term) -> None:
        try:
            decision = await self._decide(term=term)
            observed = self._observed
            if observed is not None and not still_ours(observed, identity=self.identity, term=term):
                self._lost(f"the lease is held by {observed.record.holder or 'nobody'}")
                raise LeadershipLost("another replica holds the lease")
            if decision.verb is not Verb.RENEW:
                return
            await self._write(decision)
        except (LeaseConflict, LeaseUnavailable) as error:
            log.warning("lease renewal failed: %s", error)
            return
        self._last_renewed = self._monotonic()

    async def _decide(self, *, term: Term | None) -> Decision:
        read = await self._leases.get()
        now = self._monotonic()
        if read is None:
            self._observed = None
        else:
            self._observed = observe(self._observed, read.record, read.resource_version, now)
        _, floor = await self._fence.stored()
        return decide(
            identity=self.identity,
            duration_s=self.duration_s,
            observed=self._observed,
            term=term,
            now=now,
            wall_now=self._wall(),
            floor=floor,
        )

    async def _write(self, decision: Decision) -> LeaseRead:
        assert decision.record is not None
        if decision.verb is Verb.CREATE:
            written = await self._leases.create(decision.record)
        else:
            assert self._observed is not None
            written = await self._leases.replace(decision.record, self._observed.resource_version)
        # Our own write is a change we made now: count expiry from it.
        self._observed = observe(self._observed, written.record, written.resource_version, self._monotonic())
        return written

    def _lost(self, why: str) -> None:
        if self.leading.is_set():
            self.leading.clear()
            self._gauge.set(0)
            self._metrics.leadership_transitions.labels(direction="lost").inc()
            log.warning("lost the lead as %s: %s", self.identity, why)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
