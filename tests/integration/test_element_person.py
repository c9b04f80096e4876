"""The Element person harness itself: matrix-js-sdk's Rust crypto, as Element runs it, against Synapse.

No bot here: these tests prove that an ``ElementPerson`` behaves as Element
does, so that bot tests built on it can trust what it reports (shields,
decryption failures, cross-signing).
"""

from __future__ import annotations

from nio import MegolmEvent, RoomMessageText

from .element import ElementEvent, ElementFactory, ElementPerson, Shield, element_event_is
from .people import PersonFactory, event_id_is

# Base58 as the spec's key representation uses it (Bitcoin's alphabet).
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


async def _cross_signed(element_factory: ElementFactory, prefix: str, mode: str) -> ElementPerson:
    """A logged-in Element person whose device is cross-signed, in isolation ``mode``."""
    person = await element_factory(prefix)
    status = await person.bootstrap_cross_signing()
    assert status["cross_signing_ready"], status
    assert status["device_signed_by_owner"], status
    await person.set_isolation(mode)
    return person


async def _received(person: ElementPerson, event_id: str) -> ElementEvent:
    return await person.wait_for(element_event_is(event_id), what=f"event {event_id}")


def _base58_decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + _BASE58.index(char)
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


async def test_cross_signed_element_people_read_each_other_with_no_shield(
    element_factory: ElementFactory,
) -> None:
    """Between two cross-signed Element people in only_signed mode a message decrypts with no shield."""
    alice = await _cross_signed(element_factory, "alice", "only_signed")
    bob = await _cross_signed(element_factory, "bob", "only_signed")
    room_id = await alice.create_room(invite=[bob.user_id])
    await bob.join(room_id)

    event_id = await alice.send_text(room_id, "hello bob", wait_members=[bob.user_id])

    received = await _received(bob, event_id)
    assert received.encrypted
    assert received.decryption_failure is None
    assert (received.type, received.body, received.sender) == ("m.room.message", "hello bob", alice.user_id)
    assert received.shield == Shield("none", None)
    assert received.sender_device == alice.device_id
    # What bob's Rust crypto holds about alice: her device carries her own
    # cross-signing signature, although bob has not verified alice herself.
    device = await bob.device_info(alice.user_id, alice.device_id)
    assert device["signed_by_owner"] and not device["cross_signing_verified"], device
    identity = await bob.user_cross_signed(alice.user_id)
    assert identity["has_cross_signing_keys"] and not identity["verified"], identity


async def test_element_sends_reactions_in_the_clear_in_an_encrypted_room(
    element_factory: ElementFactory,
) -> None:
    """matrix-js-sdk does not encrypt m.reaction, even in an encrypted room."""
    alice = await _cross_signed(element_factory, "alice", "only_signed")
    bob = await _cross_signed(element_factory, "bob", "only_signed")
    room_id = await alice.create_room(invite=[bob.user_id])
    await bob.join(room_id)
    message_id = await alice.send_text(room_id, "react to me", wait_members=[bob.user_id])
    await _received(bob, message_id)

    reaction_id = await bob.react(room_id, message_id, "✅")

    reaction = await _received(alice, reaction_id)
    assert not reaction.encrypted
    assert reaction.type == "m.reaction"
    relation = {"rel_type": "m.annotation", "event_id": message_id, "key": "✅"}
    assert reaction.content["m.relates_to"] == relation
    assert reaction.shield is None


async def test_only_signed_mode_refuses_a_message_from_a_device_not_cross_signed(
    element_factory: ElementFactory, person_factory: PersonFactory
) -> None:
    """In only_signed mode a message from a nio device nobody cross-signed fails as UNSIGNED_SENDER_DEVICE."""
    alice = await _cross_signed(element_factory, "alice", "only_signed")
    carol = await person_factory("carol")
    room_id = await alice.create_room(invite=[carol.user_id])
    await carol.join(room_id)
    # Alice's crypto knows carol's device before its room key comes: else the
    # verdict would be about an unknown device (UNKNOWN_SENDER_DEVICE), a race.
    assert (await alice.device_info(carol.user_id, carol.device_id))["known"]

    event_id = await carol.send_text(room_id, "from nio", wait_members=[alice.user_id])

    received = await _received(alice, event_id)
    assert received.encrypted
    assert received.decryption_failure == "UNSIGNED_SENDER_DEVICE"
    # Not readable, so not shown as a message and vouched for by no shield.
    assert received.type == "m.room.encrypted"
    assert received.body is None
    assert received.shield is None
    device = await alice.device_info(carol.user_id, carol.device_id)
    assert device["known"] and not device["signed_by_owner"], device
    assert not (await alice.user_cross_signed(carol.user_id))["has_cross_signing_keys"]


