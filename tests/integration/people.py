"""People in the room: real matrix-nio clients with end-to-end encryption.

A ``Person`` logs in to the test Synapse, keeps syncing in the background and
records every timeline event of every joined room (decrypted where it could
be), so a test can send a command and then wait for the bot's reply without
sleeping.
"""

# The harness takes explicit timeouts (rather than asking callers to wrap
# calls in asyncio.timeout) so a timeout can say what was being waited for.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import quote

from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    JoinError,
    LoginResponse,
    MegolmEvent,
    RoomCreateError,
    RoomMessageNotice,
    RoomMessageText,
    RoomPreset,
    RoomRedactResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncError,
    SyncResponse,
)

from bot.demo.synapse import SynapseServer

MEGOLM = "m.megolm.v1.aes-sha2"
DEFAULT_TIMEOUT_S = 15.0
# A long-poll returns as soon as something happens, so this only bounds how
# long an idle loop takes to notice it was asked to stop.
_SYNC_LONG_POLL_MS = 10_000
# The default timeline limit (10) makes a busy sync "limited": older events are
# skipped and a test waiting for them would time out. Ask for far more.
_SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 500}}}

EventPredicate = Callable[[Event], bool]
Reply: TypeAlias = RoomMessageText | RoomMessageNotice


@dataclass(frozen=True)
class Account:
    """A registered user nobody has logged in as yet (e.g. the bot)."""

    user_id: str
    password: str


