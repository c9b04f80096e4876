"""What is gated: the kinds of request the approval machinery serves, and what each must say and do.

One table, one vote log, one expiry job, one ``!approve``/``!reject``/
``!cancel``/``!approvals`` serve every kind; a request's ``kind`` column says
which ``RequestKind`` renders its prompt, knows its approvers and starts it
once approved. Argo CD syncs are ``sync`` (``bot.approvals.sync_kind``);
Velero restore drills register ``restore-drill`` (``bot.drills.service``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from bot.approvals.store import ApprovalRecord
    from bot.render.message import Message
    from config.base import PermissionRule

SYNC: Final = "sync"
RESTORE_DRILL: Final = "restore-drill"


@dataclass(frozen=True, slots=True)
class Approvers:
    """Whose approval counts for a request, and whether it must come from a cross-signed device."""

    rule: PermissionRule
    require_cross_signed_device: bool = False


class RequestKind(Protocol):
    # The value of the approvals.kind column.
    name: str
    # Audit actions are "<audit_prefix>:<state>" ("approval:approved" for syncs, as ever).
    audit_prefix: str
    # In answers: "no sync request 3f9a in this room", "Cancelled restore drill 3f9a …".
    noun: str
    # "nothing was synced", "nothing was restored".
    nothing_done: str
    # Why a started request cannot be cancelled from chat.
    started_refusal: str

    def approvers(self, record: ApprovalRecord) -> Approvers | None:
        """Who may approve (and reject) this request; None when no one may any more (e.g. ungated)."""
        ...

    def prompt_content(self, record: ApprovalRecord, *, mention: bool) -> dict[str, Any]:
        """The prompt's event content as the request stands (edited on every state change)."""
        ...

    def outcome_note(self, record: ApprovalRecord) -> Message:
        """What goes into the prompt's thread when the request ends."""
        ...

    def audit_args(self, record: ApprovalRecord) -> str:
        """The ``args`` of its audit rows."""
        ...

    def claim(self, request_id: str) -> None:
        """Called in the transaction that moves the request to ``approved``, before it commits."""
        ...

    async def start(self, request_id: str) -> None:
        """Carry out an approved request; called once, by the task whose compare-and-set won."""
        ...
