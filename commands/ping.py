"""``!ping``."""

from __future__ import annotations

from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command


@command()
async def ping(ctx: CommandContext) -> Message:
    """Check that the bot is alive; answers with its version and how long your message took to reach it."""
    delay_ms = max(0, round((ctx.services.clock() - ctx.sent_at) * 1000))
    return ctx.services.templates.render("ping", version=ctx.services.version, delay_ms=delay_ms)
