"""Images through the outbox: uploaded once (encrypted in encrypted rooms), then sent, despite retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.metrics import Metrics
from bot.outbox import (
    EventTooLargeError,
    Outbox,
    OutboxSender,
    OutboxState,
    TransientSendError,
)
from bot.schema import MIGRATIONS
from bot.store.database import Database
from config.settings import OutboxSettings
from tests.stores import StoreBackend

ROOM = "!charts:example.org"
PNG = b"\x89PNG\r\n\x1a\n" + b"chart" * 100
SETTINGS = OutboxSettings(max_backoff_s=0.05, max_attempts_permanent=2)


class MediaHomeserver:
    """send_event with txn-id deduplication, plus the media repository; failures on request."""

    def __init__(self, *, encrypted: bool = False) -> None:
        self.encrypted = encrypted
        self.uploads: list[tuple[bytes, str, str, bool]] = []
        self.events: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fail_sends = 0
        self.fail_uploads = 0
        self.hang_sends = False

    def room_encrypted(self, room_id: str) -> bool:
        return self.encrypted

    async def upload(self, data: bytes, content_type: str, filename: str, *, encrypt: bool) -> dict[str, Any]:
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise TransientSendError("upload: connection reset")
        self.uploads.append((data, content_type, filename, encrypt))
        url = f"mxc://example.org/media{len(self.uploads)}"
        if encrypt:
            return {
                "file": {"url": url, "key": {"k": "secret"}, "iv": "iv", "hashes": {"sha256": "h"}, "v": "v2"}
            }
        return {"url": url}

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        if self.fail_sends:
            self.fail_sends -= 1
            raise TransientSendError("connection refused")
        if self.hang_sends:
            await asyncio.Future()  # the bot dies before the answer
        self.events.setdefault(txn_id, (event_type, content))
        return f"$event-{txn_id[:6]}"


class EventsOnly:
    """An older transport that can send events but not upload."""

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        return "$never"


@pytest.fixture
async def db(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Database]:
    database = await store_backend.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS)
    yield database
    await database.close()


@asynccontextmanager
async def sending(db: Database, transport: Any) -> AsyncIterator[Outbox]:
    sender = OutboxSender(db, transport, SETTINGS, Metrics(), initial_backoff_s=0.01)
    outbox = Outbox(db, on_enqueued=sender.wake)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield outbox
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_an_image_is_uploaded_then_sent_as_a_reply_with_its_url(db: Database) -> None:
    """In a plain room the PNG is uploaded unencrypted and the m.image reply carries its mxc url and info."""
    homeserver = MediaHomeserver()
    async with sending(db, homeserver) as outbox:
        row = await outbox.send_image(
            ROOM, PNG, filename="trend.png", body="trend", info={"w": 800, "h": 420}, reply_to="$command"
        )
        assert await outbox.wait_sent(row, 3) is not None
    assert homeserver.uploads == [(PNG, "image/png", "trend.png", False)]
    ((event_type, content),) = homeserver.events.values()
    assert event_type == "m.room.message"
    assert content["msgtype"] == "m.image" and content["body"] == "trend"
    assert content["url"] == "mxc://example.org/media1" and "file" not in content
    assert content["info"] == {"w": 800, "h": 420, "mimetype": "image/png", "size": len(PNG)}
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$command"}}


async def test_in_an_encrypted_room_the_image_is_uploaded_encrypted_and_sent_as_a_file(db: Database) -> None:
    """The upload is encrypted; the event holds the EncryptedFile (url, key, iv, hashes, v), no plain url."""
    homeserver = MediaHomeserver(encrypted=True)
    async with sending(db, homeserver) as outbox:
        row = await outbox.send_image(ROOM, PNG, filename="trend.png")
        assert await outbox.wait_sent(row, 3) is not None
    assert homeserver.uploads[0][3] is True
    ((_, content),) = homeserver.events.values()
    assert "url" not in content
    assert content["file"]["url"] == "mxc://example.org/media1" and content["file"]["key"] == {"k": "secret"}


async def test_a_failed_send_is_retried_without_uploading_again(db: Database) -> None:
    """Two refused sends after the upload: one upload, one event; a failed upload is itself retried."""
    homeserver = MediaHomeserver()
    homeserver.fail_uploads = 1
    homeserver.fail_sends = 2
    async with sending(db, homeserver) as outbox:
        row = await outbox.send_image(ROOM, PNG, filename="trend.png")
        assert await outbox.wait_sent(row, 3) is not None
    assert len(homeserver.uploads) == 1
    assert len(homeserver.events) == 1


async def test_after_a_crash_the_resend_reuses_the_upload_and_the_txn_id(db: Database) -> None:
    """The bot dies while sending; the next sender sends the same event (txn id) with the first upload."""
    homeserver = MediaHomeserver()
    homeserver.hang_sends = True
    async with sending(db, homeserver) as outbox:
        row = await outbox.send_image(ROOM, PNG, filename="trend.png")
        for _ in range(100):
            if homeserver.uploads:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    assert await outbox.state(row) is OutboxState.PENDING
    homeserver.hang_sends = False
    async with sending(db, homeserver) as outbox:
        assert await outbox.wait_sent(row, 3) is not None
    assert len(homeserver.uploads) == 1
    ((_, content),) = homeserver.events.values()
    assert content["url"] == "mxc://example.org/media1"


async def test_a_transport_that_cannot_upload_fails_the_row_and_the_room_moves_on(db: Database) -> None:
    """Without upload support the image row fails for good; the next message in the room is sent."""
    async with sending(db, EventsOnly()) as outbox:
        image = await outbox.send_image(ROOM, PNG, filename="trend.png")
        text = await outbox.send_message(ROOM, {"msgtype": "m.notice", "body": "after"})
        assert await outbox.wait_sent(text, 3) == "$never"
        # The text does not wait for the image (several rows in flight): wait for the image to fail.
        for _ in range(300):
            if await outbox.state(image) is OutboxState.FAILED:
                break
            await asyncio.sleep(0.01)
    assert await outbox.state(image) is OutboxState.FAILED


async def test_an_oversized_image_is_refused_at_enqueue(db: Database) -> None:
    """More than 8 MiB is refused before anything is stored."""
    outbox = Outbox(db)
    with pytest.raises(EventTooLargeError, match="image is"):
        await outbox.send_image(ROOM, b"x" * (8 * 1024 * 1024 + 1), filename="huge.png")
    assert (await outbox.stats()).depth == 0


async def test_pruning_a_sent_image_row_removes_its_bytes(db: Database) -> None:
    """The media row goes with its outbox row (ON DELETE CASCADE), so the store does not keep PNGs."""
    homeserver = MediaHomeserver()
    async with sending(db, homeserver) as outbox:
        row = await outbox.send_image(ROOM, PNG, filename="trend.png")
        assert await outbox.wait_sent(row, 3) is not None
    assert await outbox.prune(settled_before=db.clock() + 10) == 1
    leftover = await db.fetchone("SELECT COUNT(*) AS n FROM outbox_media")
    assert leftover is not None and leftover["n"] == 0
