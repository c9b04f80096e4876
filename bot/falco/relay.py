"""The Falco relay: events in, aggregated messages out, never more than the homeserver allows.

``FalcoRelay.accept`` is what the webhook handler calls. The falcosidekick
test event and events below the minimum priority are only counted. Every
other event is folded into ``FalcoState`` (a mute's tally, or an aggregate:
its own message or a digest line) and the change is committed before
``accept`` returns; ``StoreUnavailableError`` when the store cannot take it.

**Group commit.** Events that arrive while a transaction runs wait and are
committed together in the next one, so a storm of hundreds of events a
second costs a few transactions a second and the answers stay fast. A batch
that fails for a reason other than the store is retried event by event, so
one bad event cannot fail the others.

**State.** Kept in memory (loaded at start-up) and written through to
``FalcoRepo`` in the same transaction as the outbox rows. Memory is changed
in place during a transaction; if it fails, memory is reloaded from the
store (the source of truth) before anything else runs.

**Budget.** Only a new kind of event is posted at once, and only if the
send budget allows its tier (``bot.falco.events.Spending``); otherwise it
becomes a line in the room's digest. Everything else (updated counts, the
digest) is left dirty and brought up to date by ``tick`` (the ``run`` root
task), again only as far as the budget allows, most important first. So the
bot itself stays under the homeserver's rate limit instead of queueing
events the homeserver would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from bot.errors import StoreUnavailableError
from bot.falco.events import FalcoEvent, Outcome, Spending, classify
from bot.falco.render import FalcoRenderer
from bot.falco.state import Aggregate, Digest, Dirty, FalcoState, Flush, Mute
from bot.falco.store import FalcoRepo, FalcoWrite, MessageRecord, MuteRecord
from bot.outbox import Outbox
from bot.outbox.batching import GroupCommit
from bot.outbox.budget import RateBudget
from bot.outbox.events import stored_ref
from bot.render.message import Message, mentioning_content
from bot.store.database import Database
from bot.store.tx import Tx
from config.falco import FalcoSettings

log = logging.getLogger(__name__)

# The flusher runs at least this often (mute ends, closing windows) and at
# most this often (a storm wakes it after every batch).
TICK_INTERVAL_S = 1.0
MIN_TICK_INTERVAL_S = 0.25
# After an unexpected error in a flush, before the next try.
ERROR_BACKOFF_S = 30.0
# Send times older than a full refill cannot matter; at most this many are read.
_MAX_SEND_TIMES = 1_000
# Distinct rule label values before further rules are counted as "(other)":
# the rule text comes from the sender, and each value is a time series.
MAX_RULE_LABELS = 500
_OTHER_RULE = "(other)"
_MAX_RULE_LABEL_CHARS = 200
_STORE_ERRORS = (sqlite3.OperationalError, sqlite3.DatabaseError)


class FalcoMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "readybot_falco_events",
            "Accepted Falco events by rule, priority and outcome "
            "(posted, aggregated, folded, muted, below_min, test); the outcomes add up to every event.",
            ["rule", "priority", "outcome"],
            registry=registry,
        )
        self.pending = Gauge(
            "readybot_falco_pending_updates",
            "Falco messages waiting for send budget to show their latest counts.",
            registry=registry,
        )
        self.mutes = Gauge("readybot_falco_mutes", "Falco rules muted now.", registry=registry)
        self._rules: set[str] = set()

    def count(self, event: FalcoEvent, outcome: Outcome) -> None:
        rule = event.rule[:_MAX_RULE_LABEL_CHARS]
        if rule not in self._rules:
            if len(self._rules) >= MAX_RULE_LABELS:
                rule = _OTHER_RULE
            else:
                self._rules.add(rule)
        self.events.labels(rule=rule, priority=event.priority, outcome=outcome).inc()


class FalcoRelay:
    """Implements ``bot.falco.webhook.FalcoIntake``, and the mutes behind ``!falco``."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        repo: FalcoRepo,
        renderer: FalcoRenderer,
        settings: FalcoSettings,
        clock: Callable[[], float],
        metrics: FalcoMetrics | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._repo = repo
        self._renderer = renderer
        self.settings = settings
        self._clock = clock
        self.metrics = metrics or FalcoMetrics(CollectorRegistry())
        budget = settings.send_budget
        self._budget = RateBudget(budget.burst, budget.per_minute, clock())
        self._state = FalcoState(settings)
        self._stale = False
        # Batches, ticks and mute commands take turns on the state.
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._group_commit: GroupCommit[FalcoEvent, Outcome] = GroupCommit(
            self._commit,
            lock=self._lock,
            name="falco-relay-commit",
            describe=lambda event: f"falco relay: an event of rule {event.rule[:200]!r}",
            on_committed=self._committed,
            on_failed=self._mark_stale,
        )

    def now(self) -> float:
        return self._clock()

    # -- start-up ------------------------------------------------------------------

    async def load(self) -> None:
        """Read the state the store holds (call once, before accepting)."""
        await self._reload()
        now = self._clock()
        # Replay what was sent in the last two refills (enough for the bucket
        # to be full before it), refilling between sends as the homeserver does.
        budget = self.settings.send_budget
        window = 2 * budget.burst / (budget.per_minute / 60.0)
        self._budget = RateBudget(budget.burst, budget.per_minute, now - window)
        self._budget.observe_sent((await self._outbox.send_load(now - window, _MAX_SEND_TIMES)).sent_at)
        state = self._state
        log.info(
            "falco relay: %d aggregates, %d digests and %d mutes loaded",
            len(state.aggregates),
            len(state.digests),
            len(state.mutes),
        )

    async def _reload(self) -> None:
        loaded = await self._repo.load()
        state = FalcoState(self.settings, loaded.next_id)
        state.restore(
            [_aggregate(r) for r in loaded.aggregates],
            [_digest(r) for r in loaded.digests],
            [Mute.from_json(m.ends_at, m.state) for m in loaded.mutes],
        )
        self._state = state
        self._stale = False
        self._update_gauges()

    async def _ensure_fresh(self) -> None:
        """After a failed transaction, memory may hold changes the store does not: reload."""
        if not self._stale:
            return
        try:
            await self._reload()
        except _STORE_ERRORS as error:
            raise StoreUnavailableError(f"{type(error).__name__}: {error}") from None

    # -- the webhook side -------------------------------------------------------------

    async def accept(self, event: FalcoEvent) -> Outcome:
        """Count the event and commit what it changes; ``StoreUnavailableError`` if the store cannot."""
        quick = classify(event, self.settings)
        if quick is not None:
            self.metrics.count(event, quick)
            return quick
        return await self._group_commit.submit(event)

    def _committed(self, batch: list[FalcoEvent], outcomes: Sequence[Outcome]) -> None:
        for event, outcome in zip(batch, outcomes, strict=True):
            self.metrics.count(event, outcome)
        # The gauges are refreshed by the tick this wakes (counting is O(state)).
        self._wake.set()

    @contextlib.contextmanager
    def _reload_on_failure(self) -> Iterator[None]:
        """Memory and store changed together: if that fails, memory is reloaded before the next use.

        A store error reaches the caller as ``StoreUnavailableError``.
        """
        try:
            yield
        except _STORE_ERRORS as error:
            self._stale = True
            raise StoreUnavailableError(f"{type(error).__name__}: {error}") from None
        except BaseException:
            self._stale = True
            raise

    def _mark_stale(self) -> None:
        # A failed transaction may have left changes in memory the store does
        # not have: reload before anything else runs.
        self._stale = True

    async def _commit(self, batch: list[FalcoEvent]) -> list[Outcome]:
        await self._ensure_fresh()
        now = self._clock()
        state = self._state
        async with self._db.transaction() as tx:
            spending = await self._spending(now, tx)
            outcomes = [state.ingest(event, now, spending) for event in batch]
            for aggregate_id in state.to_post:
                aggregate = state.aggregates[aggregate_id]
                mention = state.mentions(aggregate)
                message = self._renderer.aggregate(aggregate, now=now, mention=mention)
                outbox_id = await self._outbox.send_message(
                    aggregate.room_id, mentioning_content(message, room=mention), tx=tx
                )
                state.posted(aggregate_id, outbox_id, now)
            state.to_post.clear()
            await self._save(tx)
        return outcomes

    # -- the budget ------------------------------------------------------------------------

    async def _spending(self, now: float, tx: Tx | None = None) -> Spending:
        """The budget now: sends recorded so far observed, everything still queued ahead."""
        load = await self._outbox.send_load(self._budget.last_seen, _MAX_SEND_TIMES, tx=tx)
        self._budget.observe_sent(load.sent_at)
        return Spending(self._budget, self.settings.send_budget, load.pending, now)

    # -- flushing, closing, mute ends ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Root task: ``tick`` after every batch (at most every 0.25 s) and at least every second."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_INTERVAL_S):
                    await _first_of(self._wake, stop)
            if stop.is_set():
                return
            self._wake.clear()
            try:
                await self.tick()
            except (StoreUnavailableError, *_STORE_ERRORS) as error:
                log.warning("falco relay: flush failed (%s); retrying", error)
            except Exception:
                # A bug (or an override template failing on some event) must not
                # stop the bot: webhooks are still accepted and counted meanwhile.
                log.exception("falco relay: flush failed; retrying in %.0f s", ERROR_BACKOFF_S)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ERROR_BACKOFF_S):
                        await stop.wait()
            # Enough for a storm's batches to pile up into one flush.
            await asyncio.sleep(MIN_TICK_INTERVAL_S)

    async def tick(self) -> None:
        """End mutes that are due, bring messages up to date within the budget, forget closed ones."""
        async with self._lock:
            await self._ensure_fresh()
            try:
                await self._tick()
            except BaseException:
                self._stale = True
                raise
        self._update_gauges()

    async def _tick(self) -> None:
        state = self._state
        if not (state.aggregates or state.digests or state.mutes):
            return  # idle: nothing can be due, closing or ending
        now = self._clock()
        spending = await self._spending(now)
        due = state.due_flushes(now)
        flushes = [f for f in due if spending.spend(f.tier)]
        if due:
            log.debug(
                "falco flush: %d due, %d queued, %.2f tokens left", len(due), len(flushes), spending.left()
            )
        ended = state.ended_mutes(now)
        state.expire(now)
        backfill = any(
            a.message_event_id is None and a.message_outbox_id is not None for a in state.aggregates.values()
        ) or any(
            d.message_event_id is None and d.message_outbox_id is not None for d in state.digests.values()
        )
        if not (flushes or ended or backfill or state.changes.any()):
            return
        async with self._db.transaction() as tx:
            if backfill:
                self._apply_event_ids(await self._repo.backfill_event_ids(tx))
            for mute in ended:
                await self._announce_end(tx, mute, now, lifted_by=None, skip_room=None)
            for flush in flushes:
                await self._flush(tx, flush, now)
            await self._save(tx)

    async def _flush(self, tx: Tx, flush: Flush, now: float) -> None:
        state = self._state
        if flush.kind == "aggregate":
            aggregate = state.aggregates[flush.id]
            content = mentioning_content(self._renderer.aggregate(aggregate, now=now), room=False)
            await self._outbox.edit(
                aggregate.room_id, stored_ref(aggregate.message), content, supersede=True, tx=tx
            )
            state.flushed(flush, now)
            return
        digest = state.digests[flush.id]
        members = [state.aggregates[m] for m in digest.members if m in state.aggregates]
        content = mentioning_content(self._renderer.digest(digest, members, now=now), room=False)
        if digest.posted:
            await self._outbox.edit(
                digest.room_id, stored_ref(digest.message), content, supersede=True, tx=tx
            )
            state.flushed(flush, now)
        else:
            outbox_id = await self._outbox.send_message(digest.room_id, content, tx=tx)
            state.flushed(flush, now, outbox_id)

    def _apply_event_ids(self, filled: dict[tuple[str, int], str]) -> None:
        for (kind, id_), event_id in filled.items():
            target = self._state.aggregates.get(id_) if kind == "aggregate" else self._state.digests.get(id_)
            if target is not None:
                target.message_event_id = event_id

    # -- mutes ----------------------------------------------------------------------------------

    async def mute(self, rule: str, seconds: float, by: str, room_id: str) -> tuple[Mute, float | None]:
        """Mute ``rule`` for ``seconds``; (the mute, the end it replaced if it was muted already)."""
        async with self._lock:
            await self._ensure_fresh()
            now = self._clock()
            with self._reload_on_failure():
                mute, previous = self._state.set_mute(rule, by, room_id, now, now + seconds)
                async with self._db.transaction() as tx:
                    await self._save(tx)
        self._update_gauges()
        log.info("falco: rule muted until %.0f by %s", mute.ends_at, by)
        return mute, previous

    async def unmute(self, rule: str, by: str, room_id: str) -> Message | None:
        """End a mute now; its summary (the reply for ``room_id``), or None if the rule was not muted.

        The summary also goes to the other rooms the muted events would have gone to.
        """
        async with self._lock:
            await self._ensure_fresh()
            now = self._clock()
            with self._reload_on_failure():
                mute = self._state.end_mute(rule)
                if mute is None:
                    return None
                async with self._db.transaction() as tx:
                    await self._announce_end(tx, mute, now, lifted_by=by, skip_room=room_id)
                    await self._save(tx)
        self._update_gauges()
        log.info("falco: a mute was lifted by %s", by)
        return self._renderer.mute_ended(mute, now=now, lifted_by=by)

    async def mutes(self) -> list[Mute]:
        """The mutes in force, soonest end first."""
        now = self._clock()
        return sorted((m for m in self._state.mutes.values() if now < m.ends_at), key=lambda m: m.ends_at)

    async def _announce_end(
        self,
        tx: Tx,
        mute: Mute,
        now: float,
        *,
        lifted_by: str | None,
        skip_room: str | None,
    ) -> None:
        # A mute's end is rare and owed: it goes out without waiting for budget.
        content = mentioning_content(
            self._renderer.mute_ended(mute, now=now, lifted_by=lifted_by), room=False
        )
        for room_id in dict.fromkeys([*mute.rooms, mute.room_id]):
            if room_id != skip_room:
                await self._outbox.send_message(room_id, content, tx=tx)

    # -- writing through ---------------------------------------------------------------------------

    async def _save(self, tx: Tx) -> None:
        state = self._state
        changes = state.take_changes()
        await self._repo.save(
            tx,
            FalcoWrite(
                next_id=state.next_id,
                aggregates=[_aggregate_record(state.aggregates[i]) for i in sorted(changes.aggregates)],
                digests=[_digest_record(state.digests[i]) for i in sorted(changes.digests)],
                mutes=[
                    MuteRecord(k, state.mutes[k].ends_at, state.mutes[k].to_json()) for k in changes.mutes
                ],
                deleted_aggregates=changes.deleted_aggregates,
                deleted_digests=changes.deleted_digests,
                deleted_mutes=changes.deleted_mutes,
            ),
        )

    def _update_gauges(self) -> None:
        self.metrics.pending.set(self._state.pending())
        self.metrics.mutes.set(len(self._state.mutes))

    # -- for tests ----------------------------------------------------------------------------------

    @property
    def state(self) -> FalcoState:
        return self._state


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _aggregate(record: MessageRecord) -> Aggregate:
    return Aggregate.from_json(
        record.id,
        record.room_id,
        record.digest_id,
        record.message_outbox_id,
        record.message_event_id,
        record.state,
    )


def _digest(record: MessageRecord) -> Digest:
    data = record.state
    return Digest(
        id=record.id,
        room_id=record.room_id,
        opened_at=data["opened_at"],
        window_end=data["window_end"],
        message_outbox_id=record.message_outbox_id,
        message_event_id=record.message_event_id,
        dirty=Dirty(data["dirty"]),
        urgent=data.get("urgent", False),
        flushed_at=data["flushed_at"],
    )


def _aggregate_record(aggregate: Aggregate) -> MessageRecord:
    return MessageRecord(
        aggregate.id,
        aggregate.room_id,
        aggregate.digest_id,
        aggregate.message_outbox_id,
        aggregate.message_event_id,
        aggregate.to_json(),
    )


def _mute_record(mute: Mute) -> MuteRecord:
    return MuteRecord(mute.key, mute.ends_at, mute.to_json())


def _digest_record(digest: Digest) -> MessageRecord:
    return MessageRecord(
        digest.id, digest.room_id, None, digest.message_outbox_id, digest.message_event_id, digest.to_json()
    )
