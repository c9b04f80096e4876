"""The one error configuration loading raises (``bot.errors`` re-exports it)."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
