"""Starting an approved sync exactly once, and following it to its end.

``start`` is only ever called by the task whose ``requested → approved``
compare-and-set won, once. It re-reads the Application, re-checks it, and
writes the operation conditionally on the resourceVersion it read (a 409
means re-read and re-check, never "write again blindly").

When a write's outcome is unknown (timeout, connection lost, or the process
died: a request left in ``approved`` at start-up), the bot *recovers*: it
reads the Application and, if our approval id is in ``.operation`` or
``status.operationState``, follows it. If it is not there, an earlier write
either never lands or is still in flight conditional on the resourceVersion
it was built on; a new write conditional on the resourceVersion just read
can only succeed if that earlier one did not (and vice versa), so writing
again is safe, provided nothing else ran on the app since the request (the
stored operation marker: our operation might have run and been replaced) and
the target is still the pinned revision. See docs/approvals.md, "Restarts".

Following reads the Application every ``poll_interval_s`` and correlates by
the approval id in the operation's info (the controller copies it into
``status.operationState.operation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from bot.approvals.application import (
    AppView,
    Phase,
    Progress,
    StartVerdict,
    build_operation,
    check_start,
    is_ours,
    operation_patch,
    parse_application,
    progress,
    settled,
)
from bot.approvals.kinds import SYNC
from bot.approvals.machine import State
from bot.approvals.ports import ArgoApplications
from bot.approvals.render import short
from bot.approvals.store import ApprovalRecord, ApprovalRepo, Transition
from bot.approvals.transitions import Transitions
from bot.kube.errors import ClusterUnreachable, Conflict, KubeError, MissingCRD, NotFound
from bot.testhooks import hold_point
from config.approvals import ApprovalsSettings, GatedApp

log = logging.getLogger(__name__)

# Re-read-and-re-check rounds when the conditional write meets a concurrent change.
_CONFLICT_ROUNDS = 5
# Reads tried before a start gives up on an unreachable cluster.
_READ_ATTEMPTS = 3


# The key, in a request's stored facts, of the Application's operation marker
# when the prompt was posted (``AppView.operation_marker``).
OPERATION_BEFORE = "operation_before"


def _unconfirmed(reason: str) -> str:
    return f"could not confirm whether the sync started ({reason}); check Argo CD"


class _WriteUnknown(Exception):
    """The write's answer was lost: it may have been applied, or may still be."""


class _NotStarting(Exception):
    """A check before the write refused: end the request in ``target`` with ``reason``."""

    def __init__(self, target: State, reason: str) -> None:
        super().__init__(reason)
        self.target = target
        self.reason = reason


