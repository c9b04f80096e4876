"""``!alerts``, ``!silence``, ``!silences``, ``!unsilence``: Alertmanager from chat."""

from __future__ import annotations

from datetime import datetime

from bot.alertmanager.matchers import format_matchers, parse_matchers, parse_silence
from bot.alertmanager.models import Alert, Silence
from bot.alertmanager.silences import SilenceService
from bot.errors import UserError
from bot.render.message import Message, fit_lines
from bot.services import CommandContext
from commands.registry import command
from config.durations import format_duration

_WHAT = "Alertmanager's API (alertmanager.api_url)"
# Labels that say where an alert is, shown next to its name when present.
_WHERE_LABELS = ("cluster", "namespace", "job", "service", "pod", "instance")


def _service(ctx: CommandContext) -> SilenceService:
    return ctx.services.extensions.get(SilenceService, what=_WHAT)


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


@command(permission="alerts")
async def alerts(ctx: CommandContext, *matchers: str) -> Message:
    """List the alerts firing now in Alertmanager.

    Matchers narrow the list, e.g. `!alerts severity=critical namespace=shop`.
    Silenced and inhibited alerts are counted, not listed; the Watchdog
    heartbeat is left out.
    """
    service = _service(ctx)
    filters = [m for word in matchers for m in parse_matchers(word, prefix=ctx.prefix)]
    firing, suppressed = await service.firing(filters)
    now = service.now()
    rows = [_alert_row(alert, now) for alert in firing]
    lines = fit_lines([row["plain"] for row in rows])
    shown = rows[: len(lines)] if len(lines) == len(rows) else rows[: len(lines) - 1]
    return ctx.services.templates.render(
        "alerts_list",
        lines=lines,
        rows=shown,
        count=len(firing),
        more=len(rows) - len(shown),
        suppressed=suppressed,
        filters=format_matchers(filters) if filters else "",
    )


def _alert_row(alert: Alert, now: datetime) -> dict[str, str]:
    name = alert.labels.get("alertname", "(no alertname)")
    severity = alert.labels.get("severity", "")
    where = ", ".join(f"{k}={alert.labels[k]}" for k in _WHERE_LABELS if alert.labels.get(k))
    since = format_duration(now - alert.starts_at)
    summary = alert.annotations.get("summary") or alert.annotations.get("description", "")
    summary = " ".join(summary.split())[:200]
    plain = f"[{severity or '-'}] {name}" + (f" ({where})" if where else "") + f" for {since}"
    if summary:
        plain += f" — {summary}"
    return {
        "plain": plain,
        "name": name,
        "severity": severity,
        "where": where,
        "since": since,
        "summary": summary,
    }


@command(permission="silence")
async def silence(ctx: CommandContext, matchers: str, duration: str, *comment: str) -> Message:
    """Silence the alerts matching the matchers, for a duration, with an optional comment.

    Matchers use Alertmanager's syntax (`name="value"`, `name=value`, `name!=value`,
    `name=~"regex"`, `name!~"regex"`), separated by spaces or commas; the duration
    is like `30m`, `2h`, `1d` or `1h30m`. Example:
    `!silence alertname="KubePodCrashLooping" namespace=shop 2h deploying the fix`.
    The silence is created in your name.
    """
    service = _service(ctx)
    request = parse_silence(
        [matchers, duration, *comment],
        max_duration=service.max_duration,
        prefix=ctx.prefix,
        default_comment=f"from Matrix by {ctx.sender}",
    )
    silence_id, ends = await service.silence(
        ctx.sender, ctx.room_id, request.matchers, request.duration, request.comment, event_id=ctx.event_id
    )
    return ctx.services.templates.render(
        "silence_created",
        silence_id=silence_id,
        user=ctx.sender,
        matchers=[str(m) for m in request.matchers],
        duration=format_duration(request.duration),
        ends=_time(ends),
        prefix=ctx.prefix,
    )


@command(permission="silences")
async def silences(ctx: CommandContext) -> Message:
    """List the active and pending silences: id, matchers, end, author and comment."""
    service = _service(ctx)
    live = await service.live()
    now = service.now()
    rows = [_silence_row(s, now) for s in live]
    lines = fit_lines([row["plain"] for row in rows])
    shown = rows[: len(lines)] if len(lines) == len(rows) else rows[: len(lines) - 1]
    return ctx.services.templates.render(
        "silence_list", lines=lines, rows=shown, count=len(rows), more=len(rows) - len(shown)
    )


def _silence_row(item: Silence, now: datetime) -> dict[str, str]:
    matchers = format_matchers(item.matchers)
    left = format_duration(item.ends_at - now)
    comment = " ".join(item.comment.split())[:200]
    plain = (
        f"{item.id} {matchers} — {item.state} until {_time(item.ends_at)} ({left} left), by {item.created_by}"
    )
    if comment:
        plain += f": {comment}"
    return {
        "plain": plain,
        "id": item.id,
        "matchers": matchers,
        "state": item.state,
        "ends": _time(item.ends_at),
        "left": left,
        "created_by": item.created_by,
        "comment": comment,
    }


@command(permission="silence")
async def unsilence(ctx: CommandContext, silence_id: str) -> Message:
    """Lift (expire) a silence now, by its id or the first 8 characters of it (see `!silences`)."""
    service = _service(ctx)
    if not silence_id.strip():
        raise UserError("give the silence id")
    lifted = await service.unsilence(ctx.sender, ctx.room_id, silence_id, event_id=ctx.event_id)
    return ctx.services.templates.render(
        "silence_expired", silence=lifted, user=ctx.sender, matchers=format_matchers(lifted.matchers)
    )
