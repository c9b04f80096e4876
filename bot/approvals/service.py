"""The approval gate's chat-facing side: request, react, redact, expire, cancel, list.

Each decision is made by ``bot.approvals.machine`` on the request as read
*inside* the transaction that records it, and applied with a compare-and-set,
so a reaction replayed by a sync, delivered twice, or racing another
reaction can never approve (or start) a request twice. Starting and following
the sync is ``SyncRunner``'s job.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.approvals.application import app_info, parse_application, request_refusal
from bot.approvals.kinds import Approvers, RequestKind
from bot.approvals.machine import (
    ACTIVE_STATES,
    APPROVE_KEY,
    REJECT_KEY,
    Effect,
    Ignored,
    ReactionDecision,
    ReactionFacts,
    RequestFacts,
    State,
    approved_enough,
    decide_cancel,
    decide_reaction,
    normalize_key,
    withdrawal_counts,
)
from bot.approvals.ports import ArgoApplications
from bot.approvals.render import prompt_facts, render_apps, render_list
from bot.approvals.runner import OPERATION_BEFORE, SyncRunner
from bot.approvals.store import (
    ActiveRequestExists,
    ApprovalRecord,
    ApprovalRepo,
    NewApproval,
    Transition,
    Vote,
)
from bot.approvals.sync_kind import SyncKind
from bot.approvals.transitions import Transitions
from bot.errors import PermissionDenied, UserError
from bot.kube.errors import KubeError, MissingCRD, NotFound
from bot.outbox import Outbox
from bot.render.message import Message
from bot.render.templates import Templates
from bot.store.audit import AuditRepo
from bot.store.database import Database
from bot.store.leadership import Fence
from config.approvals import ApprovalsSettings, GatedApp, application_name
from config.base import PermissionRule

log = logging.getLogger(__name__)

# (user, room, rule) -> may they? Power levels are looked up only when the rule needs one.
Allowed = Callable[[str, str, PermissionRule], Awaitable[bool]]

# Reaction keys are free text: keep what we store and audit short.
_MAX_KEY_CHARS = 32
_PROMPT_RESOLVE_WINDOW_S = 7 * 24 * 3600.0
_PROMPT_WAIT_POLL_S = 0.1
# Early redactions are only needed until their reaction shows up.
_REDACTION_MEMORY_S = 24 * 3600.0


# What a vote that changed nothing is told, by reason.
_IGNORED_WORDS: dict[Ignored | None, str] = {
    Ignored.OTHER_ROOM: "the request is in another room",
    Ignored.OTHER_KEY: "not an approval or a rejection",
    Ignored.NOT_OPEN: "the request is no longer open",
    Ignored.EXPIRED: "the request had expired",
    Ignored.OWN_REQUEST: "you asked for this sync; someone else must approve it",
    Ignored.NOT_AUTHORISED: "you are not an approver of this app",
    Ignored.REDACTED: "it was withdrawn",
    Ignored.DEVICE_NOT_CROSS_SIGNED: (
        "this app's approvals must come encrypted from a device you have verified (cross-signed); "
        "verify this session, then send it again"
    ),
    None: "it changed nothing",
}


def new_approval_id() -> str:
    """8 hex characters: short enough to type in ``!cancel``, unique enough to correlate in Argo CD."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class ApprovalDeps:
    """What the service is built from (the feature wires the real ones, tests their own)."""

    settings: ApprovalsSettings
    prefix: str
    db: Database
    outbox: Outbox
    audit: AuditRepo
    templates: Templates
    argo: ArgoApplications
    allowed: Allowed
    clock: Callable[[], float]
    bot_user_id: str
    new_id: Callable[[], str] = new_approval_id
    # How long a reaction to an unknown event waits for prompts whose send is
    # still being recorded (see ``_find_prompt``).
    prompt_wait_s: float = 5.0
    # ha.enabled: every transition and the Argo CD write are checked against this term.
    fence: Fence | None = None


