"""Restore drills: restore a backup into scratch namespaces through Velero, check it, report, clean up.

A drill is an approval request of kind ``restore-drill``: the approval
machinery (``bot.approvals``) posts its prompt, counts the votes (four eyes,
expiry, ``!approve``/``!reject``/``!cancel``), and moves it ``requested →
approved`` exactly once. From there ``DrillRunner`` carries it out:

1. ``approved``: read the backup again (same uid), create each scratch
   namespace with the drill's label, create the Restore. Every name is fixed
   by the drill id, so doing this again after a crash or a lost answer only
   finds what the first attempt made (``AlreadyExists`` + the drill's label):
   there is never a second Restore. A namespace of that name without the
   drill's label ends the drill before anything is restored.
2. ``started``: read the Restore until Velero ends it, then read what came
   back in each scratch namespace (objects by kind, pods Ready, PVCs Bound),
   waiting up to ``pods_ready_timeout_s`` for the pods; judge
   (``drill_plan.judge``), edit the prompt, post the report in its thread,
   count the outcome.
3. Clean up when due (at once, or ``keep_namespaces_s`` later): delete the
   scratch namespaces, each only if it still carries the drill's label, and
   the Restore if configured. Nothing else is ever deleted.

Everything is in the store, so a restart resumes every drill where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from bot.approvals.kinds import RESTORE_DRILL, Approvers
from bot.approvals.machine import APPROVE_KEY, REJECT_KEY, State
from bot.approvals.render import describe_rule, format_time
from bot.approvals.store import ActiveRequestExists, ApprovalRecord, ApprovalRepo, NewApproval, Transition
from bot.drills import plan as drill_plan
from bot.drills.plan import (
    BackupFacts,
    DrillRefused,
    NamespaceCheck,
    Verdict,
    backup_facts,
    drill_namespaces,
    namespace_mapping,
    pick_backup,
    plan_restore,
    restore_facts,
    restore_name,
    scratch_namespace_object,
)
from bot.drills.store import DrillRepo, DrillRow
from bot.errors import PermissionDenied, UserError
from bot.kube.errors import AlreadyExists, ClusterUnreachable, KubeError, MissingCRD, NotFound
from bot.kube.resources import (
    DEPLOYMENTS,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    STATEFUL_SETS,
    VELERO_BACKUPS,
    VELERO_RESTORES,
    ResourceType,
)
from bot.outbox import Outbox
from bot.render.message import Message
from bot.render.templates import Templates
from bot.store.database import Database
from bot.store.tx import Tx
from config.base import PermissionRule
from config.durations import format_duration
from config.velero import VeleroSettings

if TYPE_CHECKING:
    from bot.approvals.service import ApprovalService
    from bot.kube.client import KubeApi

log = logging.getLogger(__name__)

# The approvals row of a drill: one active drill per Velero namespace (the unique index).
DRILL_APP: Final = "restore-drill"
# What the kinds read in each scratch namespace: (resource, kind shown in the report).
_CHECKED: Final[tuple[tuple[ResourceType, str], ...]] = (
    (DEPLOYMENTS, "Deployment"),
    (STATEFUL_SETS, "StatefulSet"),
    (PODS, "Pod"),
    (PERSISTENT_VOLUME_CLAIMS, "PersistentVolumeClaim"),
)
_SCHEDULED_EVENT: Final = "scheduled"
_AUTO_APPROVER: Final = "velero.drills.scheduled_without_approval"
_STATE_OF: Final = {
    Verdict.PASSED: State.SUCCEEDED,
    Verdict.PARTIAL: State.FAILED,
    Verdict.FAILED: State.FAILED,
    Verdict.ERROR: State.ERROR,
}


def new_drill_id() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class PassedDrill:
    """The last drill that passed, as the readiness criterion shows it."""

    id: str
    backup: str
    schedule: str | None
    ended_at: float
    evidence: str


class DrillMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.drills = Counter(
            "readybot_restore_drills",
            "Restore drills that ended, by outcome (passed, partial, failed, error).",
            ["outcome"],
            registry=registry,
        )
        for verdict in Verdict:
            self.drills.labels(verdict.value)
        self.last_success = Gauge(
            "readybot_restore_drill_last_success_timestamp_seconds",
            "When the last restore drill passed (Unix time); 0 while none has.",
            registry=registry,
        )


@dataclass(frozen=True)
class DrillDeps:
    settings: VeleroSettings
    prefix: str
    db: Database
    outbox: Outbox
    templates: Templates
    kube: KubeApi
    approvals: ApprovalService
    allowed: Callable[[str, str, PermissionRule], Awaitable[bool]]
    metrics: DrillMetrics
    clock: Callable[[], float]
    bot_user_id: str
    new_id: Callable[[], str] = new_drill_id


class DrillKind:
    """The ``restore-drill`` request kind: how the approval machinery shows and starts a drill."""

    name = RESTORE_DRILL
    audit_prefix = "drill"
    noun = "restore drill"
    nothing_done = "nothing was restored"
    started_refusal = "the restore has started; it runs to its end and its scratch namespaces are cleaned up"

    def __init__(self, service: DrillService) -> None:
        self._service = service

    def approvers(self, record: ApprovalRecord) -> Approvers | None:
        settings = self._service.settings.drills
        if not settings.enabled:
            return None
        return Approvers(settings.approvers, settings.require_cross_signed_device)

    def prompt_content(self, record: ApprovalRecord, *, mention: bool) -> dict[str, Any]:
        content = self._service.render_prompt(record).content()
        users = list(record.facts.get("mention", [])) if mention else []
        content["m.mentions"] = {"user_ids": users}
        return content

    def outcome_note(self, record: ApprovalRecord) -> Message:
        return self._service.render_report(record)

    def audit_args(self, record: ApprovalRecord) -> str:
        return f"{record.id} {record.target_revision}"

    def claim(self, request_id: str) -> None:
        self._service.runner.claim(request_id)

    async def start(self, request_id: str) -> None:
        await self._service.runner.start(request_id)


class DrillService:
    """``!restore-drill``, scheduled drills, the readiness criterion's last passed drill."""

    def __init__(self, deps: DrillDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.repo = DrillRepo(deps.db)
        self.requests = ApprovalRepo(deps.db)
        self.runner = DrillRunner(self)
        self.kind = DrillKind(self)

    # -- asking for a drill -----------------------------------------------------------

    async def request(
        self,
        target: str | None,
        *,
        room_id: str,
        sender: str,
        event_id: str,
        cross_signed: bool = False,
    ) -> str:
        """Post a drill prompt (a reply to ``event_id``); its id. ``UserError`` with the reason otherwise."""
        drills = self.settings.drills
        if not await self.deps.allowed(sender, room_id, drills.requesters):
            raise PermissionDenied("you may not ask for restore drills")
        if drills.require_cross_signed_device and not cross_signed:
            raise PermissionDenied(
                "restore drills must be requested encrypted from a device you have verified "
                "(cross-signed); verify this session, then send it again"
            )
        return await self._open(target, room_id=room_id, requester=sender, event_id=event_id, scheduled=False)

    async def scheduled(self) -> str | None:
        """The scheduled drill (``velero.drills.schedule``): the same prompt and report, by the bot.

        A refusal (no backup, another drill running, cluster unreachable) is
        posted to the room and counted as an error; it never raises.
        """
        drills = self.settings.drills
        room = drills.scheduled_room or self.settings.rooms[0]
        try:
            return await self._open(
                drills.scheduled_target,
                room_id=room,
                requester=self.deps.bot_user_id,
                event_id=_SCHEDULED_EVENT,
                scheduled=True,
            )
        except UserError as error:
            log.warning("scheduled restore drill not started: %s", error)
            self.deps.metrics.drills.labels(Verdict.ERROR.value).inc()
            text = f"⚠️ Scheduled restore drill not started: {error}"
            await self.deps.outbox.send_message(room, Message(text).content())
            return None

    async def _open(
        self, target: str | None, *, room_id: str, requester: str, event_id: str, scheduled: bool
    ) -> str:
        drills, namespace = self.settings.drills, self.settings.namespace
        active = await self.requests.active_for(namespace, DRILL_APP)
        if active is not None:
            raise UserError(f"restore drill {active.id} is {active.state}; one drill at a time")
        backup = await self._backup(target)
        namespaces = drill_namespaces(backup, drills.namespaces) if backup else []
        drill_id = self.deps.new_id()
        mapping = namespace_mapping(drills.scratch_prefix, drill_id, namespaces)
        now = self.deps.clock()
        auto = scheduled and drills.scheduled_without_approval
        new = NewApproval(
            id=drill_id,
            app=DRILL_APP,
            namespace=namespace,
            application=DRILL_APP,
            room_id=room_id,
            requester=requester,
            request_event_id=event_id,
            current_revision=backup.schedule,
            target_revision=backup.name,
            source_fingerprint=backup.uid,
            approvals_required=drills.approvals_required,
            four_eyes=drills.four_eyes,
            created_at=now,
            expires_at=now + drills.expires_after_s,
            facts={
                "backup_phase": backup.phase,
                "backup_completed": backup.completed.timestamp() if backup.completed else None,
                "backup_items": backup.items,
                "mapping": mapping,
                "restore_name": restore_name(drills.scratch_prefix, drill_id),
                "restore_pvs": drills.restore_pvs,
                "scheduled": scheduled,
                "keep_namespaces_s": drills.keep_namespaces_s,
                "approvers": "none needed (configuration)" if auto else describe_rule(drills.approvers),
                "mention": []
                if auto
                else [u for u in drills.approvers.users if not any(c in u for c in "*?[")],
                "signed_device": drills.require_cross_signed_device,
            },
            kind=RESTORE_DRILL,
        )
        row = DrillRow(
            id=drill_id,
            backup=backup.name,
            schedule=backup.schedule,
            velero_namespace=namespace,
            restore_name=restore_name(drills.scratch_prefix, drill_id),
            namespace_mapping=mapping,
            scheduled=scheduled,
        )

        async def insert_row(conn: Tx) -> None:
            await self.repo.insert(conn, row)

        try:
            await self.deps.approvals.open_request(
                new,
                detail=", ".join(f"{s} -> {t}" for s, t in sorted(mapping.items())),
                react_approve=not (auto or drills.require_cross_signed_device),
                also=insert_row,
                reply=not scheduled,
            )
        except ActiveRequestExists:
            raise UserError("another restore drill was asked for meanwhile; one drill at a time") from None
        if auto:
            approved = await self.deps.approvals.transitions.apply(
                drill_id,
                State.REQUESTED,
                State.APPROVED,
                actor=self.deps.bot_user_id,
                extra=Transition(decided_at=now, decided_by=_AUTO_APPROVER),
            )
            if approved is not None:
                self.runner.claim(drill_id)
                await self.runner.start(drill_id)
        return drill_id

    async def _backup(self, target: str | None) -> BackupFacts:
        try:
            listing = await self.deps.kube.list_resource(*VELERO_BACKUPS, namespace=self.settings.namespace)
        except MissingCRD:
            raise UserError("Velero's Backup CRD is not installed in the cluster") from None
        try:
            return pick_backup((backup_facts(b) for b in listing.items), target)
        except DrillRefused as refused:
            raise UserError(f"no drill: {refused}") from None

    # -- readiness --------------------------------------------------------------------

    async def last_passed(self) -> PassedDrill | None:
        row = await self.repo.last_passed()
        if row is None or row.ended_at is None:
            return None
        return PassedDrill(row.id, row.backup, row.schedule, row.ended_at, row.summary or "")

    # -- rendering --------------------------------------------------------------------

    def render_prompt(self, record: ApprovalRecord) -> Message:
        facts = record.facts
        keep = float(facts.get("keep_namespaces_s", 0.0))
        cleanup = (
            "the scratch namespaces are deleted after the report"
            if keep <= 0
            else f"the scratch namespaces are kept {format_duration(keep)} for inspection, then deleted"
        )
        completed = facts.get("backup_completed")
        return self.deps.templates.render(
            "drill_prompt",
            r=record,
            headline=_headline(record, self.deps.prefix),
            backup=record.target_revision,
            schedule=record.current_revision,
            scheduled=bool(facts.get("scheduled")),
            backup_phase=facts.get("backup_phase", "?"),
            backup_completed=format_time(float(completed)) if completed else None,
            backup_items=facts.get("backup_items"),
            restore_name=facts.get("restore_name", ""),
            velero_namespace=record.namespace,
            restore_pvs=bool(facts.get("restore_pvs", True)),
            mapping=sorted(dict(facts.get("mapping", {})).items()),
            cleanup=cleanup,
            approvers=facts.get("approvers", ""),
            expires=format_time(record.expires_at),
            approve_key=APPROVE_KEY,
            reject_key=REJECT_KEY,
            signed_device=bool(facts.get("signed_device")),
            prefix=self.deps.prefix,
        )

    def render_report(self, record: ApprovalRecord) -> Message:
        outcome: Mapping[str, Any] = record.outcome or {}
        name = str(record.facts.get("restore_name", ""))
        keep = float(record.facts.get("keep_namespaces_s", 0.0))
        created = bool(outcome.get("restore_created"))
        cleanup = ""
        if outcome.get("namespaces_created"):
            cleanup = (
                "deleted after this report"
                if keep <= 0
                else f"kept until {format_time((record.finished_at or 0.0) + keep)} for inspection"
            )
        return self.deps.templates.render(
            "drill_report",
            r=record,
            headline=_headline(record, self.deps.prefix),
            backup=record.target_revision,
            restore_line=outcome.get("restore_line", ""),
            namespaces=list(outcome.get("namespaces", [])),
            problems=list(outcome.get("problems", [])),
            where=drill_plan.where_to_look(record.namespace, name) if created else "",
            cleanup=cleanup,
        )


def _headline(record: ApprovalRecord, prefix: str) -> str:  # noqa: PLR0911 - one wording per state
    state = State(record.state)
    outcome: Mapping[str, Any] = record.outcome or {}
    by = record.decided_by or ""
    if state is State.REQUESTED:
        needed = record.approvals_required
        return f"⏳ Waiting for {needed} approval{'s' if needed != 1 else ''}."
    if state is State.APPROVED:
        return f"✅ Approved by {by}; creating the scratch namespaces and the Restore…"
    if state is State.STARTED:
        return f"🔄 Restoring {record.target_revision} (approved by {by})…"
    if state in (State.SUCCEEDED, State.FAILED, State.ERROR, State.ABORTED) and outcome.get("headline"):
        return str(outcome["headline"])
    if state is State.REJECTED:
        return f"🚫 Rejected by {by}. Nothing was restored."
    if state is State.EXPIRED:
        return (
            f"⌛ Expired at {format_time(record.expires_at)} without enough approvals. Nothing was restored."
        )
    if state is State.CANCELLED:
        return f"🚫 Cancelled by {by}. Nothing was restored."
    return f"⛔ Not restored: {outcome.get('message', '')}. Send {prefix}restore-drill for a fresh prompt."


class _Ended(Exception):
    """End the drill now with this verdict and message."""

    def __init__(self, verdict: Verdict, message: str) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.message = message


class DrillRunner:
    """Carries approved drills out, follows them to the report, cleans up; one task per drill."""

    def __init__(self, service: DrillService) -> None:
        self._service = service
        self._deps = service.deps
        self._settings = service.settings.drills
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: set[str] = set()
        self._claimed: set[str] = set()
        self._stop = asyncio.Event()

    @property
    def _kube(self) -> KubeApi:
        return self._deps.kube

    def claim(self, drill_id: str) -> None:
        self._claimed.add(drill_id)

    async def start(self, drill_id: str) -> None:
        """Hand an approved drill to ``run`` (it creates, follows and reports in its own task)."""
        self._queue.put_nowait(drill_id)

    async def resume(self) -> None:
        """After a restart: every approved or started drill goes on where it was; the gauge is set again."""
        passed = await self._service.repo.last_passed()
        if passed is not None and passed.ended_at is not None:
            self._deps.metrics.last_success.set(passed.ended_at)
        for record in await self._service.requests.in_states([State.APPROVED.value, State.STARTED.value]):
            if record.kind == RESTORE_DRILL and record.id not in self._claimed:
                self._queue.put_nowait(record.id)

    async def run(self, stop: asyncio.Event) -> None:
        """Root task: one task per drill being carried out, and the cleanups when due."""
        self._stop = stop
        tasks: set[asyncio.Task[None]] = set()
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                queued = asyncio.create_task(self._queue.get())
                await asyncio.wait(
                    {queued, stopped},
                    timeout=self._settings.poll_interval_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not queued.done():
                    queued.cancel()
                    if not stop.is_set():
                        await self._cleanup_logged()
                    continue
                drill_id = queued.result()
                if drill_id not in self._running:
                    self._running.add(drill_id)
                    task = asyncio.create_task(self._guarded(drill_id), name=f"drill {drill_id}")
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            stopped.cancel()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)

    async def _cleanup_logged(self) -> None:
        try:
            await self.cleanup_due()
        except Exception:
            log.exception("restore drills: the cleanup failed; retrying at the next tick")

    async def _guarded(self, drill_id: str) -> None:
        try:
            await self.drive(drill_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The drill keeps its state; the next start-up takes it up again.
            log.exception("restore drill %s failed", drill_id)
        finally:
            self._running.discard(drill_id)
            self._claimed.discard(drill_id)

    async def drive(self, drill_id: str) -> None:
        """Create what the drill needs (if approved), follow the Restore, report, clean up if due."""
        record = await self._service.requests.get(drill_id)
        drill = await self._service.repo.get(drill_id)
        if record is None or drill is None or record.kind != RESTORE_DRILL:
            return
        deadline = (record.decided_at or self._deps.clock()) + self._settings.follow_timeout_s
        if record.state == State.APPROVED.value:
            record = await self._create(record, drill, deadline)
            if record is None:
                await self.cleanup_due()
                return
        if record.state == State.STARTED.value:
            await self._follow(record, drill, deadline)
            await self.cleanup_due()

    # -- creating ---------------------------------------------------------------------

    async def _create(
        self, record: ApprovalRecord, drill: DrillRow, deadline: float
    ) -> ApprovalRecord | None:
        """Scratch namespaces, then the Restore; the started record, or None when the drill ended."""
        created: list[str] = []
        while not self._stop.is_set():
            try:
                await self._check_backup(record)
                for scratch in drill.scratch_namespaces:
                    await self._ensure(
                        NAMESPACES, None, scratch_namespace_object(scratch, drill.id), drill.id
                    )
                    if scratch not in created:
                        created.append(scratch)
                body = plan_restore(
                    drill_id=drill.id,
                    prefix=self._settings.scratch_prefix,
                    velero_namespace=drill.velero_namespace,
                    backup=drill.backup,
                    mapping=drill.namespace_mapping,
                    restore_pvs=bool(record.facts.get("restore_pvs", self._settings.restore_pvs)),
                )
                await self._ensure(VELERO_RESTORES, drill.velero_namespace, body, drill.id)
            except _Ended as ended:
                await self._end(record, State.APPROVED, ended.verdict, ended.message, created=created)
                return None
            except ClusterUnreachable as error:
                if self._deps.clock() >= deadline:
                    await self._end(record, State.APPROVED, Verdict.ERROR, str(error), created=created)
                    return None
                log.warning("restore drill %s: %s; retrying", drill.id, error)
                await self._pause()
                continue
            except KubeError as error:  # forbidden, invalid: it will not go better by retrying
                await self._end(record, State.APPROVED, Verdict.ERROR, str(error), created=created)
                return None
            started = await self._deps.approvals.transitions.apply(
                record.id,
                State.APPROVED,
                State.STARTED,
                actor=self._deps.bot_user_id,
                extra=Transition(started_at=self._deps.clock()),
                detail=f"restore {body['metadata']['name']} of {drill.backup} created",
            )
            return started or await self._service.requests.get(record.id)
        return None

    async def _check_backup(self, record: ApprovalRecord) -> None:
        try:
            obj = await self._kube.get_resource(
                *VELERO_BACKUPS, record.target_revision, namespace=record.namespace
            )
        except (NotFound, MissingCRD):
            raise _Ended(Verdict.ERROR, f"backup {record.target_revision} no longer exists") from None
        facts = backup_facts(obj)
        if facts.uid and record.source_fingerprint and facts.uid != record.source_fingerprint:
            raise _Ended(Verdict.ERROR, f"backup {record.target_revision} was replaced since the prompt")

    async def _ensure(
        self, resource: ResourceType, namespace: str | None, body: dict[str, Any], drill_id: str
    ) -> None:
        """Create ``body``; if it exists already it must be this drill's (made by an earlier attempt)."""
        name = body["metadata"]["name"]
        try:
            await self._kube.create_resource(*resource, body, namespace=namespace)
            log.info("restore drill %s: created %s %s", drill_id, resource.plural, name)
        except AlreadyExists:
            existing = await self._kube.get_resource(*resource, name, namespace=namespace)
            if not drill_plan.is_ours(existing, drill_id):
                raise _Ended(
                    Verdict.ERROR,
                    f"{resource.plural} {name} exists and is not this drill's; nothing was restored into it",
                ) from None

    # -- following --------------------------------------------------------------------

    async def _follow(self, record: ApprovalRecord, drill: DrillRow, deadline: float) -> None:
        warned = False
        while not self._stop.is_set():
            now = self._deps.clock()
            try:
                obj = await self._kube.get_resource(
                    *VELERO_RESTORES, drill.restore_name, namespace=drill.velero_namespace
                )
                restore = restore_facts(obj)
                if restore.phase in drill_plan.ENDED_PHASES and await self._report(
                    record, drill, restore, now
                ):
                    return
            except (NotFound, MissingCRD):
                await self._end(
                    record,
                    State.STARTED,
                    Verdict.ERROR,
                    f"the Restore {drill.restore_name} was deleted before it ended",
                )
                return
            except KubeError as error:
                if not warned:
                    log.warning("restore drill %s: cannot read the cluster (%s); retrying", drill.id, error)
                    warned = True
                if now >= deadline:
                    await self._end(record, State.STARTED, Verdict.ERROR, f"{error}; no longer followed")
                    return
            else:
                if restore.phase not in drill_plan.ENDED_PHASES and now >= deadline:
                    waited = format_duration(self._settings.follow_timeout_s)
                    message = (
                        f"the restore is still {restore.phase or 'New'} after {waited}; no longer followed"
                    )
                    await self._end(record, State.STARTED, Verdict.ERROR, message)
                    return
            await self._pause()

    async def _report(
        self, record: ApprovalRecord, drill: DrillRow, restore: drill_plan.RestoreFacts, now: float
    ) -> bool:
        """Judge once the pods are Ready or their time is up; False while still waiting for pods."""
        checks = [
            await self._check(source, scratch) for source, scratch in sorted(drill.namespace_mapping.items())
        ]
        ended_at = restore.completed.timestamp() if restore.completed else (record.started_at or now)
        waited = max(0.0, now - ended_at)
        timeout = self._settings.pods_ready_timeout_s
        checking = timeout > 0 and restore.phase not in drill_plan.FAILED_PHASES
        settled = drill_plan.pods_settled(checks)
        if checking and not settled and waited < timeout:
            return False
        judgement = drill_plan.judge(
            restore,
            record.facts.get("backup_items"),
            checks,
            pods_waited_s=waited if settled else None,
            pods_checked=checking,
        )
        details = {
            "restore_line": (
                f"Restore {drill.restore_name}: {restore.phase}"
                + (f", {restore.errors} errors" if restore.errors else "")
                + (f", {restore.warnings} warnings" if restore.warnings else "")
            ),
            "namespaces": [_namespace_line(check) for check in checks],
            "problems": list(judgement.problems),
            "evidence": judgement.evidence,
        }
        # A failed restore leads with Velero's reason; the others with the evidence.
        message = judgement.problems[0] if judgement.verdict is Verdict.FAILED and judgement.problems else ""
        await self._end(record, State.STARTED, judgement.verdict, message, details=details)
        return True

    async def _check(self, source: str, scratch: str) -> NamespaceCheck:
        kinds: dict[str, int] = {}
        pods = ready = pvcs = bound = 0
        for resource, kind in _CHECKED:
            items = (await self._kube.list_resource(*resource, namespace=scratch)).items
            if items:
                kinds[kind] = len(items)
            if resource == PODS:
                pods, ready = len(items), sum(drill_plan.pod_ready(p) for p in items)
            elif resource == PERSISTENT_VOLUME_CLAIMS:
                pvcs, bound = len(items), sum(drill_plan.pvc_bound(p) for p in items)
        return NamespaceCheck(source, scratch, kinds, pods, ready, pvcs, bound)

    # -- ending -----------------------------------------------------------------------

    async def _end(
        self,
        record: ApprovalRecord,
        source: State,
        verdict: Verdict,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        created: list[str] | None = None,
    ) -> None:
        now = self._deps.clock()
        facts = dict(details or {})
        evidence = str(facts.get("evidence", ""))
        headline = drill_plan.headline(verdict, record.target_revision, evidence, message)
        target = State.ABORTED if source is State.APPROVED else _STATE_OF[verdict]
        restore_created = source is State.STARTED
        outcome = {
            **facts,
            "verdict": verdict.value,
            "headline": headline,
            "message": message,
            "restore_created": restore_created,
            "namespaces_created": restore_created or bool(created),
        }
        keep = self._settings.keep_namespaces_s if verdict is not Verdict.ERROR or restore_created else 0.0
        summary = evidence or message

        async def record_end(conn: Tx, _: ApprovalRecord) -> None:
            await self._service.repo.finish(
                conn,
                record.id,
                verdict=verdict.value,
                summary=summary,
                ended_at=now,
                cleanup_due_at=now + keep,
            )

        done = await self._deps.approvals.transitions.apply(
            record.id,
            source,
            target,
            actor=self._deps.bot_user_id,
            extra=Transition(finished_at=now, outcome=outcome),
            detail=headline[:500],
            also=record_end,
        )
        if done is None:
            return
        self._deps.metrics.drills.labels(verdict.value).inc()
        if verdict is Verdict.PASSED:
            self._deps.metrics.last_success.set(now)
        log.info("restore drill %s: %s", record.id, headline)

    # -- cleaning up ------------------------------------------------------------------

    async def cleanup_due(self) -> int:
        """Delete the scratch namespaces (and Restores, if configured) of drills whose time has come."""
        done = 0
        for drill in await self._service.repo.due_for_cleanup(self._deps.clock()):
            try:
                deleted = await self._clean(drill)
            except ClusterUnreachable as error:
                log.warning("restore drill %s: cleanup postponed (%s)", drill.id, error)
                continue
            except KubeError as error:
                log.error("restore drill %s: cleanup failed (%s); retrying later", drill.id, error)
                continue
            if await self._service.repo.mark_cleaned(drill.id, self._deps.clock()):
                done += 1
                await self._note_cleaned(drill, deleted)
        return done

    async def _clean(self, drill: DrillRow) -> list[str]:
        deleted = []
        for name in drill.scratch_namespaces:
            try:
                obj = await self._kube.get_resource(*NAMESPACES, name)
            except NotFound:
                continue
            if not drill_plan.may_delete_namespace(obj, drill.id, drill.namespace_mapping):
                log.warning("restore drill %s: namespace %s is not the drill's; left alone", drill.id, name)
                continue
            with contextlib.suppress(NotFound):
                await self._kube.delete_resource(*NAMESPACES, name)
                deleted.append(name)
        if self._settings.delete_restore:
            try:
                restore = await self._kube.get_resource(
                    *VELERO_RESTORES, drill.restore_name, namespace=drill.velero_namespace
                )
            except NotFound:
                return deleted
            if drill_plan.is_ours(restore, drill.id):
                with contextlib.suppress(NotFound):
                    await self._kube.delete_resource(
                        *VELERO_RESTORES, drill.restore_name, namespace=drill.velero_namespace
                    )
        return deleted

    async def _note_cleaned(self, drill: DrillRow, deleted: list[str]) -> None:
        record = await self._service.requests.get(drill.id)
        if record is None or not deleted:
            return
        restore = f"; Restore {drill.restore_name} deleted" if self._settings.delete_restore else ""
        text = f"🧹 Drill {drill.id}: scratch namespaces deleted: {', '.join(deleted)}{restore}."
        async with self._deps.db.transaction() as conn:
            root = await self._deps.approvals.transitions.prompt_ref(record, conn)
            await self._deps.outbox.send_message(
                record.room_id, Message(text).content(), thread_root=root, tx=conn
            )

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=self._settings.poll_interval_s)


def _namespace_line(check: NamespaceCheck) -> str:
    kinds = ", ".join(f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in check.kinds.items())
    extra = []
    if check.pods:
        extra.append(f"{check.pods_ready}/{check.pods} pods Ready")
    if check.pvcs:
        extra.append(f"{check.pvcs_bound}/{check.pvcs} PVCs Bound")
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"{check.source} → {check.scratch}: {kinds or 'nothing restored'}{tail}"
