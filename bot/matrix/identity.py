"""The bot's cross-signing identity: made, recovered or kept, and its device signed on every start.

matrix-nio has no cross-signing (matrix-nio#229), so this speaks the three
endpoints itself: ``/keys/query`` to see what the homeserver publishes,
``/keys/device_signing/upload`` to publish a new identity (behind
user-interactive auth), ``/keys/signatures/upload`` to sign a device.

The decision on start (``plan``) is pure and tested on its own:

- the account has no identity: make one, publish it, sign the device;
- it has one whose private keys the bot holds: sign the device if it is not;
- it has one the bot does not hold: recover the keys from secret storage
  with ``matrix.recovery_key``, or replace the identity when
  ``matrix.cross_signing.reset`` says so; otherwise refuse to start (exit
  78): silently replacing it would make every person's client distrust the
  account's other devices, and an attacker's identity look like ours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from nio import AsyncClient

from bot.errors import ConfigError
from bot.logging_setup import mask_secret
from bot.matrix.cross_signing import (
    MASTER,
    SELF_SIGNING,
    USAGES,
    USER_SIGNING,
    CrossSigningKeys,
    device_signed_by_owner,
    public_key,
    published_identity,
    sign_device,
)
from bot.matrix.secret_storage import (
    DEFAULT_KEY_TYPE,
    KEY_TYPE_PREFIX,
    SecretStorageError,
    decode_recovery_key,
    decrypt_secret,
    key_matches_description,
)
from bot.store.kv import KeyValueRepo
from config.settings import MatrixSettings

log = logging.getLogger(__name__)

KEYS_KV = "matrix.cross_signing_keys"
# Held while one process creates the identity, so that two replicas starting
# together on a fresh store do not both create one (the second would find the
# first's published keys without their private halves and stop with a conflict,
# or overwrite them and leave the first's device signed by a dead key).
CREATING_KV = "matrix.cross_signing_creating"
_CREATION_POLL_S = 1.0
# A claim older than this belongs to a process that died while creating.
_CREATION_STALE_S = 30.0
_SECRET_NAMES = {
    MASTER: "m.cross_signing.master",
    SELF_SIGNING: "m.cross_signing.self_signing",
    USER_SIGNING: "m.cross_signing.user_signing",
}
_PASSWORD_STAGE = "m.login.password"  # noqa: S105 (the UIA stage name)
# Matrix Authentication Service asks the user to approve a reset in the browser (MSC4312).
_MAS_RESET_STAGES = ("org.matrix.cross_signing_reset", "m.oauth")


class IdentityConflict(ConfigError):
    """The account's identity cannot be used or replaced with what the configuration gives (exit 78)."""

    def __init__(self, line: str) -> None:
        super().__init__([line])


class HomeserverRefused(Exception):
    """The homeserver answered a cross-signing request with an error."""


class Step(StrEnum):
    CREATE = "create"  # no identity published: make and publish one
    USE_STORED = "use-stored"  # ours is published: keep it
    RECOVER = "recover"  # one we do not hold: decrypt it from secret storage
    RESET = "reset"  # one we do not hold: replace it, as configured
    CONFLICT = "conflict"  # one we do not hold and no way given: refuse


def plan(published_master: str | None, stored_master: str | None, *, recovery_key: bool, reset: bool) -> Step:
    """What to do on start, from the published and the held master key (public halves)."""
    if published_master is None:
        return Step.CREATE
    if stored_master == published_master:
        return Step.USE_STORED
    if recovery_key:
        return Step.RECOVER
    if reset:
        return Step.RESET
    return Step.CONFLICT


CONFLICT_LINE = (
    "the bot's account {user} already has a cross-signing identity (master key {master}) whose private "
    "keys the bot does not hold: set matrix.recovery_key (READYBOT_MATRIX__RECOVERY_KEY) to the account's "
    "recovery key to use it, or set matrix.cross_signing.reset: true to replace it "
    "(people will see the bot's identity change)"
)


@dataclass(frozen=True)
class IdentityStatus:
    device_id: str
    cross_signed: bool
    step: Step
    master_key: str | None


