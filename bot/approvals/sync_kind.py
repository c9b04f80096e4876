"""The ``sync`` request kind: an approved Argo CD sync of a gated app (docs/approvals.md)."""

from __future__ import annotations

from typing import Any

from bot.approvals.kinds import SYNC, Approvers
from bot.approvals.render import prompt_content, render_outcome
from bot.approvals.runner import SyncRunner
from bot.approvals.store import ApprovalRecord
from bot.render.message import Message
from bot.render.templates import Templates
from config.approvals import ApprovalsSettings


class SyncKind:
    name = SYNC
    audit_prefix = "approval"
    noun = "sync request"
    nothing_done = "nothing was synced"
    started_refusal = "the sync has already started; stop it in Argo CD if you must"

    def __init__(
        self, settings: ApprovalsSettings, templates: Templates, prefix: str, runner: SyncRunner
    ) -> None:
        self._settings = settings
        self._templates = templates
        self._prefix = prefix
        self._runner = runner

    def approvers(self, record: ApprovalRecord) -> Approvers | None:
        gate = self._settings.apps.get(record.app)
        return None if gate is None else Approvers(gate.approvers, gate.require_cross_signed_device)

    def prompt_content(self, record: ApprovalRecord, *, mention: bool) -> dict[str, Any]:
        return prompt_content(self._templates, record, self._prefix, mention=mention)

    def outcome_note(self, record: ApprovalRecord) -> Message:
        return render_outcome(self._templates, record, self._prefix)

    def audit_args(self, record: ApprovalRecord) -> str:
        return f"{record.id} {record.app} {record.target_revision}"

    def claim(self, request_id: str) -> None:
        self._runner.claim(request_id)

    async def start(self, request_id: str) -> None:
        await self._runner.start(request_id)
