"""What each replica keeps apart in the shared store: its own Matrix device's credentials and sync token.

Two replicas share one store but are two Matrix devices (each with its own
crypto store volume): a device's access token and its sync position are its
own, while the cross-signing identity and everything else are shared.
"""

from __future__ import annotations

from bot.store.database import Database
from bot.store.kv import KeyValueRepo


class ReplicaKeyValue(KeyValueRepo):
    """The kv table with every key scoped to one replica (``matrix.sync_token@readybot-1``)."""

    def __init__(self, db: Database, identity: str) -> None:
        super().__init__(db)
        self._suffix = f"@{identity}"

    def _key(self, key: str) -> str:
        return key + self._suffix
