"""Cross-signing keys, signatures and checks: pure functions over Matrix JSON, no I/O.

Since MSC4153 ("exclude insecure devices", spec v1.18) Element shares room
keys only with devices their owner has cross-signed, and does not decrypt
events from other devices. A device is cross-signed by its owner when the
owner's self-signing key has signed the device's keys, and the owner's master
key has signed that self-signing key; this module builds those objects for
the bot's own identity and checks them for anyone's device.

Signing is Ed25519 over Matrix canonical JSON: ``signedjson`` does exactly
that (it is what Synapse itself signs and verifies with), so the byte-level
canonicalisation that every signature depends on is not ours to get wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signedjson.key import (
    decode_signing_key_base64,
    decode_verify_key_base64,
    encode_signing_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from signedjson.types import SigningKey

ED25519 = "ed25519"
MASTER, SELF_SIGNING, USER_SIGNING = "master", "self_signing", "user_signing"
USAGES = (MASTER, SELF_SIGNING, USER_SIGNING)

JsonDict = dict[str, Any]


def public_key(key: SigningKey) -> str:
    """The unpadded base64 public key, which is also the key's id after ``ed25519:``."""
    return str(encode_verify_key_base64(get_verify_key(key)))


def key_from_seed(seed_b64: str) -> SigningKey:
    """A signing key from its 32-byte seed in unpadded base64, as secret storage keeps it."""
    # The key's "version" is its public key: cross-signing key ids are ed25519:<public key>.
    key = decode_signing_key_base64(ED25519, "_", seed_b64)
    key.version = public_key(key)
    return key


def new_key() -> SigningKey:
    return key_from_seed(seed_of(generate_signing_key("_")))


def seed_of(key: SigningKey) -> str:
    return str(encode_signing_key_base64(key))


@dataclass(frozen=True)
class CrossSigningKeys:
    """The three private keys of a user's cross-signing identity."""

    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(new_key(), new_key(), new_key())

    @classmethod
    def from_seeds(cls, seeds: Mapping[str, str]) -> CrossSigningKeys:
        return cls(
            key_from_seed(seeds[MASTER]),
            key_from_seed(seeds[SELF_SIGNING]),
            key_from_seed(seeds[USER_SIGNING]),
        )

    def seeds(self) -> dict[str, str]:
        return {
            MASTER: seed_of(self.master),
            SELF_SIGNING: seed_of(self.self_signing),
            USER_SIGNING: seed_of(self.user_signing),
        }

    def public_keys(self) -> dict[str, str]:
        return {
            MASTER: public_key(self.master),
            SELF_SIGNING: public_key(self.self_signing),
            USER_SIGNING: public_key(self.user_signing),
        }

    def upload_body(self, user_id: str) -> JsonDict:
        """The body of ``POST /keys/device_signing/upload``: master, and the two keys it signs."""
        master = _key_object(user_id, MASTER, self.master)
        self_signing = sign_json(_key_object(user_id, SELF_SIGNING, self.self_signing), user_id, self.master)
        user_signing = sign_json(_key_object(user_id, USER_SIGNING, self.user_signing), user_id, self.master)
        return {"master_key": master, "self_signing_key": self_signing, "user_signing_key": user_signing}


def _key_object(user_id: str, usage: str, key: SigningKey) -> JsonDict:
    pub = public_key(key)
    return {"user_id": user_id, "usage": [usage], "keys": {f"{ED25519}:{pub}": pub}}


def sign_device(device_keys: Mapping[str, Any], user_id: str, self_signing: SigningKey) -> JsonDict:
    """The device's keys as published, signed with the self-signing key, for ``/keys/signatures/upload``.

    Only our signature is sent: the server merges it with the ones it holds,
    and checks it over the same canonical JSON (without ``signatures`` and
    ``unsigned``) that it stored.
    """
    body = {k: copy.deepcopy(v) for k, v in device_keys.items() if k not in ("signatures", "unsigned")}
    return sign_json(body, user_id, self_signing)


