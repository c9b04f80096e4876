"""The Velero relay's glue: watch callbacks and checks in, "reported" rows and outbox messages out.

Exactly once, across relists and restarts: every message is queued in the
same transaction as the row that says it was (``bot.velero.store``), and that
row is a compare-and-set. A relist (after a 410, or at start-up) sees every
object again; whatever already has its row is skipped, whatever ended while
the bot was away or the watch was broken has none and is reported then.
The very first listing of a namespace adopts what is there silently, so
installing the bot does not replay a cluster's whole history.

The service keeps the current objects in memory (the watches keep them
fresh) for the missed-schedule check and ``!backups``. That check only runs
while the Backup and Schedule watches are healthy: a stale view would turn
a broken watch into false "missed" alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from bot.kube.errors import KubeError
from bot.outbox import Outbox
from bot.render.message import Message
from bot.render.templates import Templates
from bot.store.database import Database
from bot.store.tx import Tx
from bot.velero import render
from bot.velero.model import (
    LocationView,
    RunKind,
    RunView,
    ScheduleView,
    parse_location,
    parse_run,
    parse_schedule,
)
from bot.velero.outcomes import (
    Disposition,
    LocationChange,
    clears_missed,
    disposition,
    due_run,
    last_started,
    location_change,
    missed_run,
    recent_enough,
)
from bot.velero.store import LocationRecord, MissedAlert, OutcomeRecord, VeleroRepo
from config.cron import CronError, Schedule, parse_cron
from config.velero import VeleroSettings

log = logging.getLogger(__name__)

# Watch names (the resources' plurals), as the feature and the statuses use them.
BACKUPS: Final = "backups"
RESTORES: Final = "restores"
SCHEDULES: Final = "schedules"
LOCATIONS: Final = "backupstoragelocations"
_PLURALS: Final = {RunKind.BACKUP: BACKUPS, RunKind.RESTORE: RESTORES}
_DELETED: Final = "DELETED"
_PRUNE_EVERY_S: Final = 3_600.0


class WatchHealth(Protocol):
    """What the service reads of a watch loop's ``WatchStatus``."""

    @property
    def last_error(self) -> KubeError | None: ...


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """One schedule as ``!backups`` shows it."""

    view: ScheduleView
    cron_error: str | None
    last_backup: RunView | None
    last_start: datetime | None
    due: datetime | None
    missed: MissedAlert | None


@dataclass(frozen=True, slots=True)
class Overview:
    namespace: str
    # False until the Schedules and Backups have been listed once.
    listed: bool
    # "cluster unreachable: …" and the like, while a watch is failing.
    problem: str | None
    schedules: list[ScheduleState]
    last_manual: RunView | None
    locations: list[tuple[LocationView, LocationRecord | None]]


@dataclass(frozen=True, slots=True)
class History:
    state: ScheduleState
    runs: list[RunView]
    total: int
    problem: str | None


@dataclass
class _Cache:
    runs: dict[RunKind, dict[str, RunView]] = field(
        default_factory=lambda: {RunKind.BACKUP: {}, RunKind.RESTORE: {}}
    )
    schedules: dict[str, ScheduleView] = field(default_factory=dict)
    locations: dict[str, LocationView] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)
    # When the relay saw a schedule go from paused to running (not persisted:
    # after a restart the schedule's own times are all there is).
    unpaused_at: dict[str, datetime] = field(default_factory=dict)
    # Parsed schedule expressions by schedule name, with the text they were parsed from.
    crons: dict[str, tuple[str, Schedule | CronError]] = field(default_factory=dict)


