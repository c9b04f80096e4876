"""The dead-man's switch on Alertmanager's Watchdog: heartbeats in, alarms out.

Alertmanager sends the always-firing Watchdog alert on a short repeat
interval; each notification is a heartbeat of its source (the Alertmanager's
``externalURL``, or a label such as ``cluster``). A scheduled ``check()``
declares a source down when it has been silent longer than the threshold,
posts one alarm per outage in the room and on a second, non-Matrix channel,
and ``heartbeat()`` posts the recovery with the outage's length.

Restart rule. Every source's last heartbeat and up/down state are in the
store. After a restart a source counts as silent from the later of its last
heartbeat and the moment this process began listening: heartbeats sent while
the bot was down were lost by the bot, not missed by the source, so nobody is
alarmed for them (no false alarm); yet a source that went quiet before the
restart is still known from the store and is declared down once a full
threshold has passed since start-up without a heartbeat. A source already
down stays down without a second alarm, and recovers on its next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from bot.deadman.store import (
    HeartbeatRepo,
    Notice,
    NoticeKind,
    NoticeRepo,
    NoticeState,
    SourceRecord,
    SourceState,
)
from bot.outbox import Outbox
from bot.render.templates import Templates
from bot.store.database import Database
from bot.store.leadership import Fence, fence_check
from bot.store.tx import Tx
from config.deadman import DeadmanSettings
from config.durations import format_duration

__all__ = [
    "DeadmanMetrics",
    "DeadmansSwitch",
    "SecondaryChannel",
    "SecondaryChannelError",
    "SourceState",
    "SourceView",
    "evaluate",
]

log = logging.getLogger(__name__)

# A source name comes from a webhook; keep it a sane size in rows and messages.
_MAX_SOURCE_CHARS = 200
_FALLBACK_SOURCE = "alertmanager"
# Between quick retries of one notice on the second channel.
_RETRY_BASE_S = 0.5


class SecondaryChannelError(Exception):
    """A notice could not be delivered on the second channel. The message never holds the token."""


class SecondaryChannel(Protocol):
    """The non-Matrix way out (an ntfy-style HTTP POST); see ``bot.deadman.channels``."""

    async def send(self, title: str, body: str, *, urgent: bool) -> None:
        """Deliver one notice or raise ``SecondaryChannelError``."""
        ...


def evaluate(
    last_seen: float | None, now: float, threshold: float, *, watching_since: float | None = None
) -> SourceState:
    """UP while the source was heard from within ``threshold`` seconds, else DOWN.

    Silence is counted from the later of ``last_seen`` (the last heartbeat)
    and ``watching_since`` (when this process began listening): a bot that
    was itself down could not hear heartbeats, so that time never counts
    against the source.
    """
    reference = silence_start(last_seen, watching_since)
    return SourceState.DOWN if now - reference > threshold else SourceState.UP


def silence_start(last_seen: float | None, watching_since: float | None) -> float:
    """From when a source's silence is counted (see ``evaluate``)."""
    known = [value for value in (last_seen, watching_since) if value is not None]
    if not known:
        raise ValueError("need last_seen or watching_since")
    return max(known)


class DeadmanMetrics:
    """What Prometheus can alert on even when the room cannot be reached."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.source_up = Gauge(
            "readybot_deadman_source_up",
            "1 while a heartbeat source is up, 0 while it is declared down.",
            ["source"],
            registry=registry,
        )
        self.last_heartbeat = Gauge(
            "readybot_deadman_last_heartbeat_timestamp_seconds",
            "Unix time of the last heartbeat from each source.",
            ["source"],
            registry=registry,
        )
        self.alarms = Counter(
            "readybot_deadman_alarms",
            "Outages declared (one alarm each).",
            registry=registry,
        )
        self.secondary_failures = Counter(
            "readybot_deadman_secondary_failures",
            "Delivery rounds in which the second channel could not be reached.",
            registry=registry,
        )

    def forget(self, source: str) -> None:
        """Drop a forgotten source's series, or a gone source would read as down forever."""
        for gauge in (self.source_up, self.last_heartbeat):
            with contextlib.suppress(KeyError):
                gauge.remove(source)


@dataclass(frozen=True, slots=True)
class SourceView:
    """One source as ``!watchdog`` shows it."""

    source: str
    state: SourceState
    last_seen: float | None
    # UP: when it will be declared down if nothing arrives; DOWN: None.
    due_at: float | None
    # DOWN: since when it is silent; UP: when its last outage began (or None).
    silent_since: float | None
    state_since: float
    outages: int
    # The newest notice on the second channel for this source, if any.
    last_notice: Notice | None


