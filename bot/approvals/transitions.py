"""One state change of a request: compare-and-set, prompt edit, thread note and audit row, atomically.

The edit and the audit row are committed in the same transaction as the
state change, so the room and the audit log can never disagree with the
store, and only the caller whose compare-and-set won says anything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from bot.approvals.kinds import RequestKind
from bot.approvals.machine import TERMINAL_STATES, State, can_transition
from bot.approvals.store import ApprovalRecord, ApprovalRepo, Transition
from bot.outbox import EventRef, Outbox, OutboxState
from bot.store.audit import AuditRepo
from bot.store.database import Database
from bot.store.leadership import Fence, fence_check
from bot.store.tx import Tx

log = logging.getLogger(__name__)


class Transitions:
    def __init__(
        self,
        db: Database,
        repo: ApprovalRepo,
        outbox: Outbox,
        audit: AuditRepo,
        kinds: Mapping[str, RequestKind],
        clock: Callable[[], float],
        *,
        fence: Fence | None = None,
    ) -> None:
        self._db = db
        self._fence = fence
        self._repo = repo
        self._outbox = outbox
        self._audit = audit
        # Filled by the service as kinds register; read on every transition.
        self._kinds = kinds
        self._clock = clock

    async def apply(
        self,
        approval_id: str,
        source: State,
        target: State,
        *,
        actor: str,
        extra: Transition | None = None,
        detail: str | None = None,
        conn: Tx | None = None,
        also: Callable[[Tx, ApprovalRecord], Awaitable[None]] | None = None,
    ) -> ApprovalRecord | None:
        """Move ``source → target``; the new record, or None if another path moved it first.

        ``also`` runs inside the same transaction, after the state change and
        before the prompt is edited (a kind's own rows that the prompt shows).
        """
        if not can_transition(source, target):
            raise ValueError(f"no transition {source.value} → {target.value}")
        async with self._db.transaction(conn) as tx:
            # A replica that no longer leads changes nothing (LeadershipLost).
            await fence_check(self._fence, tx)
            if not await self._repo.transition(
                tx, approval_id, source.value, target.value, self._clock(), extra
            ):
                return None
            record = await self._repo.get_in(tx, approval_id)
            assert record is not None  # it was just updated in this transaction
            kind = self._kinds[record.kind]
            if also is not None:
                await also(tx, record)
            ref = await self.prompt_ref(record, tx)
            if ref is not None:
                content = kind.prompt_content(record, mention=False)
                # Only the newest state matters: replace an edit still waiting to be sent.
                await self._outbox.edit(record.room_id, ref, content, supersede=True, tx=tx)
                if target in TERMINAL_STATES:
                    note = kind.outcome_note(record)
                    await self._outbox.send_message(record.room_id, note.content(), thread_root=ref, tx=tx)
            await self._audit.record(
                actor,
                f"{kind.audit_prefix}:{target.value}",
                target.value,
                room_id=record.room_id,
                event_id=record.request_event_id,
                args=kind.audit_args(record),
                detail=detail,
                tx=tx,
            )
        log.info(
            "approval %s (%s): %s → %s by %s", approval_id, record.app, source.value, target.value, actor
        )
        return record

    async def check_fence(self) -> None:
        """Raise ``LeadershipLost`` if another replica leads (before an act outside the store)."""
        if self._fence is not None:
            await self._fence.check()

    async def prompt_ref(self, record: ApprovalRecord, tx: Tx) -> EventRef | None:
        """The prompt's event id (learnt from the outbox and kept), else its pending outbox row.

        Kept as an event id as soon as it is known, so a pruned outbox row
        can never make a state change fail; None if the prompt is gone.
        """
        if record.prompt_event_id is not None:
            return record.prompt_event_id
        if record.prompt_outbox_id is None:
            return None
        state = await self._outbox.state(record.prompt_outbox_id)
        if state is None:
            log.warning("approval %s: its prompt is no longer in the outbox; not editing it", record.id)
            return None
        if state is OutboxState.SENT:
            event_id = await self._outbox.event_id(record.prompt_outbox_id)
            if event_id is not None:
                await self._repo.set_prompt_event(record.id, event_id, tx=tx)
                return event_id
        return record.prompt_outbox_id