class ApprovalService:
    def __init__(self, deps: ApprovalDeps) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._db = deps.db
        self._repo = ApprovalRepo(deps.db)
        self._clock = deps.clock
        # What is gated, by the approvals.kind column: syncs here, others by register_kind().
        self._kinds: dict[str, RequestKind] = {}
        self.transitions = Transitions(
            deps.db, self._repo, deps.outbox, deps.audit, self._kinds, deps.clock, fence=deps.fence
        )
        self.runner = SyncRunner(
            deps.settings, self._repo, deps.argo, self.transitions, deps.clock, deps.bot_user_id
        )
        self.register_kind(SyncKind(deps.settings, deps.templates, deps.prefix, self.runner))

    def register_kind(self, kind: RequestKind) -> None:
        """Serve requests of another kind (restore drills) with the same votes, expiry and commands."""
        if kind.name in self._kinds:
            raise ValueError(f"request kind {kind.name} is registered twice")
        self._kinds[kind.name] = kind

    def _kind(self, record: ApprovalRecord) -> RequestKind:
        return self._kinds[record.kind]

    async def _approvers(self, record: ApprovalRecord, sender: str) -> tuple[Approvers | None, bool]:
        """The request's approvers rule and whether ``sender`` is one of them."""
        approvers = self._kind(record).approvers(record)
        allowed = approvers is not None and await self._deps.allowed(sender, record.room_id, approvers.rule)
        return approvers, allowed

    @property
    def repo(self) -> ApprovalRepo:
        return self._repo

    # -- !sync ------------------------------------------------------------------

    async def request(
        self, app: str, *, room_id: str, sender: str, event_id: str, cross_signed: bool = False
    ) -> str:
        """Post an approval prompt for ``app`` (as a reply to ``event_id``); its request id.

        Raises ``UserError`` with the reason when no prompt may be posted.
        """
        name = app.strip().lower()
        gate = self._gate(name)
        if not await self._deps.allowed(sender, room_id, gate.requesters):
            raise PermissionDenied(f"you may not request syncs of {name}")
        if gate.require_cross_signed_device and not cross_signed:
            raise PermissionDenied(
                f"syncs of {name} must be requested encrypted from a device you have verified "
                "(cross-signed); verify this session, then send it again"
            )
        application = application_name(name, gate)
        active = await self._repo.active_for(gate.namespace, application)
        if active is not None:
            raise UserError(self._busy(active))
        try:
            view = parse_application(await self._deps.argo.get(gate.namespace, application))
        except (NotFound, MissingCRD):
            raise UserError(f"Argo CD has no Application {gate.namespace}/{application}") from None
        refusal = request_refusal(view)
        if refusal is not None:
            raise UserError(f"not syncing {name}: {refusal}")
        assert view.target_revision is not None  # request_refusal checked it
        now = self._clock()
        new = NewApproval(
            id=self._deps.new_id(),
            app=name,
            namespace=gate.namespace,
            application=application,
            room_id=room_id,
            requester=sender,
            request_event_id=event_id,
            current_revision=view.current_revision,
            target_revision=view.target_revision,
            source_fingerprint=view.source_fingerprint,
            approvals_required=gate.approvals_required,
            four_eyes=gate.four_eyes,
            created_at=now,
            expires_at=now + gate.expires_after_s,
            facts=prompt_facts(
                view,
                gate.approvers,
                self._settings.prompt_resources_max,
                signed_device=gate.require_cross_signed_device,
            )
            # What a recovery after a crash compares with (see SyncRunner.recover).
            | {OPERATION_BEFORE: view.operation_marker},
        )
        try:
            await self.open_request(
                new,
                detail=f"{new.current_revision or 'none'} -> {new.target_revision}",
                react_approve=not gate.require_cross_signed_device,
            )
        except ActiveRequestExists:
            # Another !sync got there between our check and our insert.
            active = await self._repo.active_for(gate.namespace, application)
            raise UserError(
                self._busy(active) if active else f"a request for {name} is already open"
            ) from None
        return new.id

    async def open_request(
        self,
        new: NewApproval,
        *,
        detail: str,
        react_approve: bool = True,
        also: Callable[[Any], Awaitable[None]] | None = None,
        reply: bool = True,
    ) -> None:
        """Insert a request and post its prompt (a reply to the request, unless ``reply`` is off), atomically.

        ``also(conn)`` runs in the same transaction (a kind's own rows). Raises
        ``ActiveRequestExists`` when the same target already has an active request.
        """
        outbox, deps = self._deps.outbox, self._deps
        kind = self._kinds[new.kind]
        async with self._db.transaction() as conn:
            await self._repo.insert(conn, new)
            if also is not None:
                await also(conn)
            record = await self._repo.get_in(conn, new.id)
            assert record is not None
            content = kind.prompt_content(record, mention=True)
            reply_to = new.request_event_id if reply else None
            prompt = await outbox.send_message(new.room_id, content, reply_to=reply_to, tx=conn)
            await self._repo.set_prompt(conn, new.id, prompt)
            if react_approve:
                # A ✅ to click on, where a ✅ counts.
                await outbox.react(new.room_id, prompt, APPROVE_KEY, tx=conn)
            await outbox.react(new.room_id, prompt, REJECT_KEY, tx=conn)
            await deps.audit.record(
                new.requester,
                f"{kind.audit_prefix}:requested",
                "requested",
                room_id=new.room_id,
                event_id=new.request_event_id,
                args=kind.audit_args(record),
                detail=detail,
                tx=conn,
            )
        log.info("%s %s: %s asked (%s)", kind.noun, new.id, new.requester, detail)

    def _gate(self, name: str) -> GatedApp:
        gate = self._settings.apps.get(name)
        if gate is None:
            gated = ", ".join(sorted(self._settings.apps)) or "none"
            raise UserError(f"{name[:64]} is not a gated app (gated: {gated})")
        return gate

    def _busy(self, active: ApprovalRecord) -> str:
        if active.state == State.REQUESTED.value:
            return (
                f"a request for {active.app} is already open: {active.id} (see {self._deps.prefix}approvals)"
            )
        return f"a sync of {active.app} is in progress: {active.id}"

    # -- reactions and redactions -----------------------------------------------

    async def on_reaction(
        self,
        room_id: str,
        sender: str,
        target_event_id: str,
        key: str,
        event_id: str,
        *,
        sent_at: float | None = None,
    ) -> None:
        """A reaction in a served room; only those on one of our prompts matter."""
        record = await self._find_prompt(target_event_id)
        if record is None:
            return
        approvers = self._kind(record).approvers(record)
        # A reaction carries no device (Element sends them unencrypted).
        device_ok = approvers is None or not approvers.require_cross_signed_device
        decision = await self._vote(record, room_id, sender, key, event_id, sent_at, device_ok=device_ok)
        if decision is not None and decision.reason is Ignored.DEVICE_NOT_CROSS_SIGNED:
            await self._explain_reaction_ignored(record, sender)

    async def vote_by_command(
        self,
        approval_id: str,
        *,
        approve: bool,
        room_id: str,
        sender: str,
        event_id: str,
        sent_at: float,
        cross_signed: bool,
    ) -> str:
        """``!approve`` / ``!reject <id>``: the same vote as a reaction, with the device proven or not."""
        key = approval_id.strip().lower()
        record = await self._repo.get(key)
        if record is None or record.room_id != room_id:
            raise UserError(f"no sync request {key[:16]} in this room (see {self._deps.prefix}approvals)")
        kind = self._kind(record)
        decision = await self._vote(
            record,
            room_id,
            sender,
            APPROVE_KEY if approve else REJECT_KEY,
            event_id,
            sent_at,
            device_ok=cross_signed,
        )
        if decision is None:
            raise UserError(f"this message was already counted for {record.id}")
        if decision.effect is Effect.IGNORED:
            raise UserError(f"your vote on {record.id} does not count: {_IGNORED_WORDS[decision.reason]}")
        if decision.effect is Effect.REJECT:
            nothing = kind.nothing_done.replace("was", "will be")
            return f"❌ Rejected {kind.noun} {record.id} ({record.app}); {nothing}."
        return f"✅ Your approval of {record.id} ({record.app}) counts."

    async def _vote(
        self,
        record: ApprovalRecord,
        room_id: str,
        sender: str,
        key: str,
        event_id: str,
        sent_at: float | None,
        *,
        device_ok: bool,
    ) -> ReactionDecision | None:
        """Decide and record one vote (reaction or command); None when this event was counted before."""
        now = self._clock()
        # A timestamp from the future counts as now; one from the past is
        # what lets an approval made while the bot was down count.
        sent = now if sent_at is None else min(sent_at, now)
        kind = self._kind(record)
        _, approver = await self._approvers(record, sender)
        short_key = normalize_key(key)[:_MAX_KEY_CHARS]
        start = False
        async with self._db.transaction() as conn:
            current = await self._repo.get_in(conn, record.id)
            assert current is not None
            facts = RequestFacts(
                State(current.state),
                current.room_id,
                current.requester,
                current.expires_at,
                current.four_eyes,
            )
            decision = decide_reaction(facts, ReactionFacts(room_id, sender, key, sent, approver, device_ok))
            if decision.effect is not Effect.IGNORED and await self._repo.was_redacted(conn, event_id):
                decision = ReactionDecision(Effect.IGNORED, Ignored.REDACTED)
            vote = Vote(
                reaction_event_id=event_id,
                approval_id=record.id,
                room_id=room_id,
                voter=sender,
                reaction_key=short_key,
                sent_at=sent,
                recorded_at=now,
                effect=decision.effect.value,
                reason=None if decision.reason is None else decision.reason.value,
            )
            if not await self._repo.insert_vote(conn, vote):
                return None  # this event was handled before (a replay)
            await self._deps.audit.record(
                sender,
                f"{kind.audit_prefix}:reaction",
                decision.effect.value,
                room_id=room_id,
                event_id=event_id,
                args=f"{record.id} {short_key}",
                detail=vote.reason,
                tx=conn,
            )
            if decision.effect is Effect.REJECT:
                extra = Transition(decided_at=now, decided_by=sender)
                await self.transitions.apply(
                    record.id, State.REQUESTED, State.REJECTED, actor=sender, extra=extra, conn=conn
                )
            elif decision.effect is Effect.APPROVE:
                voters = await self._repo.approving_voters(conn, record.id)
                if approved_enough(set(voters), current.approvals_required):
                    extra = Transition(decided_at=now, decided_by=", ".join(voters))
                    won = await self.transitions.apply(
                        record.id, State.REQUESTED, State.APPROVED, actor=sender, extra=extra, conn=conn
                    )
                    start = won is not None
                    if start:
                        # Before the commit: resume() must never see it unclaimed.
                        kind.claim(record.id)
        if start:
            # Only the task whose compare-and-set won gets here, once.
            await kind.start(record.id)
        return decision

    async def _explain_reaction_ignored(self, record: ApprovalRecord, sender: str) -> None:
        """Tell an approver in the prompt's thread why their ✅ did nothing, and what counts instead."""
        prefix = self._deps.prefix
        text = (
            f"{sender}: a ✅ does not approve {record.app}, its gate needs proof of your device. "
            f"Send {prefix}approve {record.id} from a device you have verified (cross-signed)."
        )
        async with self._db.transaction() as conn:
            root = await self.transitions.prompt_ref(record, conn)
            await self._deps.outbox.send_message(
                record.room_id, Message(text).content(), thread_root=root, tx=conn
            )

    async def on_redaction(self, room_id: str, sender: str, redacted_event_id: str, event_id: str) -> None:
        """Someone removed an event; if it was a ✅ on an open request, it stops counting."""
        now = self._clock()
        async with self._db.transaction() as conn:
            vote = await self._repo.vote_in(conn, redacted_event_id)
            if vote is None:
                # Perhaps a reaction whose own handler has not run yet.
                if await self._has_open_request(room_id):
                    await self._repo.remember_redaction(conn, redacted_event_id, now)
                return
            if not await self._repo.withdraw_vote(conn, redacted_event_id, now):
                return  # already withdrawn (a replay)
            record = await self._repo.get_in(conn, vote.approval_id)
            assert record is not None
            counts = withdrawal_counts(State(record.state), Effect(vote.effect))
            await self._deps.audit.record(
                sender,
                f"{self._kind(record).audit_prefix}:withdrawn",
                "withdrawn" if counts else "ignored",
                room_id=room_id,
                event_id=event_id,
                args=f"{record.id} {vote.reaction_key}",
                detail=None
                if counts
                else "not-open"
                if record.state != State.REQUESTED.value
                else "no-effect",
                tx=conn,
            )

    async def _has_open_request(self, room_id: str) -> bool:
        # Called inside a transaction: this task holds the lock, so fetch* reads in it.
        return bool(await self._repo.in_states([State.REQUESTED.value], room_id=room_id))

    async def _find_prompt(self, event_id: str) -> ApprovalRecord | None:
        """The request whose prompt is ``event_id``, or None.

        A person reacts to a prompt they have seen, but their reaction can
        reach the bot before the outbox has recorded that prompt's event id
        (the homeserver answered the send; the commit is queued behind other
        writes). While prompts without a known event id exist, the lookup is
        retried for ``prompt_wait_s`` (this runs in the reaction's own task),
        so such a ✅ is not taken for a reaction to some other message.
        """
        record = await self._repo.by_prompt_event(event_id)
        if record is not None:
            return record
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deps.prompt_wait_s
        while True:
            if event_id in await self.resolve_prompts():
                return await self._repo.by_prompt_event(event_id)
            recent = self._clock() - _PROMPT_RESOLVE_WINDOW_S
            if loop.time() >= deadline or not await self._repo.unresolved_prompts(recent):
                return None
            await asyncio.sleep(_PROMPT_WAIT_POLL_S)

    async def resolve_prompts(self) -> set[str]:
        """Store the event ids of prompts the outbox has sent since; return them.

        Reactions find their prompt by event id, and the outbox rows that
        know it may be pruned one day: the id is copied as soon as it is known
        (on the next reaction or expiry tick).
        """
        found: set[str] = set()
        # A prompt never sent within a week (the room refused it) is given up on.
        recent = self._clock() - _PROMPT_RESOLVE_WINDOW_S
        for approval_id, outbox_id in await self._repo.unresolved_prompts(recent):
            sent_id = await self._deps.outbox.event_id(outbox_id)
            if sent_id is not None:
                await self._repo.set_prompt_event(approval_id, sent_id)
                found.add(sent_id)
        return found

    # -- scheduled expiry ----------------------------------------------------------

    async def expire_due(self) -> int:
        """Close requests past their expiry; how many were closed. Also the feature's housekeeping."""
        await self.resolve_prompts()
        now = self._clock()
        closed = 0
        for approval_id in await self._repo.due_for_expiry(now):
            done = await self.transitions.apply(
                approval_id,
                State.REQUESTED,
                State.EXPIRED,
                actor=self._deps.bot_user_id,
                extra=Transition(decided_at=now),
            )
            closed += done is not None
        await self._repo.prune_redactions(now - _REDACTION_MEMORY_S)
        return closed

    # -- !cancel, !approvals, !apps -----------------------------------------------

    async def cancel(self, approval_id: str, *, room_id: str, sender: str) -> str:
        key = approval_id.strip().lower()
        record = await self._repo.get(key)
        if record is None or record.room_id != room_id:
            raise UserError(f"no sync request {key[:16]} in this room (see {self._deps.prefix}approvals)")
        kind = self._kind(record)
        _, approver = await self._approvers(record, sender)
        decision = decide_cancel(
            State(record.state), sender == record.requester, approver, kind.started_refusal
        )
        if not decision.allowed:
            raise UserError(f"cannot cancel {record.id}: {decision.reason}")
        now = self._clock()
        extra = Transition(decided_at=now, decided_by=sender)
        done = await self.transitions.apply(
            record.id, State.REQUESTED, State.CANCELLED, actor=sender, extra=extra
        )
        if done is None:
            raise UserError(f"cannot cancel {record.id}: it was decided meanwhile")
        return f"Cancelled {kind.noun} {record.id} ({record.app}); {kind.nothing_done}."

    async def open_requests(self, room_id: str) -> Message:
        records = await self._repo.in_states([s.value for s in ACTIVE_STATES], room_id=room_id)
        return render_list(self._deps.templates, records, self._deps.prefix)

    async def list_apps(self) -> Message:
        gated = {(g.namespace, application_name(n, g)): n for n, g in self._settings.apps.items()}
        rows: list[dict[str, Any]] = []
        problems: list[str] = []
        for namespace in sorted({g.namespace for g in self._settings.apps.values()}):
            try:
                objects = await self._deps.argo.list(namespace)
            except KubeError as error:
                problems.append(f"{namespace}: {error}")
                continue
            for obj in objects:
                view = parse_application(obj)
                rows.append(
                    {
                        "namespace": view.namespace or namespace,
                        "name": view.name,
                        "sync_status": view.sync_status,
                        "health_status": view.health_status,
                        "automated": view.automated,
                        "gated": gated.get((namespace, view.name)),
                        "operation": "operation running" if view.operation_running else "",
                        "info": app_info(obj),
                    }
                )
        if not rows and problems:
            raise UserError("; ".join(problems))
        rows.sort(key=lambda row: (row["gated"] is None, row["namespace"], row["name"]))
        return render_apps(self._deps.templates, rows, problems, self._deps.prefix)
