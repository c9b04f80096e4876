"""What a repository may do with the connection ``Database.transaction()`` yields.

Both backends satisfy these protocols: SQLite hands out its aiosqlite
connection as it always did, PostgreSQL a thin wrapper
(``bot.store.postgres.PgConnection``). Repositories type their ``tx``/``conn``
parameters as ``Tx`` and rows as ``Row`` so they never depend on either.

Deliberately absent: ``lastrowid`` (PostgreSQL has none; an INSERT that needs
its id says ``RETURNING id``, which SQLite understands too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, Protocol

# Positional values for the ``?`` placeholders.
Params = Iterable[Any]


class Row(Protocol):
    """A result row readable by column name and by position (``Row`` is one)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """The result of ``Tx.execute``: its rows, and how many rows a write touched."""

    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Row | None: ...

    async def fetchall(self) -> Iterable[Row]: ...

    async def close(self) -> None: ...


class Tx(Protocol):
    """A connection inside an open ``Database.transaction()``."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Params | None = None, /) -> Awaitable[Cursor]: ...

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> Awaitable[Cursor]: ...

    def execute_fetchall(self, sql: str, parameters: Params | None = None, /) -> Awaitable[Iterable[Row]]: ...
