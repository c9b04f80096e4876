"""The durable outbox: every outgoing Matrix event is committed here first, then sent.

``producer.Outbox`` queues (a row committed before it returns, optionally in
the caller's transaction); ``sender.OutboxSender`` sends each room's rows,
several at once but relations in order after their targets, with back-off;
``events`` builds Matrix events from rows and checks them before they are
queued; ``errors`` is what sending can fail with;
``repo`` and ``media`` are the tables; ``budget`` models the homeserver's rate
limit from the outbox's real send times; ``batching.GroupCommit`` commits
what concurrent producers queue in one transaction. Shared infrastructure: it
imports no capability.
"""

from bot.outbox.errors import (
    EventTooLargeError,
    PermanentSendError,
    RateLimited,
    SendError,
    TransientSendError,
)
from bot.outbox.events import MAX_CONTENT_BYTES, EventRef, build_event
from bot.outbox.producer import Outbox, OutboxStats
from bot.outbox.repo import OutboxId, OutboxKind, OutboxState, SendLoad
from bot.outbox.sender import MatrixTransport, MediaTransport, OutboxSender

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
