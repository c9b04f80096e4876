"""``!falco mute``, ``!falco unmute``, ``!falco mutes``: keep a noisy Falco rule out of the room a while."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from bot.errors import StoreUnavailableError, UserError
from bot.render.message import Message
from bot.services import CommandContext
from commands.registry import command
from config.durations import DURATION_HINT, format_duration, parse_duration

if TYPE_CHECKING:
    from bot.falco.relay import FalcoRelay

_WHAT = "Falco (falco.enabled)"
_MAX_RULE_CHARS = 1_024


def _relay(ctx: CommandContext) -> FalcoRelay:
    # Imported when the command runs, not when commands are registered: a bot
    # without this feature never loads it (its RSS; see bench/README.md).
    from bot.falco.relay import FalcoRelay

    return ctx.services.extensions.get(FalcoRelay, what=_WHAT)


def _rule(words: list[str]) -> str:
    rule = " ".join(" ".join(words).split())
    if not rule:
        raise UserError("give the rule's name, as Falco writes it (e.g. Terminal shell in container)")
    if len(rule) > _MAX_RULE_CHARS:
        raise UserError(f"a rule name is at most {_MAX_RULE_CHARS} characters")
    return rule


@command("falco mute", permission="falco")
async def falco_mute(ctx: CommandContext, rule: str, duration: str, *more: str) -> Message:
    """Mute a Falco rule for a duration: its events are counted, not posted, and summarised when it ends.

    The rule is named as Falco writes it (case does not matter), quoted or
    not; the last word is the duration (`30m`, `2h`, `1d`, `1h30m`), e.g.
    `!falco mute Terminal shell in container 2h`. Muting a muted rule again
    sets its new end and keeps what it counted so far.
    """
    from bot.falco.render import clock_text

    relay = _relay(ctx)
    words = [rule, duration, *more]
    *rule_words, duration_text = words
    name = _rule(rule_words)
    try:
        length = parse_duration(duration_text)
    except ValueError:
        raise UserError(f"the last word must be {DURATION_HINT}; got {duration_text[:40]!r}") from None
    longest = relay.settings.mute_max_duration
    if length < timedelta(seconds=1) or length > longest:
        raise UserError(f"a mute lasts from 1s to {format_duration(longest)}")
    try:
        mute, previous = await relay.mute(name, length.total_seconds(), ctx.sender, ctx.room_id)
    except StoreUnavailableError:
        raise UserError("the bot's store is busy; try again in a moment") from None
    now = relay.now()
    return ctx.services.templates.render(
        "falco_mute_set",
        rule=mute.rule,
        duration=format_duration(length),
        until=clock_text(mute.ends_at, now),
        previous=None if previous is None else clock_text(previous, now),
        user=ctx.sender,
        prefix=ctx.prefix,
    )


@command("falco unmute", permission="falco")
async def falco_unmute(ctx: CommandContext, rule: str, *more: str) -> Message:
    """Lift a Falco rule's mute now, and show what it kept out of the room.

    The rule is named as in `!falco mutes` (case does not matter), quoted or not.
    """
    relay = _relay(ctx)
    name = _rule([rule, *more])
    try:
        summary = await relay.unmute(name, ctx.sender, ctx.room_id)
    except StoreUnavailableError:
        raise UserError("the bot's store is busy; try again in a moment") from None
    if summary is None:
        raise UserError(f'no mute for the rule "{name[:200]}"; `{ctx.prefix}falco mutes` lists them')
    return summary


@command("falco mutes", permission="falco")
async def falco_mutes(ctx: CommandContext) -> Message:
    """List the muted Falco rules: until when, by whom, and how many events each kept out so far."""
    from bot.falco.render import mute_line

    relay = _relay(ctx)
    now = relay.now()
    return ctx.services.templates.render(
        "falco_mutes", mutes=[mute_line(m, now) for m in await relay.mutes()]
    )
