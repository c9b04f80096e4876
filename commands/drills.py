"""``!restore-drill [schedule|backup]``: restore a backup into scratch namespaces, once approved."""

from __future__ import annotations

from bot.services import CommandContext
from commands.registry import command

_DRILLS = "Restore drills (velero.drills.enabled)"


@command("restore-drill", permission="restore-drill")
async def restore_drill(ctx: CommandContext, target: str | None = None) -> None:
    """Prove a backup restores: restore it into scratch namespaces through Velero, check it, report.

    `!restore-drill` restores the newest Completed backup; `!restore-drill
    <schedule>` the newest Completed backup of that Velero schedule;
    `!restore-drill <backup>` that backup. The bot posts a prompt with what
    will be restored where; an approver other than you approves it with ✅
    (or `!approve <id>`). Velero then restores into namespaces named
    readybot-drill-<id>-<namespace>, without cluster-scoped resources; the bot
    follows the Restore, counts what came back (items, pods Ready, PVCs
    Bound), edits the prompt with the verdict, posts the report in its
    thread and deletes the scratch namespaces. One drill at a time.
    """
    # Imported when the command runs, not when commands are registered: a bot
    # without this feature never loads it (its RSS; see bench/README.md).
    from bot.drills.service import DrillService

    # The prompt is the reply; it is queued with the request, atomically.
    await ctx.services.extensions.get(DrillService, what=_DRILLS).request(
        target,
        room_id=ctx.room_id,
        sender=ctx.sender,
        event_id=ctx.event_id,
        cross_signed=ctx.sender_device.cross_signed,
    )
