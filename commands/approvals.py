"""``!sync <app>``, ``!approve``/``!reject <id>``, ``!approvals``, ``!cancel``, ``!apps``: gated syncs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command

if TYPE_CHECKING:
    from bot.approvals.service import ApprovalService

_WHAT = "Approval gating (approvals.apps)"


def _service(ctx: CommandContext) -> ApprovalService:
    # Imported when the command runs, not when commands are registered: a bot
    # without this feature never loads it (its RSS; see bench/README.md).
    from bot.approvals.service import ApprovalService

    return ctx.services.extensions.get(ApprovalService, what=_WHAT)


async def _vote(ctx: CommandContext, request_id: str, *, approve: bool) -> str:
    return await _service(ctx).vote_by_command(
        request_id,
        approve=approve,
        room_id=ctx.room_id,
        sender=ctx.sender,
        event_id=ctx.event_id,
        sent_at=ctx.sent_at,
        cross_signed=ctx.sender_device.cross_signed,
    )


@command()
async def sync(ctx: CommandContext, app: str) -> None:
    """Ask for an approved Argo CD sync of a gated app.

    The bot reads the Application and posts a prompt with its sync and health
    status, the revision that will be synced (current → target, pinned), the
    resources out of sync and who may approve. An approver's ✅ starts the
    sync of exactly that revision; ❌ from the requester or an approver
    rejects it. The bot follows the sync and edits the prompt with the
    outcome. Refused if the app is not gated, unknown, has automated sync
    enabled or already has an operation running.
    """
    # The prompt is the reply; it is queued with the request, atomically.
    await _service(ctx).request(
        app,
        room_id=ctx.room_id,
        sender=ctx.sender,
        event_id=ctx.event_id,
        cross_signed=ctx.sender_device.cross_signed,
    )


@command()
async def approve(ctx: CommandContext, request_id: str) -> str:
    """Approve an open sync request, as a ✅ on its prompt does.

    Sent encrypted from a device you have cross-signed, this is the only
    approval that counts for an app with require_cross_signed_device: a
    reaction proves no device (Element sends reactions unencrypted), so a
    stolen access token alone cannot approve a sync.
    """
    return await _vote(ctx, request_id, approve=True)


@command()
async def reject(ctx: CommandContext, request_id: str) -> str:
    """Reject an open sync request (its requester or an approver), as a ❌ on its prompt does."""
    return await _vote(ctx, request_id, approve=False)


@command()
async def approvals(ctx: CommandContext) -> Message:
    """List this room's sync requests that are open or syncing."""
    return await _service(ctx).open_requests(ctx.room_id)


@command()
async def cancel(ctx: CommandContext, request_id: str) -> str:
    """Withdraw an open sync request (its requester or an approver).

    Only requests still waiting for approval can be cancelled; a sync that
    has started is stopped in Argo CD, not here.
    """
    return await _service(ctx).cancel(request_id, room_id=ctx.room_id, sender=ctx.sender)


@command()
async def apps(ctx: CommandContext) -> Message:
    """List the Argo CD applications with sync and health status; 🔐 marks the gated ones."""
    return await _service(ctx).list_apps()
