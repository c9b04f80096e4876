"""Secret storage (``m.secret_storage.v1.aes-hmac-sha2``) and recovery keys: pure, no I/O.

When the bot's account already has a cross-signing identity (it was set up
in Element, or the bot's own state was lost), the private keys live
encrypted in the account's data on the homeserver. The operator's recovery
key (what Element shows as "EsT… …") decrypts them, as the spec's "Storage"
section describes:

- recovery key: base58 (Bitcoin alphabet) of ``0x8B 0x01``, the 32-byte
  key, and a parity byte that makes the XOR of all bytes zero;
- per secret: HKDF-SHA-256 (salt 32 zero bytes, info the secret's name) of
  the key gives a 32-byte AES key and a 32-byte HMAC key; the ciphertext is
  AES-256-CTR of the secret, authenticated by HMAC-SHA-256 over it;
- a key description's ``iv``/``mac`` are that scheme applied to 32 zero
  bytes with the empty name: a wrong recovery key is detected before any
  secret is touched.

pycryptodome (already here through ``matrix-nio[e2e]``) provides AES-CTR,
HMAC and HKDF.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

ALGORITHM = "m.secret_storage.v1.aes-hmac-sha2"
DEFAULT_KEY_TYPE = "m.secret_storage.default_key"
KEY_TYPE_PREFIX = "m.secret_storage.key."
_RECOVERY_PREFIX = bytes([0x8B, 0x01])
_KEY_BYTES = 32
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class SecretStorageError(Exception):
    """The recovery key or the stored secrets cannot be used; the message says why, never the key."""


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _BASE58.find(char)
        if digit < 0:
            raise SecretStorageError("the recovery key contains a character that is not base58")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading_zeros = len(text) - len(text.lstrip(_BASE58[0]))
    return bytes(leading_zeros) + body


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58[digit] + out
    return _BASE58[0] * (len(data) - len(data.lstrip(b"\0"))) + out


def decode_recovery_key(text: str) -> bytes:
    """The 32-byte secret-storage key from a recovery key as people copy it (spaces allowed)."""
    raw = _b58decode("".join(text.split()))
    if len(raw) != len(_RECOVERY_PREFIX) + _KEY_BYTES + 1 or not raw.startswith(_RECOVERY_PREFIX):
        raise SecretStorageError("this is not a recovery key (wrong length or prefix)")
    parity = 0
    for byte in raw:
        parity ^= byte
    if parity != 0:
        raise SecretStorageError("the recovery key has a typo (its parity check fails)")
    return raw[len(_RECOVERY_PREFIX) : -1]


def encode_recovery_key(key: bytes) -> str:
    """The recovery key for a 32-byte key, in groups of four as Element shows it (tests make identities)."""
    raw = _RECOVERY_PREFIX + key
    parity = 0
    for byte in raw:
        parity ^= byte
    text = _b58encode(raw + bytes([parity]))
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        raise SecretStorageError("a stored value is not base64 text")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except ValueError:
        raise SecretStorageError("a stored value is not valid base64") from None


def _derive(key: bytes, name: str) -> tuple[bytes, bytes]:
    material = HKDF(key, 64, bytes(32), SHA256, context=name.encode())
    assert isinstance(material, bytes)
    return material[:32], material[32:]


def _ctr(aes_key: bytes, iv: bytes, data: bytes) -> bytes:
    # The whole 16-byte IV is the initial counter block (no separate nonce).
    return bytes(AES.new(aes_key, AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(data))


@dataclass(frozen=True)
class EncryptedSecret:
    iv: str
    ciphertext: str
    mac: str

    def as_json(self) -> dict[str, str]:
        return {"iv": self.iv, "ciphertext": self.ciphertext, "mac": self.mac}


def encrypt_secret(key: bytes, name: str, plaintext: bytes, iv: bytes | None = None) -> EncryptedSecret:
    """Encrypt a secret under a secret-storage key (the bot only decrypts; tests and checks encrypt)."""
    if iv is None:
        fresh = bytearray(secrets.token_bytes(16))
        fresh[8] &= 0x7F  # the spec clears bit 63 so that 64-bit counters never wrap
        iv = bytes(fresh)
    aes_key, mac_key = _derive(key, name)
    ciphertext = _ctr(aes_key, iv, plaintext)
    mac = hmac.new(mac_key, ciphertext, sha256).digest()
    return EncryptedSecret(*(base64.b64encode(part).decode() for part in (iv, ciphertext, mac)))


def decrypt_secret(key: bytes, name: str, encrypted: Mapping[str, Any]) -> bytes:
    """Check the MAC, then decrypt; raises SecretStorageError when the key does not fit."""
    iv, ciphertext, mac = (_unb64(encrypted.get(part)) for part in ("iv", "ciphertext", "mac"))
    aes_key, mac_key = _derive(key, name)
    if not hmac.compare_digest(hmac.new(mac_key, ciphertext, sha256).digest(), mac):
        raise SecretStorageError(f"the recovery key does not decrypt {name} (MAC mismatch)")
    return _ctr(aes_key, iv, ciphertext)


def key_matches_description(key: bytes, description: Mapping[str, Any]) -> bool:
    """True when ``key`` is the key a ``m.secret_storage.key.*`` description was made for."""
    if description.get("algorithm") != ALGORITHM:
        raise SecretStorageError(
            f"unsupported secret storage algorithm {str(description.get('algorithm'))[:64]}"
        )
    if "iv" not in description or "mac" not in description:
        return True  # old descriptions carry no check; decrypting the secrets is the check
    check = encrypt_secret(key, "", bytes(32), iv=_unb64(description["iv"]))
    return hmac.compare_digest(_unb64(check.mac), _unb64(description["mac"]))
