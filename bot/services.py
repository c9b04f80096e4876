"""The typed bundle handed to commands and handlers.

Commands reach the outside world only through what is here, which keeps them
free of nio, aiohttp and kubernetes imports and easy to test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.matrix.device_trust import UNENCRYPTED, SenderDevice

if TYPE_CHECKING:
    from bot.extensions import Extensions
    from bot.metrics import Metrics
    from bot.outbox import Outbox
    from bot.permissions import Authorizer
    from bot.render.templates import Templates
    from bot.store.audit import AuditRepo
    from commands.registry import CommandRegistry
    from config.settings import Settings


@dataclass
class BotDevice:
    """The bot's own Matrix device and whether its owner (the bot's identity) has cross-signed it.

    Filled in at start-up, once the identity is checked; read by ``!ping``.
    """

    device_id: str | None = None
    cross_signed: bool = False
    # False when encryption or cross-signing is switched off in the configuration.
    checked: bool = False


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
    device: BotDevice = field(default_factory=BotDevice)


@dataclass(frozen=True)
class CommandContext:
    """One command invocation: who, where, which event, and the services."""

    sender: str
    room_id: str
    event_id: str
    # The homeserver's timestamp of the command event, in seconds.
    sent_at: float
    services: Services
    # The device the command came from (encrypted events only).
    sender_device: SenderDevice = UNENCRYPTED

    @property
    def prefix(self) -> str:
        return self.services.settings.matrix.command_prefix
