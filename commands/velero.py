"""``!backups``: Velero schedules, their last backup and next run; ``!backups <schedule>``: its history."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.errors import UserError
from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command

_WHAT = "The Velero relay (velero.enabled)"
# How many schedule names an "unknown schedule" answer suggests.
_SUGGESTIONS = 10


@command(permission="backups")
async def backups(ctx: CommandContext, schedule: str | None = None) -> Message:
    """Show every Velero schedule: its last backup with phase and age, and the next expected run.

    `!backups <schedule>` shows that schedule's recent backups, newest first,
    with their phase, duration, items, errors and warnings. The answer comes
    from what the bot's watch saw; when the cluster is unreachable it says so
    and shows what was last seen.
    """
    # Imported when the command runs, not when commands are registered: a bot
    # without this feature never loads it (its RSS; see bench/README.md).
    from bot.velero import render
    from bot.velero.service import VeleroService

    service = ctx.services.extensions.get(VeleroService, what=_WHAT)
    now = datetime.fromtimestamp(ctx.services.clock(), UTC)
    if schedule is None:
        overview = await service.overview()
        return ctx.services.templates.render("velero_overview", **render.overview_context(overview, now))
    history = await service.history(schedule)
    if history is None:
        overview = await service.overview()
        if not overview.listed:
            problem = overview.problem or "the schedules are not listed yet"
            raise UserError(f"Velero schedule {schedule!r} is not known yet: {problem}.")
        names = [state.view.name for state in overview.schedules][:_SUGGESTIONS]
        known = f" Known: {', '.join(names)}." if names else " There are no schedules."
        raise UserError(f"No Velero schedule named {schedule!r} in namespace {service.namespace}.{known}")
    return ctx.services.templates.render("velero_history", **render.history_context(history, now))
