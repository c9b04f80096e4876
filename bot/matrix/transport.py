"""The outbox's way out: Matrix events and media uploads through nio, errors mapped for the retry policy."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from nio import LocalProtocolError, RoomSendResponse, UploadResponse

from bot.matrix.connection import NETWORK_ERRORS, MatrixConnection
from bot.outbox import PermanentSendError, RateLimited, SendError, TransientSendError

_SERVER_ERROR = 500
_RATE_LIMITED = 429
# nio uploads without a timeout of its own; an upload slower than this is retried.
_UPLOAD_TIMEOUT_S = 60.0


class NioTransport:
    def __init__(self, connection: MatrixConnection) -> None:
        self._connection = connection
        # The outbox sends several events at once: one key query at a time,
        # or a second caller would ask nio for a query it no longer needs
        # (nio refuses that with LocalProtocolError).
        self._keys_query_lock = asyncio.Lock()

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
                async with self._keys_query_lock:
                    if client.should_query_keys:
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
        raise _error_for(response)

    def room_encrypted(self, room_id: str) -> bool:
        """Whether nio knows the room as encrypted (media then go up encrypted)."""
        if not self._connection.first_sync_done.is_set():
            raise TransientSendError("not connected to the homeserver yet")
        room = self._connection.client.rooms.get(room_id)
        if room is None:
            raise PermanentSendError("the bot is not in this room")
        return bool(room.encrypted)

    async def upload(self, data: bytes, content_type: str, filename: str, *, encrypt: bool) -> dict[str, Any]:
        """Upload to the media repository: ``{"url": mxc}``, or ``{"file": {…}}`` when encrypted."""
        client = self._connection.client
        try:
            async with asyncio.timeout(_UPLOAD_TIMEOUT_S):
                response, keys = await client.upload(
                    io.BytesIO(data), content_type, filename, encrypt=encrypt, filesize=len(data)
                )
        except NETWORK_ERRORS as error:
            raise TransientSendError(f"upload: {type(error).__name__}") from None
        if isinstance(response, UploadResponse):
            if not encrypt:
                return {"url": response.content_uri}
            # nio returns key, iv, hashes and v; the event's EncryptedFile also names the URL.
            return {"file": {**(keys or {}), "url": response.content_uri}}
        raise _error_for(response, "upload: ")


def _error_for(response: Any, what: str = "") -> SendError:
    """A nio error response as the outbox's retry policy sees it (429, 5xx/no answer, other 4xx)."""
    code = getattr(response, "status_code", None)
    status = getattr(getattr(response, "transport_response", None), "status", None) or 0
    if code == "M_LIMIT_EXCEEDED" or status == _RATE_LIMITED:
        retry_ms = getattr(response, "retry_after_ms", None) or 5_000
        return RateLimited(retry_ms / 1000)
    if status >= _SERVER_ERROR or status == 0:
        return TransientSendError(f"{what}{code or 'error'} (HTTP {status})")
    return PermanentSendError(f"{what}{code or 'error'} (HTTP {status})")
