"""From a chat line to a reply: parse, check permission, run, answer, audit.

This is the error boundary every command runs inside: a ``UserError`` is
shown as it is, anything else is logged with a short reference and answered
"internal error (ref …)" so no traceback ever reaches the room.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from bot.errors import OutcomeUnknown, PermissionDenied, UsageError, UserError
from bot.matrix.device_trust import UNENCRYPTED, SenderDevice
from bot.render.message import Message
from bot.services import CommandContext, Services
from commands.registry import Command, Reply, UnknownCommand

log = logging.getLogger(__name__)

# Audited arguments are cut: they are for people reading the log, not replay.
_MAX_AUDIT_ARGS = 500


@dataclass(frozen=True)
class IncomingCommand:
    sender: str
    room_id: str
    event_id: str
    body: str
    sent_at: float
    sender_device: SenderDevice = UNENCRYPTED


class Dispatcher:
    def __init__(self, services: Services) -> None:
        self._services = services

    async def handle(self, incoming: IncomingCommand) -> None:
        prefix = self._services.settings.matrix.command_prefix
        try:
            invocation = self._services.registry.parse(incoming.body, prefix)
        except UnknownCommand as unknown:
            await self._answer(
                incoming,
                Message(f"Unknown command `{prefix}{unknown.name}`. Send `{prefix}help` for the list."),
            )
            self._finish(incoming, "unknown", "unknown", args=incoming.body)
            await self._audit(incoming, "command:unknown", "unknown", args=incoming.body)
            return
        except UsageError as error:
            await self._answer(incoming, Message(f"⚠️ {error}"))
            await self._audit(incoming, "command:unparsed", "usage", args=incoming.body)
            return
        if invocation is None:
            return
        cmd = invocation.command
        args_text = " ".join(invocation.words)
        outcome, detail, reply = await self._run(cmd, invocation.words, incoming)
        if reply is not None:
            await self._answer(incoming, reply)
        self._finish(incoming, cmd.name, outcome, args=args_text)
        await self._audit(incoming, f"command:{cmd.name}", outcome, args=args_text, detail=detail)

    async def _run(
        self, cmd: Command, words: list[str], incoming: IncomingCommand
    ) -> tuple[str, str | None, Reply]:
        prefix = self._services.settings.matrix.command_prefix
        try:
            await self._check_permission(cmd, incoming)
            args = cmd.bind(words, prefix)
            ctx = CommandContext(
                sender=incoming.sender,
                room_id=incoming.room_id,
                event_id=incoming.event_id,
                sent_at=incoming.sent_at,
                services=self._services,
                sender_device=incoming.sender_device,
            )
            return "ok", None, await cmd.handler(ctx, *args)
        except PermissionDenied as denied:
            return "denied", None, Message(f"⛔ {denied}")
        except UsageError as error:
            return "usage", str(error), Message(f"⚠️ {error}")
        except OutcomeUnknown as error:
            return "unconfirmed", str(error), Message(f"⚠️ {error}")
        except UserError as error:
            return "refused", str(error), Message(f"⚠️ {error}")
        except Exception:
            ref = secrets.token_hex(2)
            log.exception("command %s failed (ref %s) for event %s", cmd.name, ref, incoming.event_id)
            return "error", f"ref {ref}", Message(f"💥 internal error (ref {ref}), see the bot's logs.")

    async def _check_permission(self, cmd: Command, incoming: IncomingCommand) -> None:
        rule = self._services.settings.permissions.rule_for(cmd.permission)
        decision = await self._services.authorizer.check(incoming.sender, incoming.room_id, rule)
        if not decision.allowed:
            raise PermissionDenied(decision.reason)
        if rule.require_cross_signed_device and not incoming.sender_device.cross_signed:
            raise PermissionDenied(unsigned_device_refusal(incoming.sender_device))

    async def _answer(self, incoming: IncomingCommand, reply: Reply) -> None:
        if reply is None:
            return
        message = reply if isinstance(reply, Message) else Message(reply)
        await self._services.outbox.send_message(
            incoming.room_id, message.content(), reply_to=incoming.event_id
        )

    def _finish(self, incoming: IncomingCommand, name: str, outcome: str, *, args: str) -> None:
        self._services.metrics.commands_handled.labels(command=name, outcome=outcome).inc()
        log.info("command %s from %s in %s: %s", name, incoming.sender, incoming.room_id, outcome)

    async def _audit(
        self, incoming: IncomingCommand, action: str, outcome: str, *, args: str, detail: str | None = None
    ) -> None:
        device = incoming.sender_device
        await self._services.audit.record(
            incoming.sender,
            action,
            outcome,
            room_id=incoming.room_id,
            event_id=incoming.event_id,
            args=args[:_MAX_AUDIT_ARGS],
            detail=detail,
            sender_device=device.device_id,
            cross_signed=device.cross_signed if device.encrypted else None,
        )


def unsigned_device_refusal(device: SenderDevice) -> str:
    """Why a command that needs a cross-signed device was refused, and what the sender can do."""
    if not device.encrypted:
        why = "your message was not encrypted"
    elif device.device_id is None:
        why = "the bot could not tell which device sent it"
    else:
        why = f"your device {device.device_id} is not cross-signed by you"
    return (
        f"this command must come encrypted from a device you have verified (cross-signed); {why}. "
        "Verify this session from another of your devices, or with your recovery key, then send it again."
    )