class SyncRunner:
    def __init__(
        self,
        settings: ApprovalsSettings,
        repo: ApprovalRepo,
        argo: ArgoApplications,
        transitions: Transitions,
        clock: Callable[[], float],
        bot_user_id: str,
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._argo = argo
        self._transitions = transitions
        self._clock = clock
        self._bot = bot_user_id
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._following: set[str] = set()
        # Requests this process moved to 'approved' and is starting: resume()
        # must leave them alone (only rows left by a previous process are its).
        self._starting: set[str] = set()
        # Set by run(); sleeps between polls end early when it is.
        self._stop = asyncio.Event()

    # -- starting -------------------------------------------------------------

    def claim(self, approval_id: str) -> None:
        """Called in the transaction that moved the request to ``approved``, before it commits."""
        self._starting.add(approval_id)

    async def start(self, approval_id: str) -> None:
        """Write the sync operation for a request this task moved to ``approved`` (and claimed)."""
        try:
            await self._start(approval_id)
        finally:
            self._starting.discard(approval_id)

    async def _start(self, approval_id: str, *, recovering: bool = False) -> None:
        record = await self._repo.get(approval_id)
        if record is None or record.state != State.APPROVED.value or record.kind != SYNC:
            return
        gate = self._settings.apps.get(record.app)
        if gate is None:
            reason = "the app is no longer gated in the configuration"
            if recovering:  # an earlier write may be there: look, do not write
                await self._look(record, reason)
            else:
                await self._abort(record, reason)
            return
        unknown: str | None = None
        for _ in range(_CONFLICT_ROUNDS):
            try:
                if await self._start_round(record, gate, recovering=recovering):
                    return
                log.info("approval %s: the Application changed while starting; re-reading", record.id)
            except _WriteUnknown as error:
                # The write may have landed, or may still land: from now on
                # every round first looks for it, and writes only if it is
                # certain that at most one of the writes can succeed.
                log.warning("approval %s: writing the operation failed (%s); checking", record.id, error)
                recovering, unknown = True, str(error)
        if unknown is not None:
            await self._look(record, unknown)
        else:
            await self._abort(record, "the Application kept changing while the sync was being started")

    async def _start_round(self, record: ApprovalRecord, gate: GatedApp, *, recovering: bool) -> bool:
        """Read, check, write once; False only when the conditional write lost to a concurrent change."""
        try:
            view = await self._checked_view(record, recovering=recovering)
        except _NotStarting as stop:
            await self._end(record, State.APPROVED, stop.target, {"message": stop.reason})
            return True
        if view is None:  # an earlier write of ours landed
            await self._mark_started(record)
            return True
        operation = build_operation(
            view,
            approval_id=record.id,
            requester=record.requester,
            approvers=(record.decided_by or "").split(", "),
            revision=record.target_revision,
            prune=gate.prune,
            sync_options=gate.sync_options,
        )
        # Only the leader writes an operation: a replica that lost the lead stops here.
        await self._transitions.check_fence()
        hold_point("approvals.write", record.id)
        try:
            await self._argo.patch(
                record.namespace, record.application, operation_patch(view.resource_version, operation)
            )
        except Conflict:
            return False
        except (TimeoutError, ClusterUnreachable, OSError) as error:
            raise _WriteUnknown(str(error)) from None
        except KubeError as error:  # refused (403, 422, …): certainly not applied
            await self._abort(record, str(error))
            return True
        hold_point("approvals.written", record.id)
        await self._mark_started(record)
        return True

    async def _checked_view(self, record: ApprovalRecord, *, recovering: bool) -> AppView | None:
        """The Application if the pinned revision may be written now; None if our operation is there.

        Raises ``_NotStarting`` when it may not be written.
        """
        try:
            view = await self._read(record)
        except (NotFound, MissingCRD):
            missing = f"Argo CD has no Application {record.namespace}/{record.application}"
            raise _NotStarting(State.ABORTED, missing) from None
        except KubeError as error:
            reason = _unconfirmed(str(error)) if recovering else str(error)
            raise _NotStarting(State.ABORTED, reason) from None
        if is_ours(view, record.id):
            return None
        if recovering and view.operation_marker != record.facts.get(OPERATION_BEFORE):
            # Another operation ran since the request: ours may have run
            # before it and been replaced, leaving no trace. Never guess.
            reason = _unconfirmed("another operation ran on the Application since the request")
            raise _NotStarting(State.ABORTED, reason)
        check = check_start(view, record.target_revision, record.source_fingerprint)
        if check.verdict is StartVerdict.MOVED:
            raise _NotStarting(State.REVISION_MOVED, check.reason)
        if check.verdict is StartVerdict.REFUSED:
            raise _NotStarting(State.ABORTED, check.reason)
        return view

    async def _look(self, record: ApprovalRecord, reason: str) -> None:
        """Settle a request without writing: started if our operation is there, else aborted.

        Only used when a write may still be in flight, so "aborted" says the
        bot could not confirm, never that nothing was synced.
        """
        try:
            view = await self._read(record)
        except KubeError as error:
            await self._abort(record, _unconfirmed(f"{reason}; {error}"))
            return
        if is_ours(view, record.id):
            await self._mark_started(record)
        else:
            await self._abort(record, _unconfirmed(reason))

    async def _mark_started(self, record: ApprovalRecord) -> None:
        now = self._clock()
        started = await self._transitions.apply(
            record.id,
            State.APPROVED,
            State.STARTED,
            actor=self._bot,
            extra=Transition(started_at=now),
            detail=f"operation written: revision {record.target_revision}, initiated by {record.requester}",
        )
        if started is not None:
            self.follow_later(record.id)

    async def _abort(self, record: ApprovalRecord, reason: str) -> None:
        await self._end(record, State.APPROVED, State.ABORTED, {"message": reason})

    async def _end(
        self, record: ApprovalRecord, source: State, target: State, outcome: dict[str, Any]
    ) -> bool:
        done = await self._transitions.apply(
            record.id,
            source,
            target,
            actor=self._bot,
            extra=Transition(finished_at=self._clock(), outcome=outcome),
            detail=str(outcome.get("message", ""))[:500] or None,
        )
        return done is not None

    async def _read(self, record: ApprovalRecord) -> AppView:
        """The Application, retrying an unreachable cluster a few times."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                return parse_application(await self._argo.get(record.namespace, record.application))
            except ClusterUnreachable:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                await self._pause(self._settings.poll_interval_s * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- following ------------------------------------------------------------

    def follow_later(self, approval_id: str) -> None:
        """Hand a started request to ``run``'s followers."""
        self._queue.put_nowait(approval_id)

    async def resume(self) -> None:
        """After a restart: settle requests caught mid-start, follow the ones already started."""
        for record in await self._repo.in_states([State.APPROVED.value]):
            if record.kind != SYNC:
                continue  # another kind's runner resumes its own requests
            if record.id in self._starting:
                continue  # approved by a reaction of the catch-up sync: being started right now
            # The previous process died between the approval and the answer
            # to its write (or before writing): recover, as after a lost answer.
            self._starting.add(record.id)
            try:
                await self._start(record.id, recovering=True)
            finally:
                self._starting.discard(record.id)
        for record in await self._repo.in_states([State.STARTED.value]):
            if record.kind == SYNC:
                self.follow_later(record.id)

    async def run(self, stop: asyncio.Event) -> None:
        """Root task: one follower per started request until ``stop``."""
        self._stop = stop
        followers: set[asyncio.Task[None]] = set()
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                queued = asyncio.create_task(self._queue.get())
                await asyncio.wait({queued, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not queued.done():
                    queued.cancel()
                    break
                approval_id = queued.result()
                if approval_id in self._following:
                    continue
                self._following.add(approval_id)
                task = asyncio.create_task(self._guarded_follow(approval_id), name=f"follow {approval_id}")
                followers.add(task)
                task.add_done_callback(followers.discard)
        finally:
            stopped.cancel()
            for task in followers:
                task.cancel()
            if followers:
                await asyncio.wait(followers)

    async def _guarded_follow(self, approval_id: str) -> None:
        try:
            await self.follow(approval_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The request stays 'started'; the next start-up follows it again.
            log.exception("following approval %s failed", approval_id)
        finally:
            self._following.discard(approval_id)

    async def follow(self, approval_id: str) -> None:
        """Poll the Application until our operation ended and the app settled, then report."""
        record = await self._repo.get(approval_id)
        if record is None or record.state != State.STARTED.value or record.kind != SYNC:
            return
        settings = self._settings
        deadline = (record.started_at or self._clock()) + settings.follow_timeout_s
        # When success was first seen: the app then has settle_timeout_s to become Synced + Healthy.
        succeeded_seen: float | None = None
        unreachable_logged = False
        while not self._stop.is_set():
            now = self._clock()
            try:
                view = parse_application(await self._argo.get(record.namespace, record.application))
            except (NotFound, MissingCRD):
                await self._finish(
                    record, State.ERROR, {"message": "the Application was deleted while syncing"}
                )
                return
            except KubeError as error:
                if not unreachable_logged:
                    log.warning("approval %s: cannot read the Application (%s); retrying", record.id, error)
                    unreachable_logged = True
                if now >= deadline:
                    await self._finish(record, State.ERROR, {"message": f"{error}; no longer followed"})
                    return
            else:
                state = progress(view, record.id)
                if state.phase is Phase.SUCCEEDED and succeeded_seen is None:
                    succeeded_seen = now
                settle_until = (succeeded_seen or now) + settings.settle_timeout_s
                if await self._step(record, view, state, now, min(deadline, settle_until)):
                    return
            await self._pause(settings.poll_interval_s)

    async def _step(  # noqa: PLR0911 - one return per outcome
        self, record: ApprovalRecord, view: AppView, state: Progress, now: float, settle_until: float
    ) -> bool:
        """One look at the Application; True when the request has been finished."""
        deadline = (record.started_at or now) + self._settings.follow_timeout_s
        pinned = record.target_revision
        failed = [r.label() + (f": {r.message}" if r.message else "") for r in state.failed_resources]
        base: dict[str, Any] = {
            "message": state.message,
            "revision": state.result_revision,
            "failed_resources": failed,
        }
        if state.phase is Phase.LOST:
            message = "another operation replaced it before it finished; see Argo CD"
            return await self._finish(record, State.ERROR, {"message": message})
        if state.phase in (Phase.FAILED, Phase.ERROR):
            target = State.FAILED if state.phase is Phase.FAILED else State.ERROR
            return await self._finish(record, target, base)
        if state.phase is Phase.SUCCEEDED:
            if state.result_revision != pinned:
                message = f"Argo CD synced {short(state.result_revision)}, not the approved {short(pinned)}"
                return await self._finish(record, State.FAILED, base | {"message": message})
            is_settled = settled(view, pinned)
            if is_settled or now >= settle_until:
                statuses = {"sync_status": view.sync_status, "health_status": view.health_status}
                return await self._finish(record, State.SUCCEEDED, base | statuses | {"settled": is_settled})
            return False
        if now >= deadline:
            message = (
                f"still {state.phase.value} after {self._settings.follow_timeout_s:.0f} s; no longer followed"
            )
            return await self._finish(record, State.ERROR, {"message": message})
        return False

    async def _finish(self, record: ApprovalRecord, target: State, outcome: Mapping[str, Any]) -> bool:
        await self._end(record, State.STARTED, target, dict(outcome))
        # Finished by us or by someone else meanwhile: either way, stop following.
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
