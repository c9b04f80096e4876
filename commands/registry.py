"""The command registry: a decorator that records a handler and returns it unchanged.

A handler is an async function whose first parameter is the
``CommandContext``; its remaining parameters are the command's arguments,
bound from the words the user typed, and its docstring is the help text.
Too few or too many words answer with the usage line.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from bot.errors import UsageError

if TYPE_CHECKING:
    from bot.render.message import Message

Reply = Union[str, "Message", None]
Handler = Callable[..., Awaitable[Reply]]
H = TypeVar("H", bound=Handler)

# Types an argument may be declared with; each converts one typed word.
_CONVERTERS: dict[type, Callable[[str], Any]] = {str: str, int: int, float: float}


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: type
    optional: bool
    variadic: bool

    def usage(self) -> str:
        if self.variadic:
            return f"[{self.name}…]"
        return f"[{self.name}]" if self.optional else f"<{self.name}>"


@dataclass(frozen=True)
class Command:
    """A registered command: its name words, handler, help and signature."""

    name: str
    handler: Handler
    summary: str
    help_text: str
    parameters: tuple[Parameter, ...]
    permission: str
    aliases: tuple[str, ...] = field(default=())

    def usage(self, prefix: str) -> str:
        words = [f"{prefix}{self.name}", *(p.usage() for p in self.parameters)]
        return " ".join(words)

    def bind(self, words: list[str], prefix: str) -> list[Any]:
        """Convert the typed words to the handler's positional arguments."""
        values: list[Any] = []
        remaining = list(words)
        for param in self.parameters:
            if param.variadic:
                values.extend(self._convert(param, word, prefix) for word in remaining)
                remaining = []
                break
            if not remaining:
                if param.optional:
                    break
                raise UsageError(f"missing <{param.name}>. Usage: `{self.usage(prefix)}`")
            values.append(self._convert(param, remaining.pop(0), prefix))
        if remaining:
            raise UsageError(f"too many arguments. Usage: `{self.usage(prefix)}`")
        return values

    def _convert(self, param: Parameter, word: str, prefix: str) -> Any:
        try:
            return _CONVERTERS[param.kind](word)
        except ValueError:
            raise UsageError(
                f"<{param.name}> must be {param.kind.__name__}. Usage: `{self.usage(prefix)}`"
            ) from None


@dataclass(frozen=True)
class Invocation:
    """A parsed chat line: the command it names and the words after its name."""

    command: Command
    words: list[str]


class UnknownCommand(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class CommandRegistry:
    """Commands by name; names may be two words (``readiness status``)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Command] = {}

    def command(
        self, name: str | None = None, *, aliases: Iterable[str] = (), permission: str | None = None
    ) -> Callable[[H], H]:
        """Register the decorated handler; ``permission`` names its rule (default: first word)."""

        def register(handler: H) -> H:
            command_name = name or handler.__name__.removeprefix("cmd_").replace("_", " ")
            cmd = _build_command(command_name, handler, tuple(aliases), permission)
            for key in (cmd.name, *cmd.aliases):
                if key in self._by_name:
                    raise ValueError(f"command {key!r} is registered twice")
                self._by_name[key] = cmd
            return handler

        return register

    def get(self, name: str) -> Command | None:
        return self._by_name.get(name)

    def all(self) -> list[Command]:
        """Every command once (aliases folded), sorted by name."""
        unique = {cmd.name: cmd for cmd in self._by_name.values()}
        return [unique[key] for key in sorted(unique)]

    def parse(self, text: str, prefix: str) -> Invocation | None:
        """Parse a chat line; None when it is not addressed to the bot at all.

        Raises ``UnknownCommand`` for a prefixed word nobody registered.
        """
        if not text.startswith(prefix) or len(text) == len(prefix) or text[len(prefix)].isspace():
            return None
        words = split_words(text[len(prefix) :])
        if not words:
            return None
        # The longest registered name wins, so `readiness status` beats `readiness`.
        for length in (2, 1):
            if len(words) >= length:
                cmd = self._by_name.get(" ".join(words[:length]).lower())
                if cmd is not None:
                    return Invocation(cmd, words[length:])
        raise UnknownCommand(words[0].lower())


def split_words(text: str) -> list[str]:
    """Shell-like words (quotes group), or plain words when the quotes do not pair up.

    People type apostrophes ("the node's disk is full"); refusing such a line
    for unbalanced quotes would be pedantic, so it is split on white space.
    """
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _build_command(name: str, handler: Handler, aliases: tuple[str, ...], permission: str | None) -> Command:
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"command {name!r}: handler must be an async function")
    doc = inspect.cleandoc(handler.__doc__ or "")
    if not doc:
        raise TypeError(f"command {name!r}: the docstring is the help text and must not be empty")
    return Command(
        name=name,
        handler=handler,
        summary=doc.splitlines()[0],
        help_text=doc,
        parameters=_parameters(handler),
        permission=permission or name.split(maxsplit=1)[0],
        aliases=aliases,
    )


def _parameters(handler: Handler) -> tuple[Parameter, ...]:
    hints = get_type_hints(handler)
    params = list(inspect.signature(handler).parameters.values())[1:]  # the first is the context
    result: list[Parameter] = []
    for param in params:
        kind, optional = _unwrap_optional(hints.get(param.name, str))
        if kind not in _CONVERTERS:
            raise TypeError(f"argument {param.name!r} has unsupported type {kind!r}")
        variadic = param.kind is inspect.Parameter.VAR_POSITIONAL
        has_default = param.default is not inspect.Parameter.empty
        result.append(Parameter(param.name, kind, optional or has_default, variadic))
    return tuple(result)


def _unwrap_optional(hint: Any) -> tuple[type, bool]:
    """``str | None`` → (str, True); ``int`` → (int, False)."""
    args = get_args(hint)
    if get_origin(hint) is not None and type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) == 1:
            return inner[0], True
    return hint, False


# The registry the shipped commands register into; tests build their own.
registry = CommandRegistry()
command = registry.command
