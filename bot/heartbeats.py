"""The contract between a heartbeat source and the dead-man's switch, owned by neither.

The Alertmanager relay takes Watchdog alerts out of each notification and
hands them to a ``HeartbeatSink``; the dead-man's switch is one and offers
itself as ``Heartbeats`` in the extensions. Both capabilities import this
module, not each other (``.importlinter``: capabilities are independent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from bot.store.tx import Tx


class HeartbeatSink(Protocol):
    """Where heartbeats go: the dead-man's switch (``bot.deadman.switch.DeadmansSwitch``) implements it."""

    def is_heartbeat(self, labels: Mapping[str, str]) -> bool: ...

    def source_of(self, external_url: str, common_labels: Mapping[str, str]) -> str: ...

    async def heartbeat(self, source: str, *, tx: Tx | None = None) -> None: ...


class WatchdogFilter:
    """Without a dead-man's switch: Watchdog alerts are still never posted, and beats go nowhere."""

    def is_heartbeat(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == "Watchdog"

    def source_of(self, external_url: str, common_labels: Mapping[str, str]) -> str:
        return external_url

    async def heartbeat(self, source: str, *, tx: Tx | None = None) -> None:
        return None


@dataclass(frozen=True)
class Heartbeats:
    """The extension under which the dead-man's switch offers itself (a Protocol cannot be a key)."""

    sink: HeartbeatSink