class CrossSigningIdentity:
    """Runs once per start, after login and the device keys' upload."""

    def __init__(self, client: AsyncClient, settings: MatrixSettings, kv: KeyValueRepo) -> None:
        self._client = client
        self._settings = settings
        self._kv = kv

    @property
    def _user(self) -> str:
        return self._settings.user_id

    async def ensure(self) -> IdentityStatus:
        """Make, recover or keep the identity, and make sure the current device is signed by it."""
        device_id = str(self._client.device_id)
        while True:
            query = await self.query([self._user])
            published = published_identity(query, self._user)
            stored = await self._stored_keys()
            stored_master = None if stored is None else public_key(stored.master)
            step = plan(
                published.master,
                stored_master,
                recovery_key=self._settings.recovery_key is not None,
                reset=self._settings.cross_signing.reset,
            )
            if stored is not None or step not in (Step.CREATE, Step.CONFLICT):
                break
            # No keys in the store: is another replica creating them right now?
            if await self._may_go_on(device_id, creating=step is Step.CREATE):
                break
            await asyncio.sleep(_CREATION_POLL_S)
        if step is Step.CONFLICT:
            raise IdentityConflict(CONFLICT_LINE.format(user=self._user, master=published.master))
        if step is Step.CREATE or step is Step.RESET:
            keys = CrossSigningKeys.generate()
            try:
                await self._publish(keys, replacing=step is Step.RESET)
                await self._keep(keys)
            finally:
                if step is Step.CREATE:
                    await self._kv.delete(CREATING_KV)
            log.warning(
                "cross-signing identity %s for %s (master key %s)",
                "replaced" if step is Step.RESET else "created",
                self._user,
                public_key(keys.master),
            )
        elif step is Step.RECOVER:
            keys = await self._recover(published.master, published.self_signing)
            await self._keep(keys)
            log.info("cross-signing keys of %s recovered from secret storage", self._user)
        else:
            assert stored is not None
            keys = stored
        if step is not Step.USE_STORED:
            query = await self.query([self._user])
        if not device_signed_by_owner(query, self._user, device_id):
            await self._sign_device(query, device_id, keys)
            query = await self.query([self._user])
        signed = device_signed_by_owner(query, self._user, device_id)
        return IdentityStatus(device_id, signed, step, public_key(keys.master))

    async def _may_go_on(self, device_id: str, *, creating: bool) -> bool:
        """False while another process sharing the store creates the identity (then wait and look again).

        ``creating``: we are about to create it, so take the claim ourselves;
        otherwise (published keys we do not hold) go on to the conflict only
        when nobody is creating.
        """
        claim = json.dumps({"device": device_id, "at": time.time()})
        held = await self._kv.get(CREATING_KV)
        if held is None:
            return not creating or await self._kv.claim(CREATING_KV, claim)
        try:
            holder = json.loads(held)
            stale = holder.get("device") == device_id or time.time() - float(holder["at"]) > _CREATION_STALE_S
        except (ValueError, KeyError, TypeError):
            stale = True
        if not stale:
            log.info("another replica is creating the cross-signing identity; waiting for its keys")
            return False
        return not creating or await self._kv.claim(CREATING_KV, claim, stale_if=held)

    # -- the keys we hold ------------------------------------------------

    async def _stored_keys(self) -> CrossSigningKeys | None:
        raw = await self._kv.get(KEYS_KV)
        if raw is None:
            return None
        data = json.loads(raw)
        if data.get("user_id") != self._user:
            return None  # the store was made for another account
        seeds: dict[str, str] = data["seeds"]
        for seed in seeds.values():
            mask_secret(seed)
        return CrossSigningKeys.from_seeds(seeds)

    async def _keep(self, keys: CrossSigningKeys) -> None:
        seeds = keys.seeds()
        for seed in seeds.values():
            mask_secret(seed)
        # The store file is created 0600 (bot.store.database): only the bot reads it.
        await self._kv.set(KEYS_KV, json.dumps({"user_id": self._user, "seeds": seeds}))

    # -- publish, recover, sign -------------------------------------------

    async def _publish(self, keys: CrossSigningKeys, *, replacing: bool) -> None:
        body = keys.upload_body(self._user)
        status, answer = await self.request("POST", "/_matrix/client/v3/keys/device_signing/upload", body)
        if status == 401 and isinstance(answer.get("flows"), list):
            body["auth"] = self._auth_for(answer, replacing=replacing)
            status, answer = await self.request("POST", "/_matrix/client/v3/keys/device_signing/upload", body)
        if status != 200:
            raise HomeserverRefused(
                f"publishing cross-signing keys failed: HTTP {status} {answer.get('errcode', '')}"
            )

    def _auth_for(self, challenge: Mapping[str, Any], *, replacing: bool) -> dict[str, Any]:
        """Answer the user-interactive auth the homeserver asks for, or say what the operator must do."""
        flows = [flow.get("stages", []) for flow in challenge.get("flows", []) if isinstance(flow, Mapping)]
        session = challenge.get("session")
        if [_PASSWORD_STAGE] in flows and self._settings.password is not None:
            return {
                "type": _PASSWORD_STAGE,
                "identifier": {"type": "m.id.user", "user": self._user},
                "password": self._settings.password.get_secret_value(),
                "session": session,
            }
        what = "replace" if replacing else "publish"
        for stages in flows:
            if stages and stages[0] in _MAS_RESET_STAGES:
                params = challenge.get("params", {}).get(stages[0], {})
                url = params.get("url") if isinstance(params, Mapping) else None
                raise IdentityConflict(
                    f"the homeserver asks the account's owner to approve before the bot can {what} its "
                    f"cross-signing keys: log in as {self._user} at {url or 'the account management page'}, "
                    "allow the reset of the cross-signing identity, and restart the bot within 10 minutes"
                )
        if self._settings.password is None:
            raise IdentityConflict(
                f"the homeserver asks for the account's password before the bot can {what} its "
                "cross-signing keys, and the bot logs in with an access token: start it once with "
                "matrix.password (READYBOT_MATRIX__PASSWORD) instead of matrix.access_token, or set up "
                "the identity in Element and give the bot matrix.recovery_key"
            )
        raise IdentityConflict(
            f"the homeserver offers no way the bot can answer to {what} its cross-signing keys "
            f"(stages offered: {', '.join('/'.join(map(str, s)) for s in flows)[:200]})"
        )

    async def _recover(self, master: str | None, self_signing: str | None) -> CrossSigningKeys:
        recovery = self._settings.recovery_key
        assert recovery is not None
        try:
            key = decode_recovery_key(recovery.get_secret_value())
            default = await self.account_data(DEFAULT_KEY_TYPE)
            key_id = default.get("key") if default else None
            if not isinstance(key_id, str):
                raise SecretStorageError(
                    "the account has no default secret storage key (set up recovery in Element)"
                )
            description = await self.account_data(KEY_TYPE_PREFIX + key_id)
            if description is None:
                raise SecretStorageError(f"the account's secret storage key {key_id} has no description")
            if not key_matches_description(key, description):
                raise SecretStorageError("matrix.recovery_key is not this account's recovery key")
            seeds: dict[str, str] = {}
            for usage in USAGES:
                stored = await self.account_data(_SECRET_NAMES[usage])
                encrypted = (stored or {}).get("encrypted", {}).get(key_id)
                if not isinstance(encrypted, Mapping):
                    raise SecretStorageError(f"secret storage holds no {_SECRET_NAMES[usage]} for this key")
                seeds[usage] = decrypt_secret(key, _SECRET_NAMES[usage], encrypted).decode("ascii").strip()
                mask_secret(seeds[usage])
            keys = CrossSigningKeys.from_seeds(seeds)
        except (SecretStorageError, UnicodeDecodeError, ValueError) as error:
            raise IdentityConflict(f"matrix.recovery_key cannot be used: {error}") from None
        if public_key(keys.master) != master or (
            self_signing is not None and public_key(keys.self_signing) != self_signing
        ):
            raise IdentityConflict(
                "matrix.recovery_key decrypts cross-signing keys that are not the ones the account "
                "publishes (secret storage is out of date): reset the identity in Element, or set "
                "matrix.cross_signing.reset: true"
            )
        return keys

    async def _sign_device(self, query: Mapping[str, Any], device_id: str, keys: CrossSigningKeys) -> None:
        devices = query.get("device_keys", {}).get(self._user, {})
        device = devices.get(device_id) if isinstance(devices, Mapping) else None
        if not isinstance(device, Mapping):
            raise HomeserverRefused(f"the homeserver does not list the keys of this device {device_id}")
        signed = sign_device(device, self._user, keys.self_signing)
        status, answer = await self.request(
            "POST", "/_matrix/client/v3/keys/signatures/upload", {self._user: {device_id: signed}}
        )
        failures = answer.get("failures") or {}
        if status != 200 or failures:
            raise HomeserverRefused(
                f"signing device {device_id} failed: HTTP {status} {json.dumps(failures)[:300]}"
            )
        log.info("signed device %s with the self-signing key of %s", device_id, self._user)

    # -- HTTP ---------------------------------------------------------------

    async def query(self, users: list[str]) -> dict[str, Any]:
        status, answer = await self.request(
            "POST", "/_matrix/client/v3/keys/query", {"device_keys": {u: [] for u in users}}
        )
        if status != 200:
            raise HomeserverRefused(f"keys/query failed: HTTP {status}")
        return answer

    async def account_data(self, event_type: str) -> dict[str, Any] | None:
        path = (
            f"/_matrix/client/v3/user/{quote(self._user, safe='')}/account_data/{quote(event_type, safe='')}"
        )
        status, answer = await self.request("GET", path, None)
        if status == 404:
            return None
        if status != 200:
            raise HomeserverRefused(f"reading account data failed: HTTP {status}")
        return answer

    async def request(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        return await raw_request(self._client, method, path, body)


async def raw_request(
    client: AsyncClient, method: str, path: str, body: Mapping[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    """One authenticated client-server API call; the token goes in a header, never in the URL (logs)."""
    headers = {"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"}
    response = await client.send(method, path, None if body is None else json.dumps(body), headers)
    async with response:
        try:
            answer = await response.json(content_type=None)
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}
