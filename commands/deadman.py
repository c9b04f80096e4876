"""``!watchdog``: the dead-man's switch, source by source."""

from __future__ import annotations

from bot.deadman.switch import DeadmansSwitch, SourceState, SourceView
from bot.errors import StoreUnavailableError, UserError
from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command
from config.durations import format_duration

_WHAT = "The dead-man's switch (deadman.enabled)"


@command(permission="watchdog")
async def watchdog(ctx: CommandContext) -> Message:
    """Show each heartbeat source of the dead-man's switch: last heartbeat, up or down, and since when."""
    switch = ctx.services.extensions.get(DeadmansSwitch, what=_WHAT)
    now = ctx.services.clock()
    sources = [_row(view, now) for view in await switch.status()]
    return ctx.services.templates.render(
        "deadman_status",
        enabled=switch.settings.enabled,
        sources=sources,
        threshold=format_duration(switch.settings.threshold_s),
        secondary=switch.settings.secondary.url is not None,
    )


@command("watchdog forget", permission="watchdog_forget")
async def watchdog_forget(ctx: CommandContext, source: str) -> Message:
    """Stop watching a heartbeat source that is gone for good (a decommissioned Alertmanager).

    Give the source as `!watchdog` shows it. A source that beats again is
    tracked anew; one listed in `deadman.expected_sources` must be removed
    from the configuration instead.
    """
    switch = ctx.services.extensions.get(DeadmansSwitch, what=_WHAT)
    if source in switch.settings.expected_sources:
        raise UserError(f"{source} is in deadman.expected_sources: remove it from the configuration instead")
    try:
        record = await switch.forget(source)
    except StoreUnavailableError:
        raise UserError("the bot's store is busy; try again in a moment") from None
    if record is None:
        raise UserError(f"no heartbeat source {source[:200]!r}; `{ctx.prefix}watchdog` lists them")
    return Message(f"Forgot heartbeat source {record.source} (it was {record.state.value}).")


def _row(view: SourceView, now: float) -> dict[str, str]:
    last_seen = "never" if view.last_seen is None else f"{format_duration(now - view.last_seen)} ago"
    if view.state is SourceState.DOWN:
        since = view.silent_since if view.silent_since is not None else view.state_since
        raised = format_duration(now - view.state_since)
        detail = f"silent for {format_duration(now - since)}, alarm raised {raised} ago"
        if view.last_notice is not None:
            detail += f", second channel: {view.last_notice.kind} {view.last_notice.state}"
        icon = "🔴"
    else:
        due = (
            ""
            if view.due_at is None
            else f"declared down in {format_duration(max(0.0, view.due_at - now))} without one"
        )
        detail = due + (f"; {view.outages} outage(s) so far" if view.outages else "")
        icon = "🟢"
    return {
        "icon": icon,
        "source": view.source,
        "state": view.state.value,
        "last_seen": last_seen,
        "detail": detail,
    }
