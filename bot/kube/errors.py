"""Errors of the Kubernetes layer, with messages safe to show in a room.

Every message is built here from what the bot asked for (verb, resource,
namespace, name) and a short reason: never from a URL, a header or an
exception's text, so no token or credential-bearing address can leak into a
chat answer or a log line. They are ``UserError``s, so a command that lets one
escape answers with its message instead of "internal error".

This module does not import ``kubernetes``: commands and logic may catch these
errors without pulling in the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import UserError


@dataclass(frozen=True)
class Operation:
    """What was asked of the API: the words an error message is made of."""

    verb: str  # an RBAC verb: get, list, watch, create, update, patch, delete
    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None

    @property
    def resource(self) -> str:
        """``applications.argoproj.io``, or ``configmaps`` for the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def where(self) -> str:
        return f" in namespace {self.namespace}" if self.namespace else ""

    @property
    def target(self) -> str:
        """``applications.argoproj.io "web"``, or just the resource for lists."""
        return f'{self.resource} "{self.name}"' if self.name else self.resource


class KubeError(UserError):
    """Any failure of a Kubernetes call. ``status`` is the HTTP code, if there was an answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterUnreachable(KubeError):
    """No usable answer: refused, unresolvable, timed out, TLS failure, 5xx or 429.

    Readiness reports this as "unknown", never as a failed check.
    """

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"cluster unreachable: {reason}", status=status)
        self.reason = reason


class NotFound(KubeError):
    """The object (or the namespace it should live in) does not exist."""


class MissingCRD(KubeError):
    """The resource type itself is not served: its CRD (or API group) is not installed.

    ``group`` and ``resource`` (``schedules.velero.io``) say which, for
    whoever groups such errors by what is missing.
    """

    def __init__(
        self, message: str, *, group: str = "", resource: str = "", status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.group = group
        self.resource = resource


class Conflict(KubeError):
    """409 on a write: the object changed since it was read (stale resourceVersion)."""


class AlreadyExists(Conflict):
    """409 on create: an object of that name exists."""


class Forbidden(KubeError):
    """403: the bot's account may not do this. ``operation`` says which verb on what."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(
            f"forbidden: the bot may not {operation.verb} {operation.resource}{operation.where}",
            status=403,
        )
        self.operation = operation


class Unauthorized(KubeError):
    """401: the cluster does not accept the bot's credentials (expired token, wrong cluster)."""


class Invalid(KubeError):
    """400/422/415: the cluster refused the request itself (a bug on our side, usually)."""


class Gone(KubeError):
    """410: the resourceVersion a watch started from is too old; relist."""
