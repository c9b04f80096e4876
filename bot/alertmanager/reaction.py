"""🔕 on an alert group's message: silence that group, and say so in its thread."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from bot.alertmanager.matchers import Matcher, MatchType
from bot.alertmanager.silences import SilenceService
from bot.errors import OutcomeUnknown, UserError
from bot.outbox import EventRef, Outbox
from bot.permissions import Authorizer
from bot.render.message import Message
from bot.render.templates import Templates
from bot.store.audit import AuditRepo
from bot.store.handled import HandledEvents
from config.durations import format_duration
from config.settings import PermissionsSettings

log = logging.getLogger(__name__)

SILENCE_KEY = "🔕"
PERMISSION_KEY = "silence"
# Emoji pickers may append the variation selector U+FE0F to the key.
_VARIATION_SELECTOR = "\ufe0f"


class AlertGroupView(Protocol):
    """What the relay's ``AlertGroupRecord`` offers this handler."""

    @property
    def group_labels(self) -> Mapping[str, str]: ...

    @property
    def common_labels(self) -> Mapping[str, str]: ...

    @property
    def thread_root(self) -> str:
        """The group's own message: the root of its thread."""
        ...


class AlertGroupLookup(Protocol):
    async def find_by_message(self, room_id: str, event_id: str) -> AlertGroupView | None: ...


# Where in the room the answer goes: the group's thread root (None: reply to the reaction's target).
ThreadRootOf = Callable[[AlertGroupView], EventRef | None]


def is_silence_key(key: str) -> bool:
    return key.replace(_VARIATION_SELECTOR, "") == SILENCE_KEY


def group_matchers(group: AlertGroupView) -> list[Matcher]:
    """Equality matchers on the group labels: exactly the group Alertmanager formed.

    A route with ``group_by: []`` gives empty group labels; the labels every
    alert of the group shares then stand in. Never an empty list: that
    would silence everything.
    """
    labels = group.group_labels or group.common_labels
    return [Matcher(name, value, MatchType.EQUAL) for name, value in sorted(labels.items()) if value]


class SilenceReactionHandler:
    """A ``ReactionHandler``: 🔕 by someone allowed to silence → a silence for the default duration."""

    def __init__(
        self,
        silences: SilenceService,
        *,
        groups: Callable[[], AlertGroupLookup | None],
        thread_root: ThreadRootOf,
        outbox: Outbox,
        templates: Templates,
        authorizer: Authorizer,
        permissions: PermissionsSettings,
        handled: HandledEvents,
        audit: AuditRepo,
        prefix: str,
    ) -> None:
        self._silences = silences
        self._prefix = prefix
        self._groups = groups
        self._thread_root = thread_root
        self._outbox = outbox
        self._templates = templates
        self._authorizer = authorizer
        self._permissions = permissions
        self._handled = handled
        self._audit = audit

    async def __call__(
        self,
        room_id: str,
        sender: str,
        target_event_id: str,
        key: str,
        event_id: str,
        *,
        sent_at: float | None = None,
    ) -> None:
        if not is_silence_key(key):
            return
        lookup = self._groups()
        if lookup is None:
            return  # the relay is off: no message can be an alert group
        group = await lookup.find_by_message(room_id, target_event_id)
        if group is None:
            return  # 🔕 on some other message
        # A reaction replayed by a sync after a restart must not silence twice.
        if not await self._handled.claim(event_id):
            return
        root = self._thread_root(group) or target_event_id
        decision = await self._authorizer.check(sender, room_id, self._permissions.rule_for(PERMISSION_KEY))
        if not decision.allowed:
            await self._audit.record(
                sender, "silence:reaction", "denied", room_id=room_id, event_id=event_id, args=target_event_id
            )
            await self._say(room_id, root, Message(f"⛔ {sender} may not silence alerts in this room."))
            return
        matchers = group_matchers(group)
        if not matchers:
            await self._say(room_id, root, Message("⚠️ This group has no labels to silence it by."))
            return
        try:
            await self._silence(room_id, sender, root, matchers, event_id)
        except OutcomeUnknown as error:
            # Not "failed": the silence may exist.
            await self._say(room_id, root, Message(f"⚠️ 🔕 by {sender}: {error}"))
        except UserError as error:
            await self._say(room_id, root, Message(f"⚠️ 🔕 by {sender} failed: {error}"))

    async def _silence(
        self, room_id: str, sender: str, root: EventRef, matchers: list[Matcher], event_id: str
    ) -> None:
        existing = await self._silences.duplicate_of(matchers)
        if existing is not None:
            message = self._templates.render(
                "silence_exists", silence=existing, ends=existing.ends_at.strftime("%Y-%m-%d %H:%M UTC")
            )
            await self._say(room_id, root, message)
            return
        duration = self._silences.default_duration
        silence_id, ends = await self._silences.silence(
            sender,
            room_id,
            matchers,
            duration,
            f"🔕 in Matrix by {sender}",
            event_id=event_id,
            via="reaction",
        )
        message = self._templates.render(
            "silence_created",
            silence_id=silence_id,
            user=sender,
            matchers=[str(m) for m in matchers],
            duration=format_duration(duration),
            ends=ends.strftime("%Y-%m-%d %H:%M UTC"),
            prefix=self._prefix,
        )
        await self._say(room_id, root, message)

    async def _say(self, room_id: str, root: EventRef, message: Message) -> None:
        await self._outbox.send_message(room_id, message.content(), thread_root=root)
