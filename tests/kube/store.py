"""The tests' import path of ``bot.demo.kube.store`` (one copy: the demo runs the same server)."""

from bot.demo.kube.store import (
    CLOSE,
    EXPIRE,
    INITIAL_NAMESPACES,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    Obj,
    ObjectStore,
    StatusError,
    Subscription,
    WatchEvent,
    not_found,
)

__all__ = [
    "CLOSE",
    "EXPIRE",
    "INITIAL_NAMESPACES",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "Obj",
    "ObjectStore",
    "StatusError",
    "Subscription",
    "WatchEvent",
    "not_found",
]
