"""Which device sent an encrypted event, and whether its owner cross-signed it.

A Megolm event names its session and the Curve25519 key of the device that
shared the session with us over Olm (authenticated by Olm itself); the
session also carries the Ed25519 key that device claimed. The device is the
one in the sender's published keys with both of those keys and its own valid
signature, and it counts as *cross-signed by its owner* when the owner's
self-signing key signed it (``bot.matrix.cross_signing``). A session that
reached us forwarded by another device proves nothing about the sender.

Unencrypted events (reactions from Element included: matrix-js-sdk never
encrypts them) carry no device at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bot.matrix.cross_signing import device_key, device_signed_by_owner

log = logging.getLogger(__name__)

# How long a user's published keys are trusted before they are asked for again.
QUERY_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class SenderDevice:
    """What the bot knows about the device behind one event."""

    encrypted: bool = False
    device_id: str | None = None
    cross_signed: bool = False

    def describe(self) -> str:
        if not self.encrypted:
            return "not encrypted"
        if self.device_id is None:
            return "encrypted, device unknown"
        signed = "cross-signed" if self.cross_signed else "not cross-signed"
        return f"device {self.device_id}, {signed} by its owner"


UNENCRYPTED = SenderDevice()


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What decryption told us: the sharing device's keys, and whether the key was forwarded."""

    curve25519: str
    ed25519: str | None
    forwarded: bool


class KeysQuery(Protocol):
    async def __call__(self, users: list[str]) -> Mapping[str, Any]: ...


def session_facts(client: Any, room_id: str, event: Any) -> SessionFacts | None:
    """From nio's decrypted event and its inbound session store; None when the event was not encrypted."""
    if not getattr(event, "decrypted", False):
        return None
    sender_key, session_id = getattr(event, "sender_key", None), getattr(event, "session_id", None)
    olm = getattr(client, "olm", None)
    if not sender_key or not session_id or olm is None:
        return SessionFacts(str(sender_key or ""), None, True)
    session = olm.inbound_group_store.get(room_id, sender_key, session_id)
    if session is None:
        return SessionFacts(sender_key, None, True)
    return SessionFacts(
        sender_key, getattr(session, "ed25519", None), bool(getattr(session, "forwarding_chain", None))
    )


def identify(query: Mapping[str, Any], sender: str, session: SessionFacts) -> SenderDevice:
    """The sending device and its cross-signing, from the sender's published keys (pure)."""
    if session.forwarded or not session.curve25519:
        return SenderDevice(encrypted=True)
    devices = query.get("device_keys", {}).get(sender, {})
    for device_id in devices if isinstance(devices, Mapping) else {}:
        if device_key(query, sender, device_id, "curve25519") != session.curve25519:
            continue
        if session.ed25519 is not None and device_key(query, sender, device_id, "ed25519") != session.ed25519:
            return SenderDevice(encrypted=True)  # the session claims another device's signing key
        return SenderDevice(True, device_id, device_signed_by_owner(query, sender, device_id))
    return SenderDevice(encrypted=True)


class DeviceTrust:
    """Resolves ``SenderDevice`` for events, with a short cache of each user's published keys."""

    def __init__(self, query: KeysQuery, clock: Callable[[], float], ttl_s: float = QUERY_TTL_S) -> None:
        self._query = query
        self._clock = clock
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Mapping[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, sender: str, session: SessionFacts | None) -> SenderDevice:
        if session is None:
            return UNENCRYPTED
        try:
            found = identify(await self._keys(sender, fresh=False), sender, session)
            if found.device_id is None and not session.forwarded:
                # A device newer than our cached answer: ask once more.
                found = identify(await self._keys(sender, fresh=True), sender, session)
        except Exception as error:  # an unreachable homeserver proves nothing
            log.warning(
                "could not look up %s's devices (%s); treating the device as unknown",
                sender,
                type(error).__name__,
            )
            return SenderDevice(encrypted=True)
        return found

    async def _keys(self, sender: str, *, fresh: bool) -> Mapping[str, Any]:
        async with self._lock:
            now = self._clock()
            cached = self._cache.get(sender)
            if cached is not None and not fresh and now - cached[0] < self._ttl_s:
                return cached[1]
            answer = await self._query([sender])
            self._cache[sender] = (now, answer)
            return answer
