"""The consumer side of the outbox: sends each room's rows, with back-off.

``OutboxSender`` runs one task per room with pending rows (rooms proceed
independently). Within a room it has up to ``max_in_flight_per_room`` rows on
their way at once, started in id order, under one rule (``_eligible``): a row
that relates to another event (reply, edit, reaction, thread line) starts
only once every earlier row of the room that relates to something, and the
row it targets, are settled. So relations keep their queue order and an edit
always follows its message; plain messages that depend on nothing may
overtake one another. Retrying with back-off while
the homeserver is unreachable, pausing every room on a 429 (the rate limit is
per user), and giving up on a row only after repeated permanent refusals. A
row is recorded as sent only if its txn id is unchanged, so an edit superseded
while on its way is sent again with the newer content.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol, runtime_checkable

from bot.metrics import Metrics
from bot.outbox.errors import PermanentSendError, RateLimited, TransientSendError
from bot.outbox.events import build_event, with_marker
from bot.outbox.inflight import HistoryTransport, InFlightRepo, Lookup, SentLookup
from bot.outbox.media import OutboxMediaRepo
from bot.outbox.repo import OutboxId, OutboxRepo, OutboxRow, OutboxState, Ref
from bot.store.database import Database
from bot.store.leadership import Fence
from bot.testhooks import hold_point
from config.settings import OutboxSettings

log = logging.getLogger(__name__)

_INITIAL_BACKOFF_S = 0.5


@runtime_checkable
class MediaTransport(Protocol):
    """A transport that can also upload to the homeserver's media repository (for image rows)."""

    def room_encrypted(self, room_id: str) -> bool:
        """Whether the room is end-to-end encrypted (then media are uploaded encrypted)."""
        ...

    async def upload(self, data: bytes, content_type: str, filename: str, *, encrypt: bool) -> dict[str, Any]:
        """Upload; ``{"url": mxc}``, or ``{"file": {url, key, iv, hashes, v}}`` when encrypted.

        Raises ``RateLimited``, ``TransientSendError`` or ``PermanentSendError``.
        """
        ...


class MatrixTransport(Protocol):
    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        """Send one event with the given txn id and return its event id.

        Raises ``RateLimited``, ``TransientSendError`` or ``PermanentSendError``.
        """
        ...


