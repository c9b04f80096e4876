"""The command registry: registration, parsing and argument binding."""

from __future__ import annotations

import pytest

from bot.errors import UsageError
from bot.services import CommandContext
from commands.registry import CommandRegistry, UnknownCommand


@pytest.fixture
def registry() -> CommandRegistry:
    """A fresh registry per test, so registrations never leak between tests."""
    reg = CommandRegistry()

    @reg.command()
    async def ping(ctx: CommandContext) -> str:
        """Answer pong."""
        return "pong"

    @reg.command("readiness status")
    async def readiness_status(ctx: CommandContext, area: str | None = None) -> str:
        """Show the scorecard."""
        return area or "all"

    @reg.command(aliases=("hush",))
    async def silence(ctx: CommandContext, matcher: str, minutes: int, *comment: str) -> str:
        """Silence alerts.

        Longer text here.
        """
        return matcher

    return reg


def test_docstring_first_line_is_the_summary(registry: CommandRegistry) -> None:
    """The first docstring line becomes the summary, the whole docstring the help."""
    cmd = registry.get("silence")
    assert cmd is not None
    assert cmd.summary == "Silence alerts."
    assert "Longer text here." in cmd.help_text


def test_usage_line_is_built_from_the_signature(registry: CommandRegistry) -> None:
    """Required, optional and variadic arguments show as <a>, [b] and [c…]."""
    assert registry.get("silence").usage("!") == "!silence <matcher> <minutes> [comment…]"  # type: ignore[union-attr]
    assert registry.get("readiness status").usage("!") == "!readiness status [area]"  # type: ignore[union-attr]


def test_two_word_command_wins_over_its_first_word(registry: CommandRegistry) -> None:
    """`!readiness status x` resolves to the two-word command with one argument."""
    invocation = registry.parse("!readiness status security", "!")
    assert invocation is not None
    assert invocation.command.name == "readiness status"
    assert invocation.words == ["security"]


def test_text_without_the_prefix_is_not_a_command(registry: CommandRegistry) -> None:
    """Ordinary chat, a lone prefix and `! ping` are not addressed to the bot."""
    assert registry.parse("ping", "!") is None
    assert registry.parse("!", "!") is None
    assert registry.parse("! ping", "!") is None


def test_unknown_command_is_reported_by_name(registry: CommandRegistry) -> None:
    """A prefixed word nobody registered raises UnknownCommand with that word."""
    with pytest.raises(UnknownCommand) as caught:
        registry.parse("!pnig now", "!")
    assert caught.value.name == "pnig"


def test_aliases_resolve_to_the_same_command(registry: CommandRegistry) -> None:
    """An alias parses to the command it stands for, listed once."""
    invocation = registry.parse("!hush alertname=X 5", "!")
    assert invocation is not None and invocation.command.name == "silence"
    assert [c.name for c in registry.all()] == ["ping", "readiness status", "silence"]


def test_quoted_words_stay_together(registry: CommandRegistry) -> None:
    """Quotes group words into one argument, as in a shell."""
    invocation = registry.parse('!silence "alertname=Disk Full" 10 planned work', "!")
    assert invocation is not None
    args = invocation.command.bind(invocation.words, "!")
    assert args == ["alertname=Disk Full", 10, "planned", "work"]


def test_an_apostrophe_in_free_text_splits_on_white_space(registry: CommandRegistry) -> None:
    """Unpaired quotes (an apostrophe in a comment) fall back to plain words instead of failing."""
    invocation = registry.parse("!silence alertname=X 10 the node's disk", "!")
    assert invocation is not None
    assert invocation.command.bind(invocation.words, "!") == ["alertname=X", 10, "the", "node's", "disk"]


def test_missing_argument_answers_with_the_usage_line(registry: CommandRegistry) -> None:
    """Too few words name the missing argument and show the usage."""
    cmd = registry.get("silence")
    assert cmd is not None
    with pytest.raises(UsageError, match=r"missing <minutes>.*!silence <matcher> <minutes>"):
        cmd.bind(["alertname=X"], "!")


def test_extra_arguments_answer_with_the_usage_line(registry: CommandRegistry) -> None:
    """Too many words are refused with the usage line."""
    cmd = registry.get("ping")
    assert cmd is not None
    with pytest.raises(UsageError, match=r"too many arguments.*!ping"):
        cmd.bind(["extra"], "!")


def test_wrongly_typed_argument_names_the_type(registry: CommandRegistry) -> None:
    """A word that does not convert says which type was expected."""
    cmd = registry.get("silence")
    assert cmd is not None
    with pytest.raises(UsageError, match=r"<minutes> must be int"):
        cmd.bind(["alertname=X", "ten"], "!")


def test_optional_argument_may_be_left_out(registry: CommandRegistry) -> None:
    """An optional argument binds to nothing when not typed."""
    cmd = registry.get("readiness status")
    assert cmd is not None
    assert cmd.bind([], "!") == []
    assert cmd.bind(["security"], "!") == ["security"]


def test_registration_rejects_duplicates_and_undocumented_handlers() -> None:
    """A second command of the same name, a handler without docstring, or a sync handler is refused."""
    reg = CommandRegistry()

    @reg.command()
    async def ping(ctx: CommandContext) -> str:
        """Pong."""
        return "pong"

    with pytest.raises(ValueError, match="twice"):

        @reg.command("ping")
        async def other(ctx: CommandContext) -> str:
            """Other."""
            return ""

    with pytest.raises(TypeError, match="docstring"):

        @reg.command()
        async def nodoc(ctx: CommandContext) -> str:
            return ""

    with pytest.raises(TypeError, match="async"):

        @reg.command()
        def sync_handler(ctx: CommandContext) -> str:  # type: ignore[type-var]
            """Sync."""
            return ""


def test_shipped_commands_are_registered() -> None:
    """`!help` and `!ping` are in the shipped registry with their permission keys."""
    from commands import load_all
    from commands.registry import registry

    load_all()
    names = {cmd.name: cmd.permission for cmd in registry.all()}
    assert names["help"] == "help"
    assert names["ping"] == "ping"
