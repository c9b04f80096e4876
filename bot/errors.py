"""Exceptions with a meaning for the people in the room."""

from __future__ import annotations

from config.errors import ConfigError

__all__ = [
    "ConfigError",
    "OutcomeUnknown",
    "PermissionDenied",
    "StoreUnavailableError",
    "UsageError",
    "UserError",
]


class UserError(Exception):
    """A problem the user can fix; its message is safe to show in the room."""


class UsageError(UserError):
    """Wrong arguments for a command; the reply carries the usage line."""


class OutcomeUnknown(UserError):
    """Another system took the change but never answered: it may or may not have been made.

    Audited as ``unconfirmed``, not ``refused``: the answer tells the user to look.
    """


class PermissionDenied(UserError):
    """The sender may not run this here. The message never names who may."""


class StoreUnavailableError(Exception):
    """What was accepted could not be committed now (disk full, database locked).

    Webhooks answer 503 so the sender retries; commands say so in the room.
    """
