"""The durable outbox: every outgoing Matrix event is committed here first, then sent.

``Outbox`` (the producer) and ``OutboxSender`` (the consumer) are in
``bot.outbox.producer``; the table's repository in ``bot.outbox.repo``, media
waiting for upload in ``bot.outbox.media``, and the model of the homeserver's
rate limit the relays feed from the outbox's real send times in
``bot.outbox.budget``. Shared infrastructure: it imports no capability.
"""

from bot.outbox.producer import (
    MAX_CONTENT_BYTES,
    EventRef,
    EventTooLargeError,
    MatrixTransport,
    MediaTransport,
    Outbox,
    OutboxId,
    OutboxKind,
    OutboxSender,
    OutboxState,
    OutboxStats,
    PermanentSendError,
    RateLimited,
    SendError,
    SendLoad,
    TransientSendError,
    build_event,
)

__all__ = [
    "MAX_CONTENT_BYTES",
    "EventRef",
    "EventTooLargeError",
    "MatrixTransport",
    "MediaTransport",
    "Outbox",
    "OutboxId",
    "OutboxKind",
    "OutboxSender",
    "OutboxState",
    "OutboxStats",
    "PermanentSendError",
    "RateLimited",
    "SendError",
    "SendLoad",
    "TransientSendError",
    "build_event",
]
