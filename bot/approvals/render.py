"""Messages of the approval gate: the prompt (edited as the request moves), outcomes, lists.

The wording per state lives here, in one place; the ``approval_*`` templates
lay it out as plain text and autoescaped HTML.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bot.approvals.application import AppView
from bot.approvals.machine import APPROVE_KEY, REJECT_KEY, State
from bot.approvals.store import ApprovalRecord
from bot.render.message import MAX_FIELD_BYTES, Message, fit_lines
from bot.render.templates import Templates
from config.base import PermissionRule

# The prompt shows its lists within a part of one field's budget, so the
# edits (which carry the text twice) stay far below the event size limit.
_LIST_BUDGET = MAX_FIELD_BYTES // 4
_APPS_SHOWN = 30


def format_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def short(revision: str | None) -> str:
    """Git SHAs shortened to 10 characters; other revisions (chart versions, tags) as they are."""
    if revision is None:
        return "none"
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision[:10]
    return revision


def describe_rule(rule: PermissionRule) -> str:
    """Who a rule lets through, in words ("@bob:x or power level ≥ 50")."""
    parts = list(rule.users)
    if rule.min_power_level is not None:
        parts.append(f"anyone with power level ≥ {rule.min_power_level}")
    return " or ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts) or "anyone"


def prompt_facts(
    view: AppView, approvers: PermissionRule, max_resources: int, *, signed_device: bool = False
) -> dict[str, Any]:
    """What the prompt shows about the app, stored with the request so every edit can show it again."""
    labels = [
        r.label() + (" (to prune)" if r.requires_pruning else "") for r in view.out_of_sync[:max_resources]
    ]
    return {
        "sync_status": view.sync_status,
        "health_status": view.health_status,
        "out_of_sync": labels,
        "out_of_sync_total": len(view.out_of_sync),
        "approvers": describe_rule(approvers),
        # Only exact ids can be mentioned; globs cannot.
        "mention": [u for u in approvers.users if not any(c in u for c in "*?[")],
        # Approval only by `!approve <id>` from a cross-signed device.
        "signed_device": signed_device,
    }


def headline(record: ApprovalRecord, prefix: str) -> str:  # noqa: PLR0911 - one wording per state
    """One line saying where the request stands."""
    state = State(record.state)
    outcome: Mapping[str, Any] = record.outcome or {}
    message = str(outcome.get("message", ""))
    by = record.decided_by or ""
    revision = short(record.target_revision)
    if state is State.REQUESTED:
        needed = record.approvals_required
        return f"⏳ Waiting for {needed} approval{'s' if needed != 1 else ''}."
    if state is State.APPROVED:
        return f"✅ Approved by {by}; starting the sync of {revision}…"
    if state is State.STARTED:
        return f"🔄 Syncing {revision} (approved by {by})…"
    if state is State.SUCCEEDED:
        health = f"{outcome.get('sync_status', '?')}, {outcome.get('health_status', '?')}"
        if outcome.get("settled", True):
            return f"✅ Synced {revision}: {health}."
        return f"⚠️ Synced {revision}, but the app is {health}."
    if state is State.FAILED:
        return f"❌ Sync of {revision} failed: {message}"
    if state is State.ERROR:
        return f"💥 Sync of {revision} ended in an error: {message}"
    if state is State.REJECTED:
        return f"🚫 Rejected by {by}. Nothing was synced."
    if state is State.EXPIRED:
        return f"⌛ Expired at {format_time(record.expires_at)} without enough approvals. Nothing was synced."
    if state is State.CANCELLED:
        return f"🚫 Cancelled by {by}. Nothing was synced."
    if state is State.REVISION_MOVED:
        return f"↪️ Not synced: {message}. Send {prefix}sync {record.app} for a fresh prompt."
    return f"⛔ Not synced: {message}"


def render_prompt(templates: Templates, record: ApprovalRecord, prefix: str) -> Message:
    facts = record.facts
    resources = fit_lines(list(facts.get("out_of_sync", [])), budget=_LIST_BUDGET)
    hidden = int(facts.get("out_of_sync_total", 0)) - len(facts.get("out_of_sync", []))
    if hidden > 0:
        resources.append(f"… and {hidden} more")
    return templates.render(
        "approval_prompt",
        r=record,
        headline=headline(record, prefix),
        current=short(record.current_revision),
        target=record.target_revision,
        sync_status=facts.get("sync_status", "Unknown"),
        health_status=facts.get("health_status", "Unknown"),
        resources=resources,
        out_of_sync_total=int(facts.get("out_of_sync_total", 0)),
        approvers=facts.get("approvers", ""),
        expires=format_time(record.expires_at),
        approve_key=APPROVE_KEY,
        reject_key=REJECT_KEY,
        signed_device=bool(facts.get("signed_device", False)),
        prefix=prefix,
    )


def prompt_content(
    templates: Templates, record: ApprovalRecord, prefix: str, *, mention: bool
) -> dict[str, Any]:
    """The prompt's event content; the first one mentions the approvers by id, edits do not again."""
    content = render_prompt(templates, record, prefix).content()
    users = list(record.facts.get("mention", [])) if mention else []
    content["m.mentions"] = {"user_ids": users}
    return content


def render_outcome(templates: Templates, record: ApprovalRecord, prefix: str) -> Message:
    """The details posted in the prompt's thread when a request ends."""
    outcome: Mapping[str, Any] = record.outcome or {}
    failed = fit_lines([str(x) for x in outcome.get("failed_resources", [])], budget=_LIST_BUDGET * 2)
    return templates.render(
        "approval_outcome",
        r=record,
        headline=headline(record, prefix),
        revision=outcome.get("revision"),
        failed=failed,
        prefix=prefix,
    )


def render_list(templates: Templates, records: Sequence[ApprovalRecord], prefix: str) -> Message:
    rows = [
        {
            "id": r.id,
            "app": r.app,
            "state": r.state.replace("_", " "),
            "requester": r.requester,
            "revision": short(r.target_revision),
            "expires": format_time(r.expires_at),
            "open": r.state == State.REQUESTED.value,
        }
        for r in records
    ]
    return templates.render("approval_list", rows=rows, prefix=prefix)


def render_apps(
    templates: Templates, rows: Sequence[Mapping[str, Any]], problems: Sequence[str], prefix: str
) -> Message:
    """``!apps``: at most ``_APPS_SHOWN`` rows (a row takes up to ~200 bytes of HTML)."""
    shown = list(rows[:_APPS_SHOWN])
    return templates.render(
        "approval_apps", rows=shown, more=len(rows) - len(shown), problems=list(problems), prefix=prefix
    )
