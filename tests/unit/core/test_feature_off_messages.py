"""What a command answers when its feature is off: one sentence shape for every feature."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from bot.errors import UserError
from bot.extensions import Extensions
from bot.services import CommandContext, Services
from commands import load_all
from commands.registry import registry

# "<Feature> (<config key>) is not configured on this bot."
SHAPE = re.compile(r"^[A-Z][^()]* \([a-z_]+\.[a-z_.]+\) is not configured on this bot\.$")
# A command of each feature that needs it, with arguments it accepts.
CALLS = [
    ("alerts", ()),
    ("silences", ()),
    ("approvals", ()),
    ("apps", ()),
    ("sync", ("web",)),
    ("backups", ()),
    ("falco mutes", ()),
    ("readiness trend", ()),
    ("watchdog", ()),
]


def _context() -> CommandContext:
    none = cast(Any, None)
    services = Services(
        settings=none,
        registry=registry,
        outbox=none,
        audit=none,
        templates=none,
        metrics=none,
        clock=lambda: 0.0,
        version="test",
        authorizer=none,
        extensions=Extensions(),
    )
    return CommandContext("@alice:localhost", "!room:localhost", "$event", 0.0, services)


@pytest.mark.parametrize(("name", "args"), CALLS)
async def test_a_command_of_a_feature_that_is_off_names_the_feature_and_its_key(
    name: str, args: tuple[str, ...]
) -> None:
    """Each feature that is off answers "<Feature> (<key>) is not configured on this bot."."""
    load_all()
    command = next(command for command in registry.all() if command.name == name)
    with pytest.raises(UserError) as refused:
        await command.handler(_context(), *args)
    assert SHAPE.match(str(refused.value)), str(refused.value)
