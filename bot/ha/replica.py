"""What each replica keeps apart in the shared store: its own Matrix device's credentials and sync token.

Two replicas share one store but are two Matrix devices (each with its own
crypto store volume): a device's access token and its sync position are its
own, while the cross-signing identity and everything else are shared.
"""

from __future__ import annotations

from bot.store.database import Database
from bot.store.kv import KeyValueRepo
from bot.store.tx import Tx


class ReplicaKeyValue(KeyValueRepo):
    """The kv table with every key scoped to one replica (``matrix.sync_token@readybot-1``)."""

    def __init__(self, db: Database, identity: str) -> None:
        super().__init__(db)
        self._suffix = f"@{identity}"

    async def get(self, key: str) -> str | None:
        return await super().get(key + self._suffix)

    async def set(self, key: str, value: str, *, tx: Tx | None = None) -> None:
        await super().set(key + self._suffix, value, tx=tx)

    async def delete(self, key: str, *, tx: Tx | None = None) -> None:
        await super().delete(key + self._suffix, tx=tx)
