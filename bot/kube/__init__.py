"""Kubernetes access: the async client facade, the list-then-watch loop, the typed errors.

``from bot.kube import KubeApi, watch_resource, ClusterUnreachable``. The
errors and resource types import without the ``kubernetes`` package (which
takes half a second to import); ``KubeApi`` and the watch loop load it on
first use, so a bot without a cluster never pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bot.kube.errors import (
    AlreadyExists,
    ClusterUnreachable,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    MissingCRD,
    NotFound,
    Operation,
    Unauthorized,
)
from bot.kube.resources import ResourceType

if TYPE_CHECKING:
    from bot.kube.client import KubeApi, KubeObject, ResourceList
    from bot.kube.watch import WatchStatus, watch_resource

_LAZY = {
    "KubeApi": "bot.kube.client",
    "KubeObject": "bot.kube.client",
    "ResourceList": "bot.kube.client",
    "WatchStatus": "bot.kube.watch",
    "watch_resource": "bot.kube.watch",
}

__all__ = [
    "AlreadyExists",
    "ClusterUnreachable",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeApi",
    "KubeError",
    "KubeObject",
    "MissingCRD",
    "NotFound",
    "Operation",
    "ResourceList",
    "ResourceType",
    "Unauthorized",
    "WatchStatus",
    "watch_resource",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
