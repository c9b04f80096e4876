"""The outbox's way out: Matrix events and media uploads through nio, errors mapped for the retry policy."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any
from urllib.parse import quote, urlencode

from nio import AsyncClient, LocalProtocolError, RoomSendResponse, UploadResponse
from nio.exceptions import GroupEncryptionError

from bot.matrix.connection import NETWORK_ERRORS, MatrixConnection
from bot.matrix.identity import raw_request
from bot.outbox import PermanentSendError, RateLimited, SendError, TransientSendError
from bot.outbox.events import OUTBOX_KEY, clear_marker

_SERVER_ERROR = 500
_RATE_LIMITED = 429
# nio uploads without a timeout of its own; an upload slower than this is retried.
_UPLOAD_TIMEOUT_S = 60.0
_OK = 200
# Synapse's answer to a second reaction with the same key by the same user on one event.
_DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"
# What the outbox sends, as the look-back after a restart reads it (the bot's own events only).
_OWN_EVENT_TYPES = ["m.room.message", "m.room.encrypted", "m.reaction"]


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
            clear = clear_marker(content)
            room = client.rooms.get(room_id)
            # nio does not encrypt reactions (nor does Element): those go in clear as they are.
            encrypt = client.olm is not None and room is not None and room.encrypted
            if clear is not None and encrypt and event_type != "m.reaction":
                return await self._send_encrypted(client, room_id, event_type, content, txn_id, clear)
            response = await client.room_send(
                room_id, event_type, content, tx_id=txn_id, ignore_unverified_devices=True
            )
        except NETWORK_ERRORS as error:
            raise TransientSendError(type(error).__name__) from None
        except GroupEncryptionError as error:
            # The room key is not shared yet (sharing failed): retried with back-off.
            raise TransientSendError(f"encryption: {error}") from None
        except LocalProtocolError as error:
            # nio knows no such room (never joined, or left): not for retrying fast.
            raise PermanentSendError(str(error)) from None
        if isinstance(response, RoomSendResponse):
            return str(response.event_id)
        if event_type == "m.reaction" and getattr(response, "status_code", None) == _DUPLICATE_ANNOTATION:
            # The homeserver holds this reaction of ours already (sent by a device
            # before this one): that event is the row's, as a deduplicated resend.
            existing = await self._own_annotation(client, room_id, content)
            if existing is not None:
                return existing
        raise _error_for(response)

    async def _own_annotation(self, client: AsyncClient, room_id: str, content: dict[str, Any]) -> str | None:
        """The event id of the bot's own reaction with this content's key on its target, if found."""
        relates = content.get("m.relates_to") or {}
        target, key = relates.get("event_id"), relates.get("key")
        if not isinstance(target, str) or not isinstance(key, str):
            return None
        room_path = f"/_matrix/client/v1/rooms/{quote(room_id, safe='')}"
        path = f"{room_path}/relations/{quote(target, safe='')}/m.annotation/m.reaction?limit=100"
        try:
            status, answer = await raw_request(client, "GET", path, None)
        except NETWORK_ERRORS as error:
            raise TransientSendError(f"relations: {type(error).__name__}") from None
        chunk = answer.get("chunk") if status == _OK else None
        for event in chunk if isinstance(chunk, list) else []:
            if not isinstance(event, dict) or event.get("sender") != self._connection.user_id:
                continue
            event_relates = (event.get("content") or {}).get("m.relates_to") or {}
            if event_relates.get("key") == key and isinstance(event.get("event_id"), str):
                return str(event["event_id"])
        return None

    async def _send_encrypted(
        self,
        client: AsyncClient,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        txn_id: str,
        clear: dict[str, Any],
    ) -> str:
        """Encrypt as nio's ``room_send`` would, and keep the outbox marker's txn id beside the ciphertext.

        A device that replaces this one after a crash may hold no key to this
        message, yet must tell whether it went out (bot.outbox.inflight); the
        txn id is random and says nothing about the content. The steps before
        encrypting are ``room_send``'s: members loaded, room key shared.
        """
        room = client.rooms[room_id]
        if not room.members_synced:
            await client.joined_members(room_id)
            if client.should_query_keys:
                async with self._keys_query_lock:
                    if client.should_query_keys:
                        await client.keys_query()
        assert client.olm is not None  # checked by the caller
        if client.olm.should_share_group_session(room_id):
            sharing = client.sharing_session.get(room_id)
            if sharing is not None:
                await sharing.wait()
            else:
                await client.share_group_session(room_id, ignore_unverified_devices=True)
        encrypted_type, encrypted = client.encrypt(room_id, event_type, content)
        encrypted[OUTBOX_KEY] = clear
        room_path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}"
        path = f"{room_path}/send/{encrypted_type}/{quote(txn_id, safe='')}"
        status, answer = await raw_request(client, "PUT", path, encrypted)
        if status == _OK and isinstance(answer.get("event_id"), str):
            return str(answer["event_id"])
        raise _error_for_status(status, answer)

    async def own_events(
        self, room_id: str, page: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (newest first) of the bot's own events in the room, and the next page's token."""
        if not self._connection.first_sync_done.is_set():
            raise TransientSendError("not connected to the homeserver yet")
        client = self._connection.client
        event_filter = {"senders": [self._connection.user_id], "types": _OWN_EVENT_TYPES}
        query: dict[str, str | int] = {"dir": "b", "limit": limit, "filter": json.dumps(event_filter)}
        if page is not None:
            query["from"] = page
        path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages?{urlencode(query)}"
        try:
            status, answer = await raw_request(client, "GET", path, None)
        except NETWORK_ERRORS as error:
            raise TransientSendError(f"history: {type(error).__name__}") from None
        if status != _OK:
            raise _error_for_status(status, answer, "history: ")
        chunk = answer.get("chunk")
        events = [event for event in chunk if isinstance(event, dict)] if isinstance(chunk, list) else []
        end = answer.get("end")
        return events, end if isinstance(end, str) else None

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


def _error_for_status(status: int, answer: dict[str, Any], what: str = "") -> SendError:
    """A raw client-server API answer as the outbox's retry policy sees it."""
    code = answer.get("errcode")
    if code == "M_LIMIT_EXCEEDED" or status == _RATE_LIMITED:
        retry_ms = answer.get("retry_after_ms")
        return RateLimited((retry_ms if isinstance(retry_ms, int | float) else 5_000) / 1000)
    if status >= _SERVER_ERROR or status == 0:
        return TransientSendError(f"{what}{code or 'error'} (HTTP {status})")
    return PermanentSendError(f"{what}{code or 'error'} (HTTP {status})")