def _single_key(obj: Mapping[str, Any]) -> str | None:
    """The one ed25519 public key of a cross-signing key object, or None if it has not exactly one."""
    keys = obj.get("keys")
    if not isinstance(keys, Mapping):
        return None
    found = [
        v
        for k, v in keys.items()
        if isinstance(k, str) and k.startswith(f"{ED25519}:") and isinstance(v, str)
    ]
    return found[0] if len(found) == 1 and f"{ED25519}:{found[0]}" in keys else None


def _signed_by(obj: Mapping[str, Any], user_id: str, public: str, key_name: str | None = None) -> bool:
    """Whether ``obj`` carries ``user_id``'s valid signature by key ``ed25519:<key_name or public>``."""
    try:
        verify_key = decode_verify_key_base64(ED25519, key_name or public, public)
        verify_signed_json(dict(obj), user_id, verify_key)
    except (SignatureVerifyException, ValueError, TypeError):
        return False
    return True


def valid_key_object(obj: object, user_id: str, usage: str) -> str | None:
    """The public key of a well-formed cross-signing key object of that user and usage, else None."""
    if not isinstance(obj, Mapping) or obj.get("user_id") != user_id:
        return None
    usages = obj.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        return None
    return _single_key(obj)


@dataclass(frozen=True)
class PublishedIdentity:
    """What a ``/keys/query`` answer says about one user's cross-signing keys."""

    master: str | None
    self_signing: str | None
    # The self-signing key carries a valid signature of the master key.
    self_signing_valid: bool


def published_identity(query: Mapping[str, Any], user_id: str) -> PublishedIdentity:
    master_obj = _section(query, "master_keys").get(user_id)
    ssk_obj = _section(query, "self_signing_keys").get(user_id)
    master = valid_key_object(master_obj, user_id, MASTER)
    ssk = valid_key_object(ssk_obj, user_id, SELF_SIGNING)
    valid = (
        master is not None
        and ssk is not None
        and isinstance(ssk_obj, Mapping)
        and _signed_by(ssk_obj, user_id, master)
    )
    return PublishedIdentity(master, ssk, valid)


def _section(query: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = query.get(name)
    return section if isinstance(section, Mapping) else {}


def device_keys_of(query: Mapping[str, Any], user_id: str, device_id: str) -> Mapping[str, Any] | None:
    """A device's keys from a ``/keys/query`` answer, if the device signed them itself."""
    devices = _section(query, "device_keys").get(user_id)
    device = devices.get(device_id) if isinstance(devices, Mapping) else None
    if (
        not isinstance(device, Mapping)
        or device.get("user_id") != user_id
        or device.get("device_id") != device_id
    ):
        return None
    keys = device.get("keys")
    own = keys.get(f"{ED25519}:{device_id}") if isinstance(keys, Mapping) else None
    # A device signs its keys itself, with key id ed25519:<device id>.
    if not isinstance(own, str) or not _signed_by(device, user_id, own, key_name=device_id):
        return None
    return device


def device_signed_by_owner(query: Mapping[str, Any], user_id: str, device_id: str) -> bool:
    """True when the device is cross-signed by its owner, as Element's 2026 mode requires.

    The device's keys carry its own signature and one by the owner's
    self-signing key, which carries the owner's master key's signature.
    """
    identity = published_identity(query, user_id)
    if not identity.self_signing_valid or identity.self_signing is None:
        return False
    device = device_keys_of(query, user_id, device_id)
    return device is not None and _signed_by(device, user_id, identity.self_signing)


def device_key(query: Mapping[str, Any], user_id: str, device_id: str, algorithm: str) -> str | None:
    """One of a device's identity keys (``curve25519``/``ed25519``), from a self-signed device entry."""
    device = device_keys_of(query, user_id, device_id)
    if device is None:
        return None
    value = device["keys"].get(f"{algorithm}:{device_id}")
    return value if isinstance(value, str) else None