class VeleroService:
    """Follows one Velero namespace and reports to ``settings.rooms``."""

    def __init__(
        self,
        settings: VeleroSettings,
        *,
        db: Database,
        outbox: Outbox,
        templates: Templates,
        clock: Callable[[], float],
        statuses: Mapping[str, WatchHealth] | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.rooms = tuple(settings.rooms)
        self._db = db
        self._outbox = outbox
        self._repo = VeleroRepo(db)
        self._templates = templates
        self._clock = clock
        self.statuses: dict[str, WatchHealth] = dict(statuses or {})
        self._cache = _Cache()
        self._pruned_at = 0.0

    # -- watch callbacks ---------------------------------------------------------

    async def backups_listed(self, items: list[dict[str, Any]]) -> None:
        await self._runs_listed(RunKind.BACKUP, items)

    async def backup_changed(self, event: str, obj: dict[str, Any]) -> None:
        await self._run_changed(RunKind.BACKUP, event, obj)

    async def restores_listed(self, items: list[dict[str, Any]]) -> None:
        await self._runs_listed(RunKind.RESTORE, items)

    async def restore_changed(self, event: str, obj: dict[str, Any]) -> None:
        await self._run_changed(RunKind.RESTORE, event, obj)

    async def schedules_listed(self, items: list[dict[str, Any]]) -> None:
        views = [parse_schedule(item) for item in items]
        previous = self._cache.schedules
        self._cache.schedules = {view.name: view for view in views}
        for view in views:
            self._note_unpaused(previous.get(view.name), view)
        self._cache.listed.add(SCHEDULES)
        async with self._db.transaction() as conn:
            gone = await self._repo.forget_missing(
                conn, self.namespace, "velero_missed", set(self._cache.schedules)
            )
        for name in gone:
            log.info("velero: schedule %s is gone; its missed-run alert is dropped", name)

    async def schedule_changed(self, event: str, obj: dict[str, Any]) -> None:
        view = parse_schedule(obj)
        if event == _DELETED:
            self._cache.schedules.pop(view.name, None)
            self._cache.unpaused_at.pop(view.name, None)
            async with self._db.transaction() as conn:
                if await self._repo.clear_missed(conn, self.namespace, view.name) is not None:
                    log.info("velero: schedule %s was deleted; its missed-run alert is dropped", view.name)
            return
        self._note_unpaused(self._cache.schedules.get(view.name), view)
        self._cache.schedules[view.name] = view

    async def locations_listed(self, items: list[dict[str, Any]]) -> None:
        views = [parse_location(item) for item in items]
        self._cache.locations = {view.name: view for view in views}
        self._cache.listed.add(LOCATIONS)
        async with self._db.transaction() as conn:
            await self._repo.forget_missing(
                conn, self.namespace, "velero_locations", set(self._cache.locations)
            )
        await self._locations_seen(views)

    async def location_changed(self, event: str, obj: dict[str, Any]) -> None:
        view = parse_location(obj)
        if event == _DELETED:
            self._cache.locations.pop(view.name, None)
            async with self._db.transaction() as conn:
                await self._repo.forget_missing(
                    conn, self.namespace, "velero_locations", set(self._cache.locations)
                )
            return
        self._cache.locations[view.name] = view
        await self._locations_seen([view])

    # -- scheduled ------------------------------------------------------------------

    async def check(self) -> None:
        """The periodic job: missed schedules, storage locations (again, idempotent), pruning."""
        now = self._clock()
        await self.check_missed(now)
        await self._locations_seen(list(self._cache.locations.values()))
        if now - self._pruned_at >= _PRUNE_EVERY_S:
            self._pruned_at = now
            pruned = await self._repo.prune_outcomes(now - 2 * self.settings.catch_up_max_age_s)
            if pruned:
                log.debug("velero: forgot %d old outcome(s)", pruned)

    async def check_missed(self, now: float) -> int:
        """Raise an alert for every schedule whose due run is past the grace; returns how many were raised."""
        if not self._healthy(BACKUPS, SCHEDULES):
            log.debug("velero: missed-schedule check skipped: the watches are not in sync")
            return 0
        open_alerts = await self._repo.open_missed(self.namespace)
        backups = list(self._cache.runs[RunKind.BACKUP].values())
        raised = 0
        for schedule in list(self._cache.schedules.values()):
            cron = self._cron(schedule)
            if schedule.name in open_alerts or cron is None:
                continue
            missed = missed_run(
                schedule,
                cron,
                last_start=last_started(schedule, backups),
                now=_datetime(now),
                grace=timedelta(seconds=self.settings.missed_grace_s),
                unpaused_at=self._cache.unpaused_at.get(schedule.name),
            )
            if missed is None:
                continue
            message = render.missed(
                self._templates, missed, schedule, now=_datetime(now), settings=self.settings
            )
            async with self._db.transaction() as conn:
                if not await self._repo.raise_missed(
                    conn,
                    self.namespace,
                    schedule.name,
                    expected_at=missed.expected_at.timestamp(),
                    raised_at=now,
                    never=missed.never,
                ):
                    continue
                refs = await self._post(conn, message)
                await self._repo.set_missed_refs(conn, self.namespace, schedule.name, refs)
            raised += 1
            log.warning(
                "velero: schedule %s missed the run due at %s", schedule.name, missed.expected_at.isoformat()
            )
        return raised

    async def post_digest(self) -> int:
        """Post the digest of completed runs since the last one; returns how many runs it listed."""
        async with self._db.transaction() as conn:
            records = await self._repo.take_digest(conn, self.namespace)
            if not records:
                return 0
            message = render.digest(self._templates, records, now=_datetime(self._clock()))
            await self._post(conn, message)
        log.info("velero: digest of %d completed run(s) posted", len(records))
        return len(records)

    # -- for !backups ----------------------------------------------------------------

    async def overview(self) -> Overview:
        alerts = await self._repo.open_missed(self.namespace)
        records = await self._repo.locations(self.namespace)
        states = [self._state(view, alerts.get(view.name)) for view in self._cache.schedules.values()]
        manual = [run for run in self._cache.runs[RunKind.BACKUP].values() if run.schedule is None]
        return Overview(
            namespace=self.namespace,
            listed={BACKUPS, SCHEDULES} <= self._cache.listed,
            problem=self.problem(),
            schedules=sorted(states, key=lambda state: state.view.name),
            last_manual=max(manual, key=_begun, default=None),
            locations=[
                (view, records.get(view.name))
                for view in sorted(self._cache.locations.values(), key=lambda v: v.name)
            ],
        )

    async def history(self, schedule: str) -> History | None:
        """The recent backups of ``schedule``, newest first; None if there is no such schedule."""
        view = self._cache.schedules.get(schedule)
        if view is None:
            return None
        alerts = await self._repo.open_missed(self.namespace)
        runs = sorted(
            (run for run in self._cache.runs[RunKind.BACKUP].values() if run.schedule == schedule),
            key=_begun,
            reverse=True,
        )
        return History(
            state=self._state(view, alerts.get(schedule)),
            runs=runs[: self.settings.history_length],
            total=len(runs),
            problem=self.problem(),
        )

    async def open_alerts(self) -> dict[str, MissedAlert]:
        """The open missed-run alerts by schedule name."""
        return await self._repo.open_missed(self.namespace)

    def problem(self) -> str | None:
        """Why the relay's view may be stale or empty: the first failing watch's error."""
        for plural in (BACKUPS, SCHEDULES, RESTORES, LOCATIONS):
            status = self.statuses.get(plural)
            if status is not None and status.last_error is not None:
                return str(status.last_error)
        return None

    # -- internals ---------------------------------------------------------------------

    async def _runs_listed(self, kind: RunKind, items: list[dict[str, Any]]) -> None:
        runs = [parse_run(kind, item) for item in items]
        self._cache.runs[kind] = {run.name: run for run in runs}
        self._cache.listed.add(_PLURALS[kind])
        if await self._repo.has_baseline(self.namespace, kind.value):
            await self._report(runs, listing=True)
        else:
            await self._adopt(kind, runs)
        if kind is RunKind.BACKUP:
            await self._clear_missed_by(runs)

    async def _run_changed(self, kind: RunKind, event: str, obj: dict[str, Any]) -> None:
        run = parse_run(kind, obj)
        if event == _DELETED:
            self._cache.runs[kind].pop(run.name, None)
            return
        self._cache.runs[kind][run.name] = run
        await self._report([run], listing=False)
        if kind is RunKind.BACKUP:
            await self._clear_missed_by([run])

    async def _adopt(self, kind: RunKind, runs: list[RunView]) -> None:
        """The first listing ever: record every finished run without a word."""
        now = self._clock()
        async with self._db.transaction() as conn:
            if not await self._repo.set_baseline(conn, self.namespace, kind.value, now):
                return
            for run in runs:
                if run.terminal:
                    await self._repo.claim(conn, _record(run), "adopted", now)
        log.info("velero: first listing of %ss: %d adopted without messages", kind.value, len(runs))

    async def _report(self, runs: list[RunView], *, listing: bool) -> None:
        """Record and post the outcomes among ``runs`` that have no row yet.

        A listing with more new posts than ``summary_threshold`` sends one
        summary instead of a message each (the rate limit is ~12 a minute).
        """
        now = self._clock()
        max_age = timedelta(seconds=self.settings.catch_up_max_age_s)
        candidates = [
            (run, chosen)
            for run in runs
            if (chosen := disposition(run, self.settings.completed)) is not None
            and recent_enough(run, _datetime(now), max_age)
        ]
        if listing and candidates:
            # Most of a listing is known: filter with one read before taking the write lock.
            known = await self._repo.claimed_keys(self.namespace, candidates[0][0].kind.value)
            candidates = [(run, chosen) for run, chosen in candidates if run.outcome_key not in known]
        if not candidates:
            return
        async with self._db.transaction() as conn:
            posts = [
                run
                for run, chosen in candidates
                if await self._repo.claim(conn, _record(run), chosen.value, now)
                and chosen is Disposition.POST
            ]
            if listing and len(posts) > self.settings.summary_threshold:
                await self._post(conn, render.summary(self._templates, posts, now=_datetime(now)))
            else:
                for run in posts:
                    await self._post(conn, render.outcome(self._templates, run))
        for run in posts:
            log.info("velero: %s %s ended %s: reported", run.kind.value, run.name, run.phase)

    async def _clear_missed_by(self, runs: Iterable[RunView]) -> None:
        alerts = await self._repo.open_missed(self.namespace)
        for run in runs:
            alert = alerts.get(run.schedule or "")
            if alert is None or not clears_missed(run, alert.schedule, _datetime(alert.expected_at)):
                continue
            del alerts[alert.schedule]
            async with self._db.transaction() as conn:
                closed = await self._repo.clear_missed(conn, self.namespace, alert.schedule)
                if closed is None:
                    continue
                message = render.missed_cleared(self._templates, closed, run, now=_datetime(self._clock()))
                await self._post(conn, message, reply_to=closed.refs)
            log.info("velero: schedule %s runs again (%s %s)", alert.schedule, run.name, run.phase)

    async def _locations_seen(self, views: list[LocationView]) -> None:
        if not views:
            return
        records = await self._repo.locations(self.namespace)
        for view in views:
            record = records.get(view.name)
            if not view.phase or (record is not None and record.phase == view.phase):
                continue
            await self._location_changed(view)

    async def _location_changed(self, view: LocationView) -> None:
        now = self._clock()
        async with self._db.transaction() as conn:
            # Read again under the write lock: the periodic check and the watch may race.
            record = await self._repo.location(conn, self.namespace, view.name)
            change = location_change(None if record is None else record.phase, view.phase)
            refs: dict[str, int] | None = None
            if change is LocationChange.UNAVAILABLE:
                refs = await self._post(conn, render.location_down(self._templates, view))
            elif change is LocationChange.RECOVERED and record is not None:
                outage = timedelta(seconds=max(0.0, now - record.since))
                message = render.location_up(self._templates, view, outage=outage)
                await self._post(conn, message, reply_to=record.refs)
            await self._repo.set_location(
                conn, self.namespace, view.name, phase=view.phase, since=now, refs=refs
            )
        if change is not None:
            log.warning("velero: backup storage location %s is %s", view.name, view.phase)

    async def _post(
        self, conn: Tx, message: Message, *, reply_to: dict[str, int] | None = None
    ) -> dict[str, int]:
        """Queue ``message`` in every room (in the caller's transaction); {room: outbox id}."""
        refs: dict[str, int] = {}
        for room in self.rooms:
            target = await self._outbox.reply_target(room, (reply_to or {}).get(room), tx=conn)
            refs[room] = await self._outbox.send_message(room, message.content(), reply_to=target, tx=conn)
        return refs

    def _healthy(self, *plurals: str) -> bool:
        for plural in plurals:
            status = self.statuses.get(plural)
            if plural not in self._cache.listed or (status is not None and status.last_error is not None):
                return False
        return True

    def _note_unpaused(self, before: ScheduleView | None, after: ScheduleView) -> None:
        if before is not None and before.paused and not after.paused:
            self._cache.unpaused_at[after.name] = _datetime(self._clock())

    def _cron(self, schedule: ScheduleView) -> Schedule | None:
        parsed = self._parsed(schedule)
        return None if isinstance(parsed, CronError) else parsed

    def _parsed(self, schedule: ScheduleView) -> Schedule | CronError:
        cached = self._cache.crons.get(schedule.name)
        if cached is not None and cached[0] == schedule.cron:
            return cached[1]
        try:
            parsed: Schedule | CronError = parse_cron(schedule.cron)
        except CronError as error:
            log.warning(
                "velero: cannot read the schedule of %s (%s); it is not checked", schedule.name, error
            )
            parsed = error
        self._cache.crons[schedule.name] = (schedule.cron, parsed)
        return parsed

    def _state(self, view: ScheduleView, alert: MissedAlert | None) -> ScheduleState:
        backups = [run for run in self._cache.runs[RunKind.BACKUP].values() if run.schedule == view.name]
        start = last_started(view, backups)
        parsed = self._parsed(view)
        due = None
        if not isinstance(parsed, CronError):
            due = due_run(view, parsed, last_start=start, unpaused_at=self._cache.unpaused_at.get(view.name))
        return ScheduleState(
            view=view,
            cron_error=str(parsed) if isinstance(parsed, CronError) else None,
            last_backup=max(backups, key=_begun, default=None),
            last_start=start,
            due=due,
            missed=alert,
        )


def _record(run: RunView) -> OutcomeRecord:
    ended = run.ended_at
    duration = run.duration
    return OutcomeRecord(
        kind=run.kind.value,
        key=run.outcome_key,
        namespace=run.namespace,
        name=run.name,
        schedule=run.schedule,
        phase=run.phase,
        ended_at=None if ended is None else ended.timestamp(),
        items=run.items_done if run.items_done is not None else run.items_total,
        duration_s=None if duration is None else duration.total_seconds(),
    )


def _begun(run: RunView) -> datetime:
    return run.begun_at or datetime.min.replace(tzinfo=UTC)


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
