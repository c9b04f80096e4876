"""The typed bundle handed to commands and handlers.

Commands reach the outside world only through what is here, which keeps them
free of nio, aiohttp and kubernetes imports and easy to test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.features import Authorizer, Extensions
    from bot.metrics import Metrics
    from bot.outbox import Outbox
    from bot.render.templates import Templates
    from bot.store.audit import AuditRepo
    from commands.registry import CommandRegistry
    from config.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    registry: CommandRegistry
    outbox: Outbox
    audit: AuditRepo
    templates: Templates
    metrics: Metrics
    clock: Callable[[], float]
    version: str
    authorizer: Authorizer
    # Services of features (Alertmanager client, approvals, …) by type.
    extensions: Extensions


@dataclass(frozen=True)
class CommandContext:
    """One command invocation: who, where, which event, and the services."""

    sender: str
    room_id: str
    event_id: str
    # The homeserver's timestamp of the command event, in seconds.
    sent_at: float
    services: Services

    @property
    def prefix(self) -> str:
        return self.services.settings.matrix.command_prefix
