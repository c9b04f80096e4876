"""Building Matrix events from outbox rows, and the checks made before a row is queued.

Pure: the same row always builds the same event, so a resend after a restart
is byte-for-byte the event the homeserver may already hold.
"""

from __future__ import annotations

import json
from typing import Any

from bot.outbox.errors import EventTooLargeError
from bot.outbox.repo import OutboxId, OutboxKind

# An event id ("$…") or the OutboxId of an earlier row in the same room.
EventRef = str | OutboxId

# A Matrix event (content plus envelope, signatures, hashes) must stay under
# 65,536 bytes; keep the content comfortably below. Encryption inflates the
# content by about 4/3 (base64), so renderers should aim far lower.
MAX_CONTENT_BYTES = 60_000
# The longest event id the spec allows, used to size content before the real
# ids of referenced rows are known.
_PLACEHOLDER_EVENT_ID = "$" + "x" * 254


def build_event(
    kind: OutboxKind, payload: dict[str, Any], target: str | None = None, root: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The event type and content for a row, once its references are event ids.

    Pure: the same row always builds the same event, so a resend after a
    restart is byte-for-byte the event the homeserver may already hold.
    """
    content = json.loads(json.dumps(payload))  # a deep copy; the caller's dict stays untouched
    if kind is OutboxKind.MESSAGE:
        return "m.room.message", content
    if kind is OutboxKind.REPLY:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": _required(target)}}
        return "m.room.message", content
    if kind is OutboxKind.THREAD:
        thread_root = _required(root)
        # Without an explicit reply target, the in-reply-to is the fallback
        # that thread-unaware clients render; with one, it is a real reply.
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": target is None,
            "m.in_reply_to": {"event_id": target or thread_root},
        }
        return "m.room.message", content
    if kind is OutboxKind.EDIT:
        return "m.room.message", _edit_content(content, _required(target))
    if kind is OutboxKind.REACTION:
        relates = {"rel_type": "m.annotation", "event_id": _required(target), "key": content["key"]}
        return "m.reaction", {"m.relates_to": relates}
    raise ValueError(f"unknown outbox kind {kind!r}")


def _edit_content(new: dict[str, Any], target: str) -> dict[str, Any]:
    # Relations cannot be changed by an edit; m.new_content must not carry one.
    new.pop("m.relates_to", None)
    content: dict[str, Any] = {"msgtype": new["msgtype"], "body": "* " + new["body"]}
    if "format" in new and "formatted_body" in new:
        content["format"] = new["format"]
        content["formatted_body"] = "* " + new["formatted_body"]
    content["m.new_content"] = new
    content["m.relates_to"] = {"rel_type": "m.replace", "event_id": target}
    return content


def _required(event_id: str | None) -> str:
    if event_id is None:
        raise ValueError("this kind of event needs a target")
    return event_id


def check_room(room_id: str) -> None:
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        raise ValueError("room_id must be a room id (!…); resolve aliases before enqueueing")


def check_message_content(content: dict[str, Any]) -> None:
    if not isinstance(content, dict):
        raise TypeError("content must be a dict")
    if not isinstance(content.get("msgtype"), str) or not isinstance(content.get("body"), str):
        raise ValueError("message content needs string msgtype and body")


def check_size(kind: OutboxKind, payload: dict[str, Any], *, target: object, root: object) -> None:
    """Refuse content the homeserver would refuse for good, while the caller can still fix it."""
    placeholder_target = None if target is None else _PLACEHOLDER_EVENT_ID
    placeholder_root = None if root is None else _PLACEHOLDER_EVENT_ID
    try:
        _, content = build_event(kind, payload, placeholder_target, placeholder_root)
        encoded = json.dumps(content, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"content is not valid JSON for Matrix: {type(exc).__name__}") from exc
    if len(encoded) > MAX_CONTENT_BYTES:
        raise EventTooLargeError(f"event content is {len(encoded)} bytes; the limit is {MAX_CONTENT_BYTES}")


def stored_ref(message: str | int | None) -> EventRef:
    """A message reference as a producer stores it (an event id or a row id) as the outbox takes it."""
    if message is None:
        raise ValueError("no message to refer to")
    return message if isinstance(message, str) else OutboxId(message)


# -- the outbox id in the event ---------------------------------------------------
#
# Every event the outbox sends names its row: ``{"io.readybot.outbox": {"origin":
# <this installation>, "id": <row id>, "txn": <the row's txn id>}}`` in its
# content. A new device (a wiped crypto store, another replica) has another
# transaction-id space, so the homeserver's txn-id dedup no longer guards a
# resend; a row that may already have gone out is then looked for in the room.
# In an encrypted room the new device may hold no key to the old device's
# messages, so ``{"txn": ...}`` (random, says nothing) is also kept beside the
# ciphertext, where ``m.relates_to`` already is (see bot.matrix.transport).

OUTBOX_KEY = "io.readybot.outbox"


def with_marker(content: dict[str, Any], *, origin: str, outbox_id: int, txn_id: str) -> dict[str, Any]:
    """The content with its row's marker; never inside ``m.new_content`` (an edit names only itself)."""
    marked = dict(content)
    new_content = marked.get("m.new_content")
    if isinstance(new_content, dict) and OUTBOX_KEY in new_content:
        marked["m.new_content"] = {k: v for k, v in new_content.items() if k != OUTBOX_KEY}
    marked[OUTBOX_KEY] = {"origin": origin, "id": int(outbox_id), "txn": txn_id}
    return marked


def clear_marker(content: dict[str, Any]) -> dict[str, Any] | None:
    """What of the marker may stand in clear beside a ciphertext: the txn id only, or None."""
    marker = content.get(OUTBOX_KEY)
    if isinstance(marker, dict) and isinstance(marker.get("txn"), str):
        return {"txn": marker["txn"]}
    return None


def marked_txn(event: dict[str, Any]) -> str | None:
    """The outbox txn id an event (as ``/messages`` returns it, encrypted or not) carries, or None."""
    content = event.get("content")
    if not isinstance(content, dict):
        return None
    marker = content.get(OUTBOX_KEY)
    if not isinstance(marker, dict):
        return None
    txn = marker.get("txn")
    return txn if isinstance(txn, str) and txn else None
