"""The outbox's way out: one Matrix event through nio, errors mapped for the retry policy."""

from __future__ import annotations

from typing import Any

from nio import LocalProtocolError, RoomSendResponse

from bot.matrix.connection import NETWORK_ERRORS, MatrixConnection
from bot.outbox import PermanentSendError, RateLimited, TransientSendError

_SERVER_ERROR = 500
_RATE_LIMITED = 429


class NioTransport:
    def __init__(self, connection: MatrixConnection) -> None:
        self._connection = connection

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        if not self._connection.first_sync_done.is_set():
            # Not logged in or not synced yet: encrypted rooms are unknown to
            # nio until the first sync. The outbox retries with back-off.
            raise TransientSendError("not connected to the homeserver yet")
        client = self._connection.client
        try:
            # A person's new device and their command can arrive in the same
            # sync; query keys first so the reply is encrypted for it too.
            if client.olm is not None and client.should_query_keys:
                await client.keys_query()
            response = await client.room_send(
                room_id, event_type, content, tx_id=txn_id, ignore_unverified_devices=True
            )
        except NETWORK_ERRORS as error:
            raise TransientSendError(type(error).__name__) from None
        except LocalProtocolError as error:
            # nio knows no such room (never joined, or left): not for retrying fast.
            raise PermanentSendError(str(error)) from None
        if isinstance(response, RoomSendResponse):
            return str(response.event_id)
        code = getattr(response, "status_code", None)
        status = getattr(getattr(response, "transport_response", None), "status", None) or 0
        if code == "M_LIMIT_EXCEEDED" or status == _RATE_LIMITED:
            retry_ms = getattr(response, "retry_after_ms", None) or 5_000
            raise RateLimited(retry_ms / 1000)
        if status >= _SERVER_ERROR or status == 0:
            raise TransientSendError(f"{code or 'error'} (HTTP {status})")
        raise PermanentSendError(f"{code or 'error'} (HTTP {status})")