class _Backoff:
    """Exponential back-off with a ceiling and a little jitter (so rooms do not retry in lockstep)."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self._failures = 0

    def next_delay(self) -> float:
        base = min(self._max, self._initial * 2.0**self._failures)
        self._failures += 1
        # Jitter below the base only, so the configured ceiling holds.
        return base * random.uniform(0.8, 1.0)  # noqa: S311 (timing jitter, not security)


# Message types whose row may carry media to upload (bot.outbox.media).
_MEDIA_MSGTYPES = frozenset({"m.image", "m.file", "m.audio", "m.video"})


class _TargetFailedError(Exception):
    """A row this one relates to was never sent, so this one cannot be either."""


def _eligible(rows: list[OutboxRow], in_flight: Collection[OutboxId]) -> list[OutboxRow]:
    """Which of a room's oldest pending rows (in id order) may start now, oldest first.

    A row with no relation may always start. A row that relates to another
    event (target or thread root) may start only when no earlier row that
    relates to something is still pending (so relations keep their order:
    two edits of one message, a thread's lines) and the row it targets, if
    it is a row of the outbox, is settled (its event id is known). Rows in
    flight are not started again.
    """
    eligible: list[OutboxRow] = []
    pending_ids = {row.id for row in rows}
    relation_waiting = False
    for row in rows:
        refs = [ref.outbox_id for ref in (row.target, row.root) if ref.outbox_id is not None]
        related = bool(refs) or row.target.event_id is not None or row.root.event_id is not None
        waits = related and (relation_waiting or any(ref in pending_ids and ref < row.id for ref in refs))
        if row.id not in in_flight and not waits:
            eligible.append(row)
        relation_waiting = relation_waiting or related
    return eligible


class OutboxSender:
    """Drains the outbox: one task per room with pending rows, all under ``run``."""

    def __init__(
        self,
        db: Database,
        transport: MatrixTransport,
        settings: OutboxSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] | None = None,
        initial_backoff_s: float = _INITIAL_BACKOFF_S,
        fence: Fence | None = None,
    ) -> None:
        self._repo = OutboxRepo(db)
        # With ha.enabled: every send is claimed under this replica's leadership term.
        self._fence = fence
        self._media = OutboxMediaRepo(db)
        self._transport = transport
        self._settings = settings
        self._metrics = metrics
        self._clock = clock or db.clock
        self._initial_backoff_s = initial_backoff_s
        self._wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        # A 429 pauses every room until this time.monotonic() deadline.
        self._paused_until = 0.0
        self._oldest_pending_at: float | None = None
        # Failover safety (bot.outbox.inflight): rows this process has begun
        # sending, this installation's id for the events' marker, and the
        # look-back for rows an earlier process had begun.
        self._in_flight = InFlightRepo(db)
        self._begun: set[OutboxId] = set()
        self._origin: str | None = None
        self._lookup: SentLookup | None = None
        self.new_term()

    def new_term(self) -> None:
        """Forget which rows this sender began and what it read of the rooms (``run`` calls it).

        Across a lead lost and taken again, another replica may have begun or
        sent those rows meanwhile: they are looked for again, like any row
        begun before this term.
        """
        self._begun.clear()
        transport = self._transport
        self._lookup = SentLookup(transport) if isinstance(transport, HistoryTransport) else None

    def wake(self) -> None:
        """Something was enqueued: look for rooms with pending rows. Safe to call any time."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, then cancel in-flight sends and return.

        Rows cut short stay pending; the next run (a new term: ``new_term``)
        looks for them in the room and resends (same txn id) those it does
        not find. An unexpected error in a room task (e.g. the store failing) ends
        ``run`` with that error, so the supervisor restarts the bot.
        """
        self.new_term()
        # Evaluated at scrape time, so the age grows while nothing changes.
        self._metrics.outbox_oldest_age.set_function(self._oldest_age)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._wake_on(stop), name="outbox-stop")
            while not stop.is_set():
                self._wake.clear()
                await self._refresh_gauges()
                for room_id in await self._repo.rooms_with_pending():
                    if room_id not in self._workers:
                        self._workers[room_id] = group.create_task(
                            self._drain_room(room_id), name=f"outbox:{room_id}"
                        )
                await self._wake.wait()
            for task in list(self._workers.values()):
                task.cancel()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _drain_room(self, room_id: str) -> None:
        limit = self._settings.max_in_flight_per_room
        in_flight: dict[OutboxId, asyncio.Task[None]] = {}
        try:
            while True:
                # Only the room's first ``limit`` pending rows may be on their way:
                # what Outbox.rewrite_pending relies on to rewrite the rest in place.
                rows = await self._repo.pending_in_room(room_id, limit)
                for row in _eligible(rows, in_flight.keys()):
                    if len(in_flight) >= limit:
                        break
                    in_flight[row.id] = asyncio.create_task(self._deliver(row), name=f"outbox-row:{row.id}")
                if not in_flight:
                    # The oldest pending row is always eligible: nothing started means nothing pending.
                    return
                done, _ = await asyncio.wait(in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
                for row_id, task in list(in_flight.items()):
                    if task in done:
                        del in_flight[row_id]
                        task.result()  # an unexpected error ends ``run``, as before
                await self._refresh_gauges()
        finally:
            for task in in_flight.values():
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight.values(), return_exceptions=True)
            self._workers.pop(room_id, None)
            # Defensive: have the supervisor look again, in case a row was
            # committed for this room after our last look. (Today no await
            # separates that look from the pop above, so it cannot happen.)
            self._wake.set()

    # One return per way a row settles (sent, found sent before, superseded, failed, unbuildable).
    async def _deliver(self, row: OutboxRow) -> None:  # noqa: PLR0911
        """Send one row until it is sent or has failed for good."""
        try:
            event_type, content = await self._build(row)
        except _TargetFailedError as exc:
            await self._give_up(row, str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            # A row that cannot be built never will be: do not block the room.
            log.exception("outbox %d (%s in %s) cannot be built", row.id, row.kind.value, row.room_id)
            await self._give_up(row, f"cannot build event: {type(exc).__name__}")
            return
        backoff = _Backoff(self._initial_backoff_s, self._settings.max_backoff_s)
        failures = 0
        retrying = False
        began_before = await self._begin(row)
        while True:
            await self._wait_rate_limit()
            # After a pause or back-off the row may have been superseded (a
            # newer edit took its place): then the room's loop reads it again
            # rather than spend an event of the rate budget on stale content.
            if retrying and await self._superseded(row):
                return
            retrying = True
            if self._fence is not None:
                # Raises LeadershipLost when another replica leads: nothing is
                # sent, and run() ends with it (the process restarts as a standby).
                await self._fence.check()
            try:
                if began_before is not None:
                    if await self._sent_before(row, began_before):
                        return
                    began_before = None
                if content.get("msgtype") in _MEDIA_MSGTYPES:
                    content = await self._with_media(row, content)
                event_id = await self._transport.send_event(row.room_id, event_type, content, row.txn_id)
                hold_point("outbox.sent", str(content.get("body", "")))
            except RateLimited as exc:
                self._pause(row, exc)
                continue
            except PermanentSendError as exc:
                failures += 1
                if await self._count_failure(row, exc, failures, refused=True):
                    return
            except Exception as exc:  # TransientSendError, or a transport bug: retry, never stall
                failures += 1
                if not isinstance(exc, TransientSendError):
                    log.exception("outbox %d: unexpected error from transport", row.id)
                if await self._count_failure(row, exc, failures, refused=False):
                    return
            else:
                # False when the row was superseded while on its way (a newer
                # edit replaced its content and txn id): it stays pending and
                # the room's loop sends the newer content next.
                await self._repo.mark_sent(row.id, event_id, self._clock(), txn_id=row.txn_id)
                self._metrics.messages_sent.labels(kind=row.kind.value).inc()
                log.debug("outbox %d sent as %s: %s in %s", row.id, event_id, row.kind.value, row.room_id)
                return
            await asyncio.sleep(backoff.next_delay())

    async def _with_media(self, row: OutboxRow, content: dict[str, Any]) -> dict[str, Any]:
        """The content with its uploaded media's ``url``/``file``, uploading first if not done yet."""
        media = await self._media.get(row.id)
        if media is None:
            return content  # media sent by reference (an mxc URL in the content already)
        uploaded = media.uploaded
        if uploaded is None:
            transport = self._transport
            if not isinstance(transport, MediaTransport):
                raise PermanentSendError("this transport cannot upload media")
            uploaded = await transport.upload(
                media.data,
                media.content_type,
                media.filename,
                encrypt=transport.room_encrypted(row.room_id),
            )
            # Recorded before the send: a retry (or a restart) reuses the upload.
            await self._media.set_uploaded(row.id, uploaded)
        return {**content, **uploaded}

    async def _superseded(self, row: OutboxRow) -> bool:
        """Whether the row changed (new content and txn id) or settled since it was read."""
        fresh = await self._repo.get(row.id)
        return fresh is None or fresh.state is not OutboxState.PENDING or fresh.txn_id != row.txn_id

    async def _build(self, row: OutboxRow) -> tuple[str, dict[str, Any]]:
        target = await self._resolve(row.target)
        root = await self._resolve(row.root)
        event_type, content = build_event(row.kind, row.payload, target, root)
        if self._origin is None:
            self._origin = await self._in_flight.origin()
        return event_type, with_marker(content, origin=self._origin, outbox_id=row.id, txn_id=row.txn_id)

    # -- failover safety (bot.outbox.inflight) ---------------------------------

    async def _begin(self, row: OutboxRow) -> float | None:
        """Mark the row begun before its first send; when an earlier process had begun it, since when."""
        if row.id in self._begun:
            return None
        earlier = await self._in_flight.begin(row.id, self._clock(), fence=self._fence)
        self._begun.add(row.id)
        return earlier

    async def _sent_before(self, row: OutboxRow, began_at: float) -> bool:
        """Whether an earlier process's send of the row is in the room; if so it is recorded as sent.

        Raises ``RateLimited``/``TransientSendError`` to be retried like a
        send. A refused look-back (e.g. history not visible) proves nothing:
        the row is sent, as it would be without the look-back.
        """
        if self._lookup is None:
            return False
        try:
            outcome, event_id = await self._lookup.find(row.room_id, row.txn_id, began_at)
        except PermanentSendError as exc:
            outcome, event_id = Lookup.UNKNOWN, None
            log.warning("outbox %d: cannot read %s's history (%s)", row.id, row.room_id, exc)
        self._metrics.outbox_resume_lookups.labels(outcome=outcome.value).inc()
        if outcome is Lookup.FOUND and event_id is not None:
            await self._repo.mark_sent(row.id, event_id, self._clock(), txn_id=row.txn_id)
            log.info("outbox %d was sent before the restart as %s; not sending again", row.id, event_id)
            return True
        if outcome is Lookup.UNKNOWN:
            log.warning(
                "outbox %d (%s in %s) may have been sent before the restart (beyond the look-back);"
                " sending it, so it may show twice",
                row.id,
                row.kind.value,
                row.room_id,
            )
        return False

    async def _resolve(self, ref: Ref) -> str | None:
        """The event id a reference stands for, now that earlier rows of the room are settled."""
        if ref.event_id is not None or ref.outbox_id is None:
            return ref.event_id
        target = await self._repo.get(ref.outbox_id)
        if target is None or target.state is not OutboxState.SENT or target.event_id is None:
            state = "missing" if target is None else target.state.value
            raise _TargetFailedError(f"related outbox row {ref.outbox_id} is {state}")
        return target.event_id

    def _pause(self, row: OutboxRow, exc: RateLimited) -> None:
        # The limit is per user, so every room waits; never shorten a pause
        # another room's 429 already set. The floor keeps a server that says
        # "retry after 0" from turning this loop into a busy loop.
        retry_after = max(self._initial_backoff_s, exc.retry_after_s)
        self._paused_until = max(self._paused_until, time.monotonic() + retry_after)
        self._metrics.send_failures.labels(reason="rate_limited").inc()
        log.warning(
            "outbox %d in %s rate limited; all sending paused %.1f s", row.id, row.room_id, retry_after
        )

    async def _wait_rate_limit(self) -> None:
        # Sleeping to a deadline is not polling; loop because another room's
        # 429 may push the deadline further while we sleep.
        while (delay := self._paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    async def _count_failure(self, row: OutboxRow, exc: Exception, failures: int, *, refused: bool) -> bool:
        """Record a failed attempt; True if the row is settled (failed for good) and the room moves on.

        ``failures`` counts this row's failed attempts in this run; the log
        line is written on the 1st, 2nd, 4th, 8th, ... so an hour-long outage
        does not flood the log.
        """
        reason = "permanent" if refused else "transient"
        self._metrics.send_failures.labels(reason=reason).inc()
        error = f"{type(exc).__name__}: {exc}"
        state = await self._repo.record_failure(
            row.id,
            error,
            self._clock(),
            refused=refused,
            max_refusals=self._settings.max_attempts_permanent,
        )
        if state is OutboxState.PENDING:
            if failures & (failures - 1) == 0:  # a power of two
                log.warning(
                    "outbox %d (%s in %s) attempt failed (%s, %d so far), will retry",
                    row.id,
                    row.kind.value,
                    row.room_id,
                    type(exc).__name__,
                    failures,
                )
            return False
        if state is OutboxState.FAILED:
            self._metrics.messages_dropped.inc()
            log.error(
                "outbox %d (%s in %s) refused %d times (%s); giving up",
                row.id,
                row.kind.value,
                row.room_id,
                self._settings.max_attempts_permanent,
                error,
            )
        return True

    async def _give_up(self, row: OutboxRow, error: str) -> None:
        if await self._repo.mark_failed(row.id, error, self._clock()):
            self._metrics.messages_dropped.inc()
            log.error("outbox %d (%s in %s) failed: %s", row.id, row.kind.value, row.room_id, error)

    async def _refresh_gauges(self) -> None:
        pending = await self._repo.pending_stats()
        self._metrics.outbox_depth.set(pending.depth)
        self._oldest_pending_at = pending.oldest_created_at

    def _oldest_age(self) -> float:
        oldest = self._oldest_pending_at
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)
