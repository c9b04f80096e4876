"""The bot's Matrix session: login, device persistence, encryption keys, the sync loop.

The sync loop is ours rather than nio's ``sync_forever`` so that a failing
sync is counted and retried with back-off instead of escaping, the sync token
is persisted after each response (a restart resumes where it stopped and
never replays history), and stopping interrupts the long poll at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    SyncResponse,
    WhoamiResponse,
)

from bot.logging_setup import mask_secret
from bot.metrics import Metrics
from bot.store.kv import KeyValueRepo
from config.settings import MatrixSettings

log = logging.getLogger(__name__)

CREDENTIALS_KEY = "matrix.credentials"

# Everything a request to an unreachable or restarting homeserver can raise:
# aiohttp's ServerDisconnectedError, for one, is not an OSError. A body that is
# not JSON (a proxy's error page) surfaces as ValueError.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, aiohttp.ClientError, ValueError)
SYNC_TOKEN_KEY = "matrix.sync_token"  # noqa: S105 (a kv key name, not a secret)


class LoginRefused(Exception):
    """The homeserver rejected the credentials; retrying will not help."""


class HomeserverUnavailable(Exception):
    """The homeserver could not be reached or answered with a server error."""


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless ``stop`` is set first; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


def sync_filter(user_id: str) -> dict[str, Any]:
    """The filter of every sync: others' timeline events and all room state; nothing the bot does not use.

    Left out:
    - the bot's own timeline events (``not_senders``). A storm's digests
      and edits would otherwise each come back through the bot's sync, to be
      downloaded, schema-checked and decrypted for nothing: the router
      ignores the bot's own events, and what the bot needs of them (event
      ids, for edits and replies) it has from the send responses. They also
      no longer count towards the timeline's ``limit``, so a person's command
      in the middle of a storm is not pushed out of a limited timeline.
    - receipts and typing notices (room ephemeral events) and presence: a
      busy room's read receipts would wake the sync loop for every message
      someone reads.
    Kept: room state (the ``state`` block, not filtered), invites, to-device
    messages and device-list changes (encryption), account data.
    """
    return {
        "room": {
            "timeline": {"not_senders": [user_id]},
            "ephemeral": {"not_types": ["*"]},
        },
        "presence": {"not_types": ["*"]},
    }


def save_only_new_encrypted_rooms(store: Any, known: Iterable[str]) -> None:
    """Make ``store.save_encrypted_rooms`` write only rooms it has not stored yet.

    nio calls it on every sync response that carries a room's encryption
    state, each call a round of SQLite work on the sync loop's thread; the
    rows it would write are already there (it inserts with "on conflict
    ignore"), so skipping known rooms changes nothing stored. ``known`` is
    what the store held when it was loaded (``client.encrypted_rooms``).
    """
    original = store.save_encrypted_rooms
    if getattr(original, "_readybot_only_new", False):
        return
    saved = set(known)

    def save_encrypted_rooms(rooms: Iterable[str]) -> None:
        new = set(rooms) - saved
        if new:
            original(new)
            saved.update(new)

    save_encrypted_rooms._readybot_only_new = True  # type: ignore[attr-defined]
    store.save_encrypted_rooms = save_encrypted_rooms


class MatrixConnection:
    def __init__(self, settings: MatrixSettings, kv: KeyValueRepo, metrics: Metrics) -> None:
        self.settings = settings
        self._kv = kv
        self._metrics = metrics
        settings.store_dir.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=settings.encryption,
            store_sync_tokens=False,  # we persist the token ourselves, next to handled events
            # nio would retry 429s and timeouts forever inside a call; the
            # outbox and the sync loop own retries and back-off instead.
            max_limit_exceeded=0,
            max_timeouts=0,
            request_timeout=settings.request_timeout_s,
        )
        self.client = AsyncClient(
            str(settings.homeserver).rstrip("/"),
            settings.user_id,
            store_path=str(settings.store_dir),
            config=config,
        )
        self.logged_in = asyncio.Event()
        self.first_sync_done = asyncio.Event()
        self._filter = sync_filter(settings.user_id)

    @property
    def user_id(self) -> str:
        return self.settings.user_id

    async def close(self) -> None:
        await self.client.close()

    # -- login -----------------------------------------------------------

    async def login(self) -> None:
        """Log in, reusing a persisted device; raises LoginRefused or HomeserverUnavailable."""
        try:
            if self.settings.access_token is not None:
                await self._login_with_token(self.settings.access_token.get_secret_value())
            else:
                await self._login_with_password()
        except NETWORK_ERRORS as error:
            raise HomeserverUnavailable(type(error).__name__) from None
        if self.client.store is not None:
            save_only_new_encrypted_rooms(self.client.store, self.client.encrypted_rooms)
        if self.settings.encryption and self.client.should_upload_keys:
            await self.client.keys_upload()
        self.logged_in.set()
        log.info("logged in as %s, device %s", self.client.user_id, self.client.device_id)

    async def login_until_done(self, stop: asyncio.Event) -> bool:
        """Retry login while the homeserver is unavailable; False when stopped first."""
        delay = 1.0
        while not stop.is_set():
            try:
                await self.login()
                return True
            except HomeserverUnavailable as error:
                log.warning("homeserver unavailable at login (%s); retrying in %.0f s", error, delay)
                if await wait_or_stop(stop, delay):
                    return False
                delay = min(delay * 2, self.settings.max_retry_backoff_s)
        return False

    async def _login_with_token(self, token: str) -> None:
        self.client.access_token = token
        who = await self.client.whoami()
        if not isinstance(who, WhoamiResponse):
            self._raise_for(who)
        if who.user_id != self.settings.user_id:
            raise LoginRefused("the access token belongs to another user")
        self.client.restore_login(who.user_id, who.device_id, token)

    async def _login_with_password(self) -> None:
        stored = await self._stored_credentials()
        if (
            stored is not None
            and self.settings.encryption
            and not self._crypto_store_exists(stored["device_id"])
        ):
            # The device's keys are gone with its crypto store. Reusing the
            # device id would publish new identity keys under an old device
            # id, which people's clients refuse as a possible attack; a new
            # device (signed again by our identity on start) is the clean way.
            log.warning(
                "the crypto store of device %s is missing; logging in as a new device", stored["device_id"]
            )
            stored = None
        if stored is not None:
            mask_secret(stored["access_token"])
            self.client.restore_login(self.settings.user_id, stored["device_id"], stored["access_token"])
            who = await self.client.whoami()
            if isinstance(who, WhoamiResponse):
                return
            if getattr(who, "status_code", None) not in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                self._raise_for(who)
            log.info("stored access token no longer valid; logging in again with the same device")
        assert self.settings.password is not None  # guaranteed by the settings validator
        response = await self.client.login(
            password=self.settings.password.get_secret_value(), device_name=self.settings.device_name
        )
        if not isinstance(response, LoginResponse):
            self._raise_for(response)
        mask_secret(response.access_token)
        await self._kv.set(
            CREDENTIALS_KEY,
            json.dumps(
                {
                    "homeserver": str(self.settings.homeserver),
                    "user_id": response.user_id,
                    "device_id": response.device_id,
                    "access_token": response.access_token,
                }
            ),
        )

    def _crypto_store_exists(self, device_id: str) -> bool:
        # nio keeps one SQLite file per account and device in the store directory.
        return (self.settings.store_dir / f"{self.settings.user_id}_{device_id}.db").exists()

    async def _stored_credentials(self) -> dict[str, str] | None:
        raw = await self._kv.get(CREDENTIALS_KEY)
        if raw is None:
            return None
        data: dict[str, str] = json.loads(raw)
        same_account = data.get("user_id") == self.settings.user_id and data.get("homeserver") == str(
            self.settings.homeserver
        )
        return data if same_account else None

    def _raise_for(self, response: Any) -> None:
        code = getattr(response, "status_code", None)
        status = getattr(getattr(response, "transport_response", None), "status", None)
        if code in ("M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"):
            raise LoginRefused(str(code))
        raise HomeserverUnavailable(f"{code or 'error'} (HTTP {status})")

    # -- sync ------------------------------------------------------------

    async def has_sync_token(self) -> bool:
        return await self._kv.get(SYNC_TOKEN_KEY) is not None

    async def first_sync(self) -> None:
        """The start-up sync, from the persisted token if there is one, with full state."""
        token = await self._kv.get(SYNC_TOKEN_KEY)
        response = await self.client.sync(timeout=0, full_state=True, since=token, sync_filter=self._filter)
        if not isinstance(response, SyncResponse):
            self._metrics.sync_errors.inc()
            self._raise_for(response)
        await self._after_sync(response)

    async def sync_loop(
        self, stop: asyncio.Event, on_synced: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Long-poll until ``stop``; failures are counted and retried, never raised."""
        delay = 0.5
        while not stop.is_set():
            sync = asyncio.ensure_future(
                self.client.sync(
                    timeout=self.settings.sync_timeout_ms,
                    since=self.client.next_batch,
                    sync_filter=self._filter,
                )
            )
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({sync, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if sync not in done:
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sync
                return
            stopping.cancel()
            try:
                response = sync.result()
            except NETWORK_ERRORS as error:
                response = error
            if not isinstance(response, SyncResponse):
                self._metrics.sync_errors.inc()
                if getattr(response, "status_code", None) == "M_UNKNOWN_TOKEN":
                    # Logged out or token revoked: exit so a restart logs in afresh.
                    raise LoginRefused("the access token was revoked")
                log.warning("sync failed (%s); retrying in %.1f s", _describe(response), delay)
                if await wait_or_stop(stop, delay):
                    return
                delay = min(delay * 2, self.settings.max_retry_backoff_s)
                continue
            delay = 0.5
            await self._after_sync(response)
            if on_synced is not None:
                await on_synced()

    async def _after_sync(self, response: SyncResponse) -> None:
        # Callbacks ran inside sync(); only now is the token safe to persist.
        try:
            await self._kv.set(SYNC_TOKEN_KEY, response.next_batch)
        except sqlite3.OperationalError as error:
            # A locked or full store must not end the sync loop (and with it
            # the bot, and the 503s that tell webhook senders to retry). The
            # next sync that can write persists a newer token; a restart
            # before then resumes from the older one, and commands sent
            # before a start are never run.
            log.warning("sync token not persisted (%s); syncing on", error)
        if not self.settings.encryption:
            return
        try:
            await self.client.send_to_device_messages()
            if self.client.should_upload_keys:
                await self.client.keys_upload()
            if self.client.should_query_keys:
                await self.client.keys_query()
            if self.client.should_claim_keys:
                await self.client.keys_claim(self.client.get_users_for_key_claiming())
        except NETWORK_ERRORS as error:
            log.warning("key maintenance failed (%s); will retry after the next sync", type(error).__name__)


def _describe(response: object) -> str:
    if isinstance(response, BaseException):
        return type(response).__name__
    code = getattr(response, "status_code", None)
    return str(code or type(response).__name__)
