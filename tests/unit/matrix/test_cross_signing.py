"""Cross-signing objects, secret storage and the start-up plan: pure logic, no homeserver."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from signedjson.sign import sign_json

from bot.matrix.cross_signing import (
    CrossSigningKeys,
    device_signed_by_owner,
    new_key,
    public_key,
    published_identity,
    sign_device,
)
from bot.matrix.device_trust import SessionFacts, identify
from bot.matrix.identity import CrossSigningIdentity, IdentityConflict, Step, plan
from bot.matrix.secret_storage import (
    SecretStorageError,
    decode_recovery_key,
    decrypt_secret,
    encode_recovery_key,
    encrypt_secret,
    key_matches_description,
)
from config.settings import MatrixSettings

USER = "@bot:example.org"
DEVICE = "BOTDEVICE"


def device_entry(user: str = USER, device: str = DEVICE) -> tuple[dict[str, Any], str]:
    """A device's self-signed keys as /keys/query lists them, and its curve25519 key."""
    own = new_key()
    own.version = device
    curve = base64.b64encode(b"c" * 32).decode().rstrip("=")
    keys = {
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device}": curve, f"ed25519:{device}": public_key(own)},
    }
    return sign_json(keys, user, own), curve


def query_answer(keys: CrossSigningKeys, device: dict[str, Any], user: str = USER) -> dict[str, Any]:
    """A /keys/query answer publishing ``keys`` and the device, signed by the self-signing key."""
    body = keys.upload_body(user)
    signed_device = sign_device(device, user, keys.self_signing)
    merged = copy.deepcopy(device)
    merged["signatures"][user].update(signed_device["signatures"][user])
    return {
        "device_keys": {user: {device["device_id"]: merged}},
        "master_keys": {user: body["master_key"]},
        "self_signing_keys": {user: body["self_signing_key"]},
    }


def test_device_signed_by_the_self_signing_key_counts_as_cross_signed() -> None:
    """A device signed by a self-signing key that the master key signed is cross-signed by its owner."""
    device, _ = device_entry()
    query = query_answer(CrossSigningKeys.generate(), device)

    assert published_identity(query, USER).self_signing_valid
    assert device_signed_by_owner(query, USER, DEVICE)


def test_unsigned_device_is_not_cross_signed() -> None:
    """A device the self-signing key never signed is not cross-signed, even with an identity published."""
    device, _ = device_entry()
    query = query_answer(CrossSigningKeys.generate(), device)
    query["device_keys"][USER][DEVICE] = device_entry()[0]

    assert not device_signed_by_owner(query, USER, DEVICE)


def test_tampered_device_keys_break_the_signature() -> None:
    """Changing a signed device's key after signing (a swapped curve25519 key) voids the cross-signature."""
    device, _ = device_entry()
    query = query_answer(CrossSigningKeys.generate(), device)
    query["device_keys"][USER][DEVICE]["keys"][f"curve25519:{DEVICE}"] = "A" * 43

    assert not device_signed_by_owner(query, USER, DEVICE)


def test_self_signing_key_not_signed_by_the_master_key_is_not_trusted() -> None:
    """A self-signing key signed by some other key than the published master does not cross-sign anything."""
    keys, intruder = CrossSigningKeys.generate(), new_key()
    device, _ = device_entry()
    query = query_answer(keys, device)
    ssk = query["self_signing_keys"][USER]
    ssk["signatures"] = {}
    query["self_signing_keys"][USER] = sign_json(ssk, USER, intruder)

    assert not published_identity(query, USER).self_signing_valid
    assert not device_signed_by_owner(query, USER, DEVICE)


def test_keys_of_another_user_do_not_count() -> None:
    """A self-signing key object naming another user is refused for this one."""
    device, _ = device_entry()
    query = query_answer(CrossSigningKeys.generate(), device)
    query["self_signing_keys"][USER]["user_id"] = "@mallory:example.org"

    assert not device_signed_by_owner(query, USER, DEVICE)


def test_seeds_round_trip_to_the_same_public_keys() -> None:
    """Keys kept as seeds come back as the same keys (what the store and secret storage hold)."""
    keys = CrossSigningKeys.generate()

    assert CrossSigningKeys.from_seeds(keys.seeds()).public_keys() == keys.public_keys()


def test_recovery_key_round_trips_with_spaces() -> None:
    """A recovery key as Element shows it (groups of four) decodes to the key it encodes."""
    key = bytes(range(32))
    text = encode_recovery_key(key)

    assert text.startswith("Es")  # what the 0x8B 0x01 prefix gives in base58
    assert decode_recovery_key(text) == key
    assert decode_recovery_key(text.replace(" ", "")) == key


def test_recovery_key_with_a_typo_is_refused() -> None:
    """One changed character fails the parity check, named as a typo."""
    text = encode_recovery_key(bytes(range(32))).replace(" ", "")
    typo = text[:10] + ("a" if text[10] != "a" else "b") + text[11:]

    with pytest.raises(SecretStorageError, match=r"typo|not a recovery key"):
        decode_recovery_key(typo)


def test_recovery_key_with_a_foreign_character_is_refused() -> None:
    """A character outside base58 (0, O, I, l) is refused with a reason, not a crash."""
    with pytest.raises(SecretStorageError, match="base58"):
        decode_recovery_key("EsT0 0000")


