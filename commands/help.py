"""``!help [command]``."""

from __future__ import annotations

from bot.errors import UserError
from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command


@command()
async def help(ctx: CommandContext, command_name: str | None = None) -> Message:
    """List the commands, or explain one.

    With a command name, shows its usage line and full description.
    """
    registry = ctx.services.registry
    templates = ctx.services.templates
    if command_name is None:
        rows = [{"usage": cmd.usage(ctx.prefix), "summary": cmd.summary} for cmd in registry.all()]
        return templates.render("help_index", commands=rows, prefix=ctx.prefix)
    name = command_name.removeprefix(ctx.prefix).lower()
    cmd = registry.get(name)
    if cmd is None:
        raise UserError(f"no command `{name}`. Send `{ctx.prefix}help` for the list.")
    paragraphs = [p.replace("\n", " ") for p in cmd.help_text.split("\n\n")]
    return templates.render(
        "help_command", usage=cmd.usage(ctx.prefix), help_text=cmd.help_text, paragraphs=paragraphs
    )
