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