def test_secret_decrypts_with_the_right_key_only() -> None:
    """A secret decrypts under its key and name; another key or name is a MAC mismatch."""
    key, other = bytes(32), bytes([1]) * 32
    encrypted = encrypt_secret(key, "m.cross_signing.master", b"seed").as_json()

    assert decrypt_secret(key, "m.cross_signing.master", encrypted) == b"seed"
    with pytest.raises(SecretStorageError, match="MAC"):
        decrypt_secret(other, "m.cross_signing.master", encrypted)
    with pytest.raises(SecretStorageError, match="MAC"):
        decrypt_secret(key, "m.cross_signing.self_signing", encrypted)


def test_key_description_check_tells_the_right_key() -> None:
    """The iv/mac of a key description accept the key it was made for and refuse another."""
    key = bytes([7]) * 32
    check = encrypt_secret(key, "", bytes(32))
    description = {"algorithm": "m.secret_storage.v1.aes-hmac-sha2", "iv": check.iv, "mac": check.mac}

    assert key_matches_description(key, description)
    assert not key_matches_description(bytes(32), description)


@pytest.mark.parametrize(
    ("published", "stored", "recovery", "reset", "step"),
    [
        (None, None, False, False, Step.CREATE),
        (None, "M1", True, True, Step.CREATE),
        ("M1", "M1", False, False, Step.USE_STORED),
        ("M1", "M1", True, True, Step.USE_STORED),
        ("M1", None, True, False, Step.RECOVER),
        ("M1", "M0", True, True, Step.RECOVER),
        ("M1", None, False, True, Step.RESET),
        ("M1", None, False, False, Step.CONFLICT),
        ("M1", "M0", False, False, Step.CONFLICT),
    ],
)
def test_start_up_plan(
    published: str | None, stored: str | None, recovery: bool, reset: bool, step: Step
) -> None:
    """Published vs held identity decides: create, keep, recover, reset, or refuse; never replace unasked."""
    assert plan(published, stored, recovery_key=recovery, reset=reset) is step


def test_sender_device_found_by_its_keys_and_cross_signing_read() -> None:
    """The device whose curve25519 key shared the session is the sender's; its cross-signing is read."""
    device, curve = device_entry(device="PHONE")
    query = query_answer(CrossSigningKeys.generate(), device)
    ed = device["keys"]["ed25519:PHONE"]

    found = identify(query, USER, SessionFacts(curve, ed, forwarded=False))

    assert (found.encrypted, found.device_id, found.cross_signed) == (True, "PHONE", True)


def test_forwarded_session_proves_no_device() -> None:
    """A room key that reached us forwarded says nothing reliable about who sent the event."""
    device, curve = device_entry(device="PHONE")
    query = query_answer(CrossSigningKeys.generate(), device)

    found = identify(query, USER, SessionFacts(curve, None, forwarded=True))

    assert found.encrypted and found.device_id is None and not found.cross_signed


def test_session_claiming_another_signing_key_proves_no_device() -> None:
    """A session whose ed25519 key is not the device's own is not attributed to that device."""
    device, curve = device_entry(device="PHONE")
    query = query_answer(CrossSigningKeys.generate(), device)

    found = identify(query, USER, SessionFacts(curve, "B" * 43, forwarded=False))

    assert found.device_id is None and not found.cross_signed


def identity_for(**matrix: Any) -> CrossSigningIdentity:
    settings = MatrixSettings.model_validate(
        {"homeserver": "http://127.0.0.1:1", "user_id": USER, "password": "pw"} | matrix
    )
    # _auth_for reads only the settings: no client, no store.
    return CrossSigningIdentity(client=None, settings=settings, kv=None)  # type: ignore[arg-type]


def test_password_challenge_is_answered_with_the_password() -> None:
    """A 401 offering m.login.password is answered with the bot's user and password, in the same session."""
    challenge = {"session": "s1", "flows": [{"stages": ["m.login.password"]}]}

    auth = identity_for()._auth_for(challenge, replacing=False)

    assert auth == {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": USER},
        "password": "pw",
        "session": "s1",
    }


def test_access_token_without_password_says_what_to_do() -> None:
    """Logged in by token, a password challenge ends the start naming matrix.password and the recovery key."""
    identity = identity_for(password=None, access_token="syt_secret_7Hq")
    challenge = {"session": "s1", "flows": [{"stages": ["m.login.password"]}]}

    with pytest.raises(IdentityConflict) as refused:
        identity._auth_for(challenge, replacing=False)

    line = refused.value.problems[0]
    assert "matrix.password" in line and "matrix.recovery_key" in line and "syt_secret_7Hq" not in line


def test_authentication_service_reset_names_the_page_to_approve_it() -> None:
    """A homeserver behind MAS asks its owner to approve the reset: the line gives that page's address."""
    challenge = {
        "session": "s1",
        "flows": [{"stages": ["org.matrix.cross_signing_reset"]}],
        "params": {
            "org.matrix.cross_signing_reset": {"url": "https://auth.example.org/account/?action=reset"}
        },
    }

    with pytest.raises(IdentityConflict, match=r"https://auth\.example\.org/account/\?action=reset"):
        identity_for()._auth_for(challenge, replacing=True)
