"""Power facts for a room, from nio's synced state plus the immutable create event."""

from __future__ import annotations

import logging

from nio import RoomGetStateResponse

from bot.matrix.connection import MatrixConnection
from bot.permissions import RoomPowerFacts

log = logging.getLogger(__name__)


class RoomPowerLookup:
    def __init__(self, connection: MatrixConnection) -> None:
        self._connection = connection
        # m.room.create never changes, so its creators are read once per room.
        self._creators: dict[str, tuple[str, frozenset[str]]] = {}

    async def power_facts(self, room_id: str) -> RoomPowerFacts:
        room = self._connection.client.rooms.get(room_id)
        if room is None:
            return RoomPowerFacts()
        version, creators = await self._create_facts(room_id)
        levels = room.power_levels
        return RoomPowerFacts(
            room_version=version,
            creators=creators,
            users=dict(levels.users),
            users_default=levels.defaults.users_default,
        )

    async def _create_facts(self, room_id: str) -> tuple[str, frozenset[str]]:
        cached = self._creators.get(room_id)
        if cached is not None:
            return cached
        response = await self._connection.client.room_get_state(room_id)
        if not isinstance(response, RoomGetStateResponse):
            # Unknown creators only ever lower someone's level: fail closed.
            log.warning("could not read the state of %s to find its creators", room_id)
            return "1", frozenset()
        for event in response.events:
            if event.get("type") == "m.room.create" and event.get("state_key") == "":
                content = event.get("content", {})
                extra = content.get("additional_creators", [])
                creators = frozenset([event["sender"], *[c for c in extra if isinstance(c, str)]])
                facts = (str(content.get("room_version", "1")), creators)
                self._creators[room_id] = facts
                return facts
        return "1", frozenset()