class DeadmansSwitch:
    """Tracks heartbeats per source and raises one alarm per outage.

    ``started_at`` is when the bot began accepting webhooks; the clock is
    injected so tests can move time.
    """

    def __init__(
        self,
        settings: DeadmanSettings,
        *,
        db: Database,
        outbox: Outbox,
        templates: Templates,
        rooms: Sequence[str],
        clock: Callable[[], float],
        started_at: float,
        channel: SecondaryChannel | None = None,
        retry_base_s: float = _RETRY_BASE_S,
        metrics: DeadmanMetrics | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.settings = settings
        # ha.enabled: an alarm is raised only under this replica's leadership term.
        self._fence = fence
        self._db = db
        self._outbox = outbox
        self._templates = templates
        self.rooms = tuple(rooms)
        self._clock = clock
        self.started_at = started_at
        self._channel = channel
        self._retry_base_s = retry_base_s
        self._metrics = metrics or DeadmanMetrics(CollectorRegistry())
        self._sources = HeartbeatRepo(db)
        self._notices = NoticeRepo(db)
        self._wake = asyncio.Event()
        # The self-ping only vouches for the bot while checks keep running.
        self.last_check_at = started_at

    # -- the webhook side (called by the Alertmanager relay) ----------------

    def is_heartbeat(self, labels: Mapping[str, str]) -> bool:
        """True for an alert carrying every label of ``deadman.heartbeat_matchers``."""
        return all(labels.get(name) == value for name, value in self.settings.heartbeat_matchers.items())

    def source_of(self, external_url: str, common_labels: Mapping[str, str]) -> str:
        """The source of a notification's heartbeats: the source label's value, else the externalURL."""
        label = self.settings.source_label
        if label is not None and common_labels.get(label):
            source = common_labels[label]
        else:
            source = external_url.strip().rstrip("/") or _FALLBACK_SOURCE
        return source[:_MAX_SOURCE_CHARS]

    async def heartbeat(self, source: str, *, tx: Tx | None = None) -> None:
        """Record a heartbeat of ``source`` (in the caller's transaction when given).

        A heartbeat from a source that is down ends its outage: the recovery
        message is queued in the same transaction, and the second channel is
        told once that transaction has committed.
        """
        if not self.settings.enabled:
            return
        now = self._clock()
        async with self._db.transaction(tx) as conn:
            recovered = await self._sources.mark_up(conn, source, now)
            if recovered is None:
                await self._sources.beat(conn, source, now)
                return
            await self._announce_recovery(conn, recovered, now)
        # Wakes the delivery task, whose reads wait for the caller's commit.
        self._wake.set()

    # -- the scheduled side -------------------------------------------------

    async def watch_expected(self) -> None:
        """Start watching the configured sources even if they never beat (call once at start-up)."""
        if not self.settings.enabled or not self.settings.expected_sources:
            return
        async with self._db.transaction() as conn:
            for source in self.settings.expected_sources:
                await self._sources.ensure(conn, source, self.started_at)

    async def check(self) -> list[str]:
        """Declare every source silent past the threshold down; return the sources newly down."""
        now = self._clock()
        self.last_check_at = now
        if not self.settings.enabled:
            return []
        newly_down: list[str] = []
        for record in await self._sources.all():
            self._export(record)
            if record.state is SourceState.DOWN:
                continue  # one alarm per outage: it was raised when the source went down
            state = evaluate(record.last_seen, now, self.settings.threshold_s, watching_since=self.started_at)
            if state is SourceState.DOWN and await self._declare_down(record, now):
                newly_down.append(record.source)
                self._metrics.alarms.inc()
                self._metrics.source_up.labels(source=record.source).set(0)
        if newly_down:
            self._wake.set()
        return newly_down

    def healthy(self, now: float) -> bool:
        """Whether checks are still running (what the self-ping vouches for)."""
        if not self.settings.enabled:
            return True
        return now - self.last_check_at <= 3 * self.settings.check_interval_s + 5

    async def status(self) -> list[SourceView]:
        """Every known source with its state, for ``!watchdog``."""
        views = []
        for record in await self._sources.all():
            due = None
            if record.state is SourceState.UP:
                due = silence_start(record.last_seen, self.started_at) + self.settings.threshold_s
            views.append(
                SourceView(
                    source=record.source,
                    state=record.state,
                    last_seen=record.last_seen,
                    due_at=due,
                    silent_since=record.silent_since,
                    state_since=record.state_since,
                    outages=record.outages,
                    last_notice=await self._notices.latest(record.source),
                )
            )
        return views

    async def forget(self, source: str) -> SourceRecord | None:
        """Stop tracking a source that is gone for good; the record it had, None if unknown.

        A source listed in ``deadman.expected_sources`` is refused by the
        caller: it would be watched again at the next start. A forgotten
        source that beats again is simply tracked anew.
        """
        async with self._db.transaction() as conn:
            record = await self._sources.forget(conn, source)
        if record is not None:
            self._metrics.forget(source)
        return record

    # -- the second channel -------------------------------------------------

    async def run_secondary(self, stop: asyncio.Event) -> None:
        """Root task: deliver notices to the second channel as they are raised, and retry unsent ones."""
        if self._channel is None:
            await stop.wait()
            return
        while not stop.is_set():
            delivery = asyncio.create_task(self.deliver_pending())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({delivery, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not delivery.done():
                # Shutting down mid-send: the notice stays pending and is sent after the restart.
                delivery.cancel()
            stopping.cancel()
            await asyncio.gather(delivery, stopping, return_exceptions=True)
            if stop.is_set():
                return
            waker = asyncio.create_task(self._wake.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait(
                {waker, stopping}, timeout=self.settings.check_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            waker.cancel()
            stopping.cancel()
            await asyncio.gather(waker, stopping, return_exceptions=True)
            self._wake.clear()

    async def deliver_pending(self) -> int:
        """Send the pending notices in order; return how many were sent.

        Each gets ``secondary.attempts`` quick tries; one still failing stays
        pending for the next round (and stops this one: the channel is likely
        down for the rest too) until ``give_up_after_s`` has passed.
        """
        if self._channel is None:
            return 0
        sent = 0
        secondary = self.settings.secondary
        for notice in await self._notices.pending():
            now = self._clock()
            if now - notice.created_at > secondary.give_up_after_s:
                await self._notices.settle(notice.id, NoticeState.FAILED, now, error="gave up: too old")
                log.error("deadman: gave up sending %s of %s on the 2nd channel", notice.kind, notice.source)
                continue
            error = await self._send_with_retries(notice)
            if error is None:
                await self._notices.settle(notice.id, NoticeState.SENT, self._clock())
                log.info("deadman: %s of %s sent on the second channel", notice.kind, notice.source)
                sent += 1
                continue
            await self._notices.record_failure(notice.id, error)
            self._metrics.secondary_failures.inc()
            log.warning(
                "deadman: %s of %s not delivered on the second channel (%s); will retry",
                notice.kind,
                notice.source,
                error,
            )
            break
        return sent

    async def _send_with_retries(self, notice: Notice) -> str | None:
        """None when sent, else the last error (safe to log: it never holds the token)."""
        assert self._channel is not None
        error = "not tried"
        for attempt in range(self.settings.secondary.attempts):
            if attempt:
                await asyncio.sleep(self._retry_base_s * 2 ** (attempt - 1))
            try:
                await self._channel.send(notice.title, notice.body, urgent=notice.kind is NoticeKind.ALARM)
            except SecondaryChannelError as exc:
                error = str(exc)
            else:
                return None
        return error

    # -- transitions ----------------------------------------------------------

    def _export(self, record: SourceRecord) -> None:
        self._metrics.source_up.labels(source=record.source).set(1 if record.state is SourceState.UP else 0)
        if record.last_seen is not None:
            self._metrics.last_heartbeat.labels(source=record.source).set(record.last_seen)

    async def _declare_down(self, record: SourceRecord, now: float) -> bool:
        silent_since = silence_start(record.last_seen, self.started_at)
        context = {
            "source": record.source,
            "silent_for": format_duration(now - silent_since),
            "threshold": format_duration(self.settings.threshold_s),
            "last_seen": _utc(record.last_seen),
            "watching_since": _utc(self.started_at),
        }
        message = self._templates.render("deadman_alarm", **context)
        async with self._db.transaction() as conn:
            await fence_check(self._fence, conn)
            # Compare-and-set on the last_seen we evaluated: a heartbeat that
            # slipped in since then means the source is not down after all.
            if not await self._sources.mark_down(
                conn, record.source, at=now, silent_since=silent_since, last_seen=record.last_seen
            ):
                return False
            refs: dict[str, int] = {}
            for room in self.rooms:
                refs[room] = await self._outbox.send_message(room, message.content(), tx=conn)
            await self._sources.set_alarm_refs(conn, record.source, refs)
            if self._channel is not None:
                title = f"readybot: no heartbeat from {record.source}"
                await self._notices.add(conn, record.source, NoticeKind.ALARM, title, message.plain, now)
        log.warning(
            "deadman: %s is down (silent for %s, threshold %s)",
            record.source,
            context["silent_for"],
            context["threshold"],
        )
        return True

    async def _announce_recovery(self, conn: Tx, record: SourceRecord, now: float) -> None:
        silent_since = record.silent_since if record.silent_since is not None else record.state_since
        outage = format_duration(now - silent_since)
        message = self._templates.render(
            "deadman_recovery", source=record.source, outage=outage, silent_since=_utc(silent_since)
        )
        for room in self.rooms:
            reply_to = await self._outbox.reply_target(room, record.alarm_refs.get(room), tx=conn)
            await self._outbox.send_message(room, message.content(), reply_to=reply_to, tx=conn)
        if self._channel is not None:
            title = f"readybot: heartbeats from {record.source} are back"
            await self._notices.add(conn, record.source, NoticeKind.RECOVERY, title, message.plain, now)
        log.warning("deadman: %s is back after %s", record.source, outage)


def _utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
