"""What a send attempt or an enqueue can fail with. Messages never contain the event's content."""

from __future__ import annotations


class SendError(Exception):
    """A send attempt failed. Messages must never contain the event's content."""


class RateLimited(SendError):
    """429 M_LIMIT_EXCEEDED: every room waits ``retry_after_s`` before the next attempt."""

    def __init__(self, retry_after_s: float, message: str = "rate limited") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientSendError(SendError):
    """The homeserver was unreachable, timed out or answered 5xx: retry with back-off."""


class PermanentSendError(SendError):
    """The homeserver refused the event (4xx other than 429), e.g. the bot is not in the room."""


class EventTooLargeError(ValueError):
    """The content would make an event larger than Matrix allows; truncate before enqueueing."""
