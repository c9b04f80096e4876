"""``!readiness status|explain|trend``: the production-readiness scorecard in the room."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command

if TYPE_CHECKING:
    from bot.readiness.service import ReadinessService

_WHAT = "The readiness scorecard (readiness.enabled)"
TREND_FILENAME = "readiness-trend.png"


def _service(ctx: CommandContext) -> ReadinessService:
    # Imported when the command runs, not when commands are registered: a bot
    # without this feature never loads it (its RSS; see bench/README.md).
    from bot.readiness.service import ReadinessService

    return ctx.services.extensions.get(ReadinessService, what=_WHAT)


@command("readiness status")
async def readiness_status(ctx: CommandContext, *target: str) -> Message:
    """Probe the cluster and show the production-readiness scorecard.

    Without an argument: one row per category and per phase with passed/total
    and a mark (✅ pass, ❌ fail, ❔ unknown: could not be checked, 📝 manual),
    the overall score, the coverage (how much could actually be checked) and
    what changed since the previous run. With a category (`security`), a phase
    (`1`), a step (`1.3`) or a criterion (`1.3.1`): its criteria, each with
    what was found and what was expected.
    """
    from bot.readiness.render import detail_message, status_message
    from bot.readiness.targets import resolve

    service = _service(ctx)
    # Resolved before probing, so a typo is answered at once.
    chosen = resolve(service.plan, " ".join(target)) if target else None
    report = await service.run("command")
    if chosen is None:
        return status_message(ctx.services.templates, report, ctx.prefix)
    return detail_message(ctx.services.templates, report, chosen)


@command("readiness explain")
async def readiness_explain(ctx: CommandContext, criterion: str) -> Message:
    """Say what a criterion (1.3.1) or every criterion of a step (1.3) checks, and how to fix it.

    Shows the probe in words, the plan's own note, how to make it pass and the
    last stored result. Does not probe the cluster.
    """
    from bot.readiness.render import explain_message
    from bot.readiness.targets import criteria_of, resolve

    service = _service(ctx)
    chosen = resolve(service.plan, criterion)
    last = {c.id: await service.last_result(c.id) for _, _, c in criteria_of(service.plan, chosen)}
    return explain_message(ctx.services.templates, service.plan, chosen, last, ctx.prefix)


@command("readiness trend")
async def readiness_trend(ctx: CommandContext) -> None:
    """Post a chart of the overall and per-category scores over the stored runs (an image)."""
    from bot.readiness.chart import trend_spec
    from bot.readiness.chart_png import render_png

    service = _service(ctx)
    runs = await service.history()
    if not runs:
        # Nothing stored yet: one run now, so the chart has a point.
        await service.run("trend")
        runs = await service.history()
    png = render_png(trend_spec(service.plan, runs))
    await ctx.services.outbox.send_image(
        ctx.room_id,
        png.data,
        filename=TREND_FILENAME,
        body=f"readiness trend over {len(runs)} run(s)",
        info={"w": png.width, "h": png.height},
        reply_to=ctx.event_id,
    )