def unique_localpart(prefix: str) -> str:
    """A localpart no other test (or earlier run on the same server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def register_account(synapse: SynapseServer, prefix: str = "user", *, admin: bool = False) -> Account:
    """Register a fresh user with a random password (blocking: shared-secret admin API)."""
    password = secrets.token_urlsafe(16)
    user_id = synapse.register_user(unique_localpart(prefix), password, admin=admin)
    return Account(user_id, password)


class PersonFactory(Protocol):
    """What the ``person_factory`` fixture gives a test."""

    def __call__(self, prefix: str = "person", *, account: Account | None = None) -> Awaitable[Person]: ...


def event_id_is(event_id: str) -> EventPredicate:
    """A wait_for predicate matching one event by id."""
    # getattr: BadEvent/UnknownBadEvent (malformed events) may lack fields.
    return lambda event: bool(getattr(event, "event_id", None) == event_id)


class PersonError(RuntimeError):
    """A request the test relied on was refused by the homeserver."""


def _describe(room_id: str, event: Any) -> str:
    body = getattr(event, "body", None)
    kind = type(event).__name__
    sender = getattr(event, "sender", "?")
    return f"{room_id} {kind} from {sender}" + (f": {body!r:.120}" if body is not None else "")


class Person:
    """A person with one encrypted device, driven by a test.

    Create with ``await Person.login(...)``; always ``await close()``.
    """

    def __init__(self, client: AsyncClient, password: str) -> None:
        self.client = client
        self.password = password
        # (room id, event) in the order the homeserver delivered them.
        self._received: list[tuple[str, Event]] = []
        # Encrypted events we could not read yet; retried after every sync,
        # since the room key may arrive (as a to-device message) later.
        self._undecrypted: list[tuple[str, MegolmEvent]] = []
        self._changed = asyncio.Condition()
        # nio's key query/claim/share calls are not safe to run twice at once
        # (share_group_session raises if already in flight for a room): the
        # sync loop and send_text take turns.
        self._crypto_lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_failure: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------

    @classmethod
    async def login(
        cls,
        homeserver: str,
        user_id: str,
        password: str,
        store_dir: Path,
        *,
        device_name: str = "readybot-tests",
    ) -> Person:
        """Log in with a password, upload device keys and start syncing."""
        await asyncio.to_thread(store_dir.mkdir, parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=True,
            # Reconnect quickly when a test restarts Synapse (default: up to 60 s).
            max_timeout_retry_wait_time=0.5,
            # Rate limits are open in tests: a 429 is a bug, fail fast on it
            # rather than let nio retry forever.
            max_limit_exceeded=3,
            request_timeout=30,
        )
        client = AsyncClient(homeserver, user_id, store_path=str(store_dir), config=config)
        person = cls(client, password)
        try:
            response = await client.login(password, device_name=device_name)
            if not isinstance(response, LoginResponse):
                raise PersonError(f"login of {user_id} failed: {response}")
            if client.should_upload_keys:
                await client.keys_upload()
            # One sync before returning, so the person knows its rooms and
            # other people can already see its device keys.
            await person._sync_once(timeout_ms=0)
            await person._maintain_crypto()
            person._sync_task = asyncio.create_task(person._sync_loop(), name=f"sync {user_id}")
        except BaseException:
            await client.close()
            raise
        return person

    async def close(self) -> None:
        """Stop syncing and close the HTTP session (never raises for a failed sync)."""
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()

    @property
    def user_id(self) -> str:
        user_id: str = self.client.user_id
        return user_id

    @property
    def device_id(self) -> str:
        device_id: str = self.client.device_id
        return device_id

    # -- syncing -------------------------------------------------------------

    async def _sync_loop(self) -> None:
        try:
            while True:
                await self._sync_once(timeout_ms=_SYNC_LONG_POLL_MS)
                await self._maintain_crypto()
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            # Wake every waiter: they raise this instead of running into
            # their timeout with a misleading message.
            self._sync_failure = error
            async with self._changed:
                self._changed.notify_all()
            raise

    async def _sync_once(self, *, timeout_ms: int) -> None:
        response = await self.client.sync(timeout=timeout_ms, sync_filter=_SYNC_FILTER)
        if isinstance(response, SyncError):
            # Synapse can answer 5xx (or a non-JSON body) briefly while it
            # starts or stops; retry those. A Matrix error (bad token…) is real.
            status = response.transport_response.status if response.transport_response else 0
            if status >= 500 or response.status_code is None:
                await asyncio.sleep(0.1)
                return
            raise PersonError(f"sync of {self.user_id} failed: {response}")
        assert isinstance(response, SyncResponse)
        async with self._changed:
            # nio has already replaced every MegolmEvent it could decrypt with
            # the decrypted event inside the response.
            for room_id, info in response.rooms.join.items():
                for event in info.timeline.events:
                    self._received.append((room_id, event))
                    if isinstance(event, MegolmEvent):
                        self._undecrypted.append((room_id, event))
            self._retry_decryption()
            self._changed.notify_all()

    def _retry_decryption(self) -> None:
        still: list[tuple[str, MegolmEvent]] = []
        for room_id, event in self._undecrypted:
            try:
                decrypted = self.client.decrypt_event(event)
            except Exception:  # nio raises EncryptionError and friends; retry later
                still.append((room_id, event))
                continue
            # Recorded again, decrypted, at the position it became readable:
            # a waiter scanning forward still finds it.
            self._received.append((room_id, decrypted))
        self._undecrypted = still

    async def _maintain_crypto(self) -> None:
        # What nio's sync_forever does between syncs, minus the callbacks.
        async with self._crypto_lock:
            client = self.client
            if client.outgoing_to_device_messages:
                await client.send_to_device_messages()
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())

    # -- waiting -------------------------------------------------------------

    def mark(self) -> int:
        """A position in the received events; pass as ``since`` to see only later ones."""
        return len(self._received)

    @property
    def received(self) -> list[tuple[str, Event]]:
        """A copy of every (room id, event) received so far, oldest first."""
        return list(self._received)

    async def wait_for(
        self,
        predicate: EventPredicate,
        *,
        room_id: str | None = None,
        since: int = 0,
        timeout: float = DEFAULT_TIMEOUT_S,
        what: str = "a matching event",
    ) -> Event:
        """The first event (at or after position ``since``) that matches ``predicate``.

        ``predicate`` sees every recorded event, including MegolmEvent (could
        not decrypt) and BadEvent: check the type before reading fields.
        """
        index = since
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    while index < len(self._received):
                        event_room, event = self._received[index]
                        index += 1
                        if (room_id is None or event_room == room_id) and predicate(event):
                            return event
                    if self._sync_failure is not None:
                        raise PersonError(f"sync of {self.user_id} died") from self._sync_failure
                    await self._changed.wait()
        except TimeoutError:
            recent = "\n  ".join(_describe(r, e) for r, e in self._received[-8:]) or "(nothing)"
            raise TimeoutError(
                f"{self.user_id} saw no {what} within {timeout} s; last events:\n  {recent}"
            ) from None

    async def wait_for_reply(
        self,
        room_id: str,
        sender: str,
        *,
        after_event_id: str | None = None,
        since_ts: int | None = None,
        since: int = 0,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Reply:
        """The first m.text/m.notice from ``sender`` in ``room_id``.

        ``after_event_id``: only after that event (e.g. the command the test
        sent; our own events come back through sync in timeline order).
        ``since_ts``: only events with an origin_server_ts at or after it (ms).
        """
        seen_anchor = after_event_id is None

        def matches(event: Event) -> bool:
            nonlocal seen_anchor
            if not seen_anchor:
                seen_anchor = getattr(event, "event_id", None) == after_event_id
                return False
            if since_ts is not None and getattr(event, "server_timestamp", 0) < since_ts:
                return False
            return isinstance(event, RoomMessageText | RoomMessageNotice) and event.sender == sender

        event = await self.wait_for(
            matches, room_id=room_id, since=since, timeout=timeout, what=f"reply from {sender}"
        )
        assert isinstance(event, RoomMessageText | RoomMessageNotice)
        return event

    async def wait_joined(self, room_id: str, user_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Until this person's client sees ``user_id`` joined to ``room_id``.

        Send to a new member only after this: the megolm key goes to the
        members the sender knows about when it sends.
        """

        def joined() -> bool:
            room = self.client.rooms.get(room_id)
            return room is not None and user_id in room.users and not room.users[user_id].invited

        await self._wait_state(joined, timeout, f"{user_id} joined to {room_id}")

    async def _wait_state(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout), self._changed:
                while not check():
                    if self._sync_failure is not None:
                        raise PersonError(f"sync of {self.user_id} died") from self._sync_failure
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.user_id} did not see {what} within {timeout} s") from None

    # -- acting --------------------------------------------------------------

    async def create_room(
        self,
        name: str = "readybot test",
        *,
        encrypted: bool = True,
        invite: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> str:
        """A private room (encrypted from its creation unless told otherwise); returns its id."""
        initial_state = (
            [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}]
            if encrypted
            else []
        )
        response = await self.client.room_create(
            visibility=RoomVisibility.private,
            name=name,
            preset=RoomPreset.private_chat,
            invite=list(invite),
            initial_state=initial_state,
        )
        if isinstance(response, RoomCreateError):
            raise PersonError(f"{self.user_id} could not create a room: {response}")
        room_id: str = response.room_id
        # room_send needs the room (and whether it is encrypted) in nio's state.
        await self._wait_state(
            lambda: room_id in self.client.rooms and (not encrypted or self.client.rooms[room_id].encrypted),
            timeout,
            f"its new room {room_id}",
        )
        return room_id

    async def join(self, room_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Join (e.g. after an invite) and wait until the sync shows the room."""
        response = await self.client.join(room_id)
        if isinstance(response, JoinError):
            raise PersonError(f"{self.user_id} could not join {room_id}: {response}")
        await self.wait_joined(room_id, self.user_id, timeout)

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        msgtype: str = "m.text",
        formatted_body: str | None = None,
        wait_members: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> str:
        """Send a message (encrypted in an encrypted room); returns its event id.

        ``wait_members``: users to see joined first, so their devices get the
        room key (pass the bot right after it joined).
        """
        for member in wait_members:
            await self.wait_joined(room_id, member, timeout)
        content: dict[str, Any] = {"msgtype": msgtype, "body": body}
        if formatted_body is not None:
            content |= {"format": "org.matrix.custom.html", "formatted_body": formatted_body}
        async with asyncio.timeout(timeout):
            return await self._send(room_id, "m.room.message", content)

    async def react(
        self,
        room_id: str,
        event_id: str,
        key: str,
        *,
        encrypted: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> str:
        """Annotate ``event_id`` with ``key``; returns the reaction's event id.

        ``encrypted=None`` does what Element does: encrypt in an encrypted
        room. (nio's own room_send never encrypts m.reaction.)
        """
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        room = self.client.rooms.get(room_id)
        if encrypted is None:
            encrypted = room is not None and room.encrypted
        async with asyncio.timeout(timeout):
            if encrypted:
                return await self._send_encrypted_reaction(room_id, content)
            return await self._send(room_id, "m.reaction", content)

    async def _send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        async with self._crypto_lock:
            await self._refresh_member_keys(room_id)
            response = await self.client.room_send(
                room_id, event_type, content, ignore_unverified_devices=True
            )
        if not isinstance(response, RoomSendResponse):
            raise PersonError(f"{self.user_id} could not send to {room_id}: {response}")
        event_id: str = response.event_id
        return event_id

    async def _refresh_member_keys(self, room_id: str) -> None:
        room = self.client.rooms.get(room_id)
        if room is None or not room.encrypted or self.client.olm is None:
            return
        # Ask for every member's devices now rather than trusting the
        # device-list updates of past syncs: a device that logged in a moment
        # ago (a restarted bot, a second session) is then known, nio rotates
        # the room key, and the new device can read what we send next.
        if not room.members_synced:
            await self.client.joined_members(room_id)
        self.client.olm.users_for_key_query.update(room.users)
        await self.client.keys_query()

    async def send_raw(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        *,
        encrypted: bool | None = None,
        relation_in_clear: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> str:
        """Send any event content as it is (a forged edit, a hand-made reaction); returns its event id.

        ``encrypted=None`` encrypts in an encrypted room. ``relation_in_clear=False``
        keeps ``m.relates_to`` inside the ciphertext only, as a hostile client
        may: the homeserver then cannot check the relation (e.g. that its
        target is in the same room), and only the receiving client sees it.
        """
        room = self.client.rooms.get(room_id)
        if encrypted is None:
            encrypted = room is not None and room.encrypted
        async with asyncio.timeout(timeout):
            if encrypted:
                return await self._send_encrypted(
                    room_id, event_type, content, relation_in_clear=relation_in_clear
                )
            # PUT ourselves: room_send would encrypt in an encrypted room.
            return await self._put_event(room_id, event_type, content)

    async def redact(self, room_id: str, event_id: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        """Redact (remove) an event, e.g. withdraw a reaction; returns the redaction's event id."""
        async with asyncio.timeout(timeout):
            response = await self.client.room_redact(room_id, event_id)
        if not isinstance(response, RoomRedactResponse):
            raise PersonError(f"{self.user_id} could not redact {event_id} in {room_id}: {response}")
        redaction_id: str = response.event_id
        return redaction_id

    async def _send_encrypted_reaction(self, room_id: str, content: dict[str, Any]) -> str:
        # room_send would send m.reaction in the clear, and handing it an
        # already-encrypted event would encrypt it twice: share the room key
        # and encrypt as room_send does, then PUT the event ourselves.
        return await self._send_encrypted(room_id, "m.reaction", content)

    async def _send_encrypted(
        self, room_id: str, event_type: str, content: dict[str, Any], *, relation_in_clear: bool = True
    ) -> str:
        client = self.client
        async with self._crypto_lock:
            await self._refresh_member_keys(room_id)
            if client.olm.should_share_group_session(room_id):
                await client.share_group_session(room_id, ignore_unverified_devices=True)
            event_type, encrypted = client.encrypt(room_id, event_type, content)
            if not relation_in_clear:
                encrypted.pop("m.relates_to", None)
            return await self._put_event(room_id, event_type, encrypted)

    async def _put_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        client = self.client
        path = (
            f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/"
            f"{quote(event_type, safe='')}/{uuid.uuid4().hex}"
        )
        response = await client.send(
            "PUT",
            path,
            json.dumps(content),
            headers={
                "Authorization": f"Bearer {client.access_token}",
                "Content-Type": "application/json",
            },
        )
        async with response:
            body = await response.json()
        if response.status != 200 or "event_id" not in body:
            raise PersonError(
                f"{self.user_id} could not send {event_type} to {room_id}: {response.status} {body}"
            )
        event_id: str = body["event_id"]
        return event_id
