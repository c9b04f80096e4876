"""Services of features, looked up by their type: the one way features and commands find each other.

A feature puts what it offers to commands or to other features here
(``extensions.put(SilenceService, service)``); a command asks with
``extensions.get(SilenceService, what="Silences (alertmanager.api_url)")``,
which answers the user that the feature is not configured when it is off.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from bot.errors import UserError

T = TypeVar("T")


class Extensions:
    """Services of features, looked up by their type: ``extensions.get(SilenceApi)``."""

    def __init__(self) -> None:
        self._items: dict[type[Any], object] = {}

    def put(self, key: type[T], value: T) -> None:
        if key in self._items:
            raise ValueError(f"{key.__name__} is provided twice")
        self._items[key] = value

    def get(self, key: type[T], *, what: str | None = None) -> T:
        """The service, or a UserError saying the feature is not configured."""
        if key not in self._items:
            raise UserError(f"{what or key.__name__} is not configured on this bot.")
        return cast(T, self._items[key])

    def find(self, key: type[T]) -> T | None:
        return cast(T | None, self._items.get(key))
