"""``!ping``."""

from __future__ import annotations

from bot.render.message import Message
from bot.services import BotDevice, CommandContext
from commands.registry import command


@command()
async def ping(ctx: CommandContext) -> Message:
    """Check that the bot is alive; answers with its version and how long your message took to reach it.

    The footer says whether the bot's device is verified by its owner (Element
    users in encrypted rooms can read the bot only then) and what the bot
    knows of the device your message came from.
    """
    delay_ms = max(0, round((ctx.services.clock() - ctx.sent_at) * 1000))
    return ctx.services.templates.render(
        "ping",
        version=ctx.services.version,
        delay_ms=delay_ms,
        bot_device=bot_device_line(ctx.services.device),
        sender_device=ctx.sender_device.describe(),
    )


def bot_device_line(device: BotDevice) -> str:
    """The footer's words for the bot's own device."""
    if not device.checked:
        return f"this device ({device.device_id or 'unknown'}): cross-signing is off"
    if device.cross_signed:
        return f"this device ({device.device_id}) is verified by its owner"
    return f"this device ({device.device_id}) is NOT verified by its owner: Element users cannot read it"
