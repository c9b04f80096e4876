"""Silences and alert queries on behalf of people in the room, audited.

``!silence``, ``!unsilence`` and the 🔕 reaction all end here, so every
silence carries the Matrix user as ``createdBy`` and leaves an audit row, and
the rules (bounds, duplicates, id prefixes) are the same for each way in.
This module does not import aiohttp: commands use it through extensions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.alertmanager.matchers import Matcher, format_matchers
from bot.alertmanager.models import Alert, AlertmanagerNoAnswer, Silence
from bot.errors import OutcomeUnknown, UserError
from bot.store.audit import AuditRepo
from config.durations import format_duration

log = logging.getLogger(__name__)

# Silence ids are UUIDs; a prefix this long is unambiguous in practice and
# comfortable to type.
MIN_ID_PREFIX = 8
_LIVE_STATES = ("active", "pending")


class AlertmanagerClient(Protocol):
    """What this service needs of ``bot.alertmanager.api.AlertmanagerApi``."""

    async def alerts(
        self,
        filters: Sequence[Matcher] = (),
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
    ) -> list[Alert]: ...

    async def silences(self) -> list[Silence]: ...

    async def create_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str: ...

    async def expire_silence(self, silence_id: str) -> None: ...


class SilenceService:
    """The Alertmanager actions people take from chat."""

    def __init__(
        self,
        client: AlertmanagerClient,
        audit: AuditRepo,
        *,
        clock: Callable[[], float],
        is_heartbeat: Callable[[Mapping[str, str]], bool] = lambda _labels: False,
        default_duration: timedelta,
        max_duration: timedelta,
        prefix: str = "!",
    ) -> None:
        self.client = client
        self._prefix = prefix
        self._audit = audit
        self._clock = clock
        self._is_heartbeat = is_heartbeat
        self.default_duration = default_duration
        self.max_duration = max_duration

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def firing(self, filters: Sequence[Matcher] = ()) -> tuple[list[Alert], int]:
        """Active alerts (heartbeats left out), and how many more are silenced or inhibited."""
        alerts = [a for a in await self.client.alerts(filters) if not self._is_heartbeat(a.labels)]
        active = [a for a in alerts if a.state == "active"]
        active.sort(key=lambda a: (a.starts_at, a.labels.get("alertname", "")))
        suppressed = sum(1 for a in alerts if a.state == "suppressed")
        return active, suppressed

    async def live(self) -> list[Silence]:
        """Active and pending silences, the soonest to end first."""
        silences = [s for s in await self.client.silences() if s.state in _LIVE_STATES]
        return sorted(silences, key=lambda s: s.ends_at)

    async def duplicate_of(self, matchers: Sequence[Matcher]) -> Silence | None:
        """A live silence with exactly these matchers (so a second 🔕 does not stack another)."""
        wanted = set(matchers)
        for silence in await self.live():
            if set(silence.matchers) == wanted:
                return silence
        return None

    async def silence(
        self,
        user: str,
        room_id: str,
        matchers: Sequence[Matcher],
        duration: timedelta,
        comment: str,
        *,
        event_id: str | None = None,
        via: str = "command",
    ) -> tuple[str, datetime]:
        """Create a silence as ``user``; return its id and end. Audited either way.

        ``OutcomeUnknown`` when Alertmanager took the request but never
        answered: the user is told to look rather than told it failed.
        """
        if duration > self.max_duration:
            raise UserError("that silence is longer than this bot allows")
        starts = self.now()
        ends = starts + duration
        args = f"{format_matchers(matchers)} for {format_duration(duration)} via {via}"
        try:
            silence_id = await self.client.create_silence(matchers, starts, ends, user, comment)
        except AlertmanagerNoAnswer as error:
            await self._audit.record(
                user,
                "silence:create",
                "unknown",
                room_id=room_id,
                event_id=event_id,
                args=args,
                detail=error.reason,
            )
            log.warning("silence by %s in %s: Alertmanager did not answer (%s)", user, room_id, error.reason)
            raise OutcomeUnknown(
                f"Alertmanager did not answer ({error.reason}), so the silence may have been created"
                f" anyway: check `{self._prefix}silences` before trying again"
            ) from None
        except UserError as error:
            await self._audit.record(
                user,
                "silence:create",
                "failed",
                room_id=room_id,
                event_id=event_id,
                args=args,
                detail=str(error),
            )
            raise
        await self._audit.record(
            user, "silence:create", "ok", room_id=room_id, event_id=event_id, args=args, detail=silence_id
        )
        log.info("silence %s created by %s in %s via %s", silence_id, user, room_id, via)
        return silence_id, ends

    async def unsilence(
        self, user: str, room_id: str, id_or_prefix: str, *, event_id: str | None = None
    ) -> Silence:
        """Expire the live silence with this id (or unique id prefix) as ``user``. Audited."""
        silence = await self._resolve(id_or_prefix)
        try:
            await self.client.expire_silence(silence.id)
        except AlertmanagerNoAnswer as error:
            await self._audit.record(
                user,
                "silence:expire",
                "unknown",
                room_id=room_id,
                event_id=event_id,
                args=silence.id,
                detail=error.reason,
            )
            raise OutcomeUnknown(
                f"Alertmanager did not answer ({error.reason}), so silence {silence.id} may have been"
                f" lifted anyway: check `{self._prefix}silences`"
            ) from None
        except UserError as error:
            await self._audit.record(
                user,
                "silence:expire",
                "failed",
                room_id=room_id,
                event_id=event_id,
                args=silence.id,
                detail=str(error),
            )
            raise
        await self._audit.record(
            user, "silence:expire", "ok", room_id=room_id, event_id=event_id, args=silence.id
        )
        log.info("silence %s expired by %s in %s", silence.id, user, room_id)
        return silence

    async def _resolve(self, id_or_prefix: str) -> Silence:
        wanted = id_or_prefix.strip().lower()
        if len(wanted) < MIN_ID_PREFIX:
            raise UserError(f"give the silence id, or at least its first {MIN_ID_PREFIX} characters")
        matches = [s for s in await self.live() if s.id.lower().startswith(wanted)]
        if not matches:
            raise UserError(f"no active silence with id `{id_or_prefix}`; `!silences` lists them")
        if len(matches) > 1:
            raise UserError(f"`{id_or_prefix}` matches {len(matches)} silences; give more of the id")
        return matches[0]