async def test_all_mode_decrypts_a_device_not_cross_signed_under_a_red_shield(
    element_factory: ElementFactory, person_factory: PersonFactory
) -> None:
    """In the legacy all-devices mode the same message decrypts, under a red UNSIGNED_DEVICE shield."""
    alice = await _cross_signed(element_factory, "alice", "all")
    carol = await person_factory("carol")
    room_id = await alice.create_room(invite=[carol.user_id])
    await carol.join(room_id)
    # Alice's crypto knows carol's device before its room key comes: else the
    # verdict would be about an unknown device (UNKNOWN_SENDER_DEVICE), a race.
    assert (await alice.device_info(carol.user_id, carol.device_id))["known"]

    event_id = await carol.send_text(room_id, "from nio", wait_members=[alice.user_id])

    received = await _received(alice, event_id)
    assert received.encrypted
    assert received.decryption_failure is None
    assert received.body == "from nio"
    assert received.shield == Shield("red", "UNSIGNED_DEVICE")
    assert received.sender_device == carol.device_id
    assert received.sender_curve25519 == carol.client.olm.account.identity_keys["curve25519"]


async def test_only_signed_mode_withholds_the_room_key_from_a_device_not_cross_signed(
    element_factory: ElementFactory, person_factory: PersonFactory
) -> None:
    """An Element person in only_signed mode shares its room key with cross-signed devices only."""
    alice = await _cross_signed(element_factory, "alice", "only_signed")
    bob = await _cross_signed(element_factory, "bob", "only_signed")
    carol = await person_factory("carol")
    room_id = await alice.create_room(invite=[bob.user_id, carol.user_id])
    await bob.join(room_id)
    await carol.join(room_id)

    members = [bob.user_id, carol.user_id]
    event_id = await alice.send_text(room_id, "signed devices only", wait_members=members)

    assert (await _received(bob, event_id)).body == "signed devices only"
    # The room key (or its withheld notice) went out as to-device messages
    # before the event was sent, so carol's sync holding the event has had
    # them too: what she cannot decrypt now, she never will.
    seen = await carol.wait_for(event_id_is(event_id), room_id=room_id)
    assert isinstance(seen, MegolmEvent)
    assert not any(
        isinstance(event, RoomMessageText) and event.event_id == event_id for _, event in carol.received
    )


async def test_secret_storage_keeps_the_cross_signing_keys_behind_an_element_recovery_key(
    element_factory: ElementFactory,
) -> None:
    """Secret storage answers a spec-encoded "Es…" recovery key and holds all three private keys."""
    alice = await element_factory("alice")

    recovery_key = await alice.bootstrap_secret_storage()

    # As Element shows it: 48 base58 characters in groups of four; decoded,
    # the 0x8B 0x01 prefix, a 32-byte key and a parity byte XORing all to 0.
    # The prefix makes it start "Es", then (by the key's first bits) mostly
    # "T" or "U", rarely "S": not always "EsT", as it is often described.
    groups = recovery_key.split(" ")
    assert recovery_key.startswith("Es") and [len(group) for group in groups] == [4] * 12, recovery_key
    decoded = _base58_decode("".join(groups))
    assert len(decoded) == 35 and decoded[:2] == b"\x8b\x01"
    parity = 0
    for byte in decoded:
        parity ^= byte
    assert parity == 0

    default = await alice.account_data("m.secret_storage.default_key")
    assert default is not None
    key_id = default["key"]
    description = await alice.account_data(f"m.secret_storage.key.{key_id}")
    assert description is not None and description["algorithm"] == "m.secret_storage.v1.aes-hmac-sha2"
    for secret in ("m.cross_signing.master", "m.cross_signing.self_signing", "m.cross_signing.user_signing"):
        stored = await alice.account_data(secret)
        assert stored is not None and set(stored["encrypted"]) == {key_id}, (secret, stored)
    assert (await alice.own_status())["device_signed_by_owner"]
