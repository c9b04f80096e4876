"""What Alertmanager's API returns, and its errors, without the HTTP client.

Kept apart from ``bot.alertmanager.api`` so commands can use these types without
importing aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.alertmanager.matchers import Matcher
from bot.errors import UserError


class AlertmanagerUnreachable(UserError):
    """Alertmanager could not be asked: down, too slow, or failing (5xx)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Alertmanager unreachable: {reason}")
        self.reason = reason


class AlertmanagerNoAnswer(AlertmanagerUnreachable):
    """A change (POST, DELETE) was sent but no answer came back: a timeout or a lost connection.

    Alertmanager may have made the change before it stopped answering, so
    whoever asked must not be told it failed.
    """


class AlertmanagerRejected(UserError):
    """Alertmanager refused the request (4xx); the message is its own explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Alertmanager refused the request: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    # "active", "suppressed" (silenced or inhibited) or "unprocessed".
    state: str
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    # "active", "pending" (starts later) or "expired".
    state: str
