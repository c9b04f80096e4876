"""The tests' import path of ``bot.demo.kube.crds`` (one copy: the demo runs the same server)."""

from bot.demo.kube.crds import (
    ARGO_APPLICATION,
    BUILTIN,
    CUSTOM,
    HAND_WRITTEN,
    VELERO_BACKUP,
    VELERO_LOCATION,
    VELERO_RESTORE,
    VELERO_SCHEDULE,
    FieldDef,
    ResourceDef,
    default_definitions,
    find,
)

__all__ = [
    "ARGO_APPLICATION",
    "BUILTIN",
    "CUSTOM",
    "HAND_WRITTEN",
    "VELERO_BACKUP",
    "VELERO_LOCATION",
    "VELERO_RESTORE",
    "VELERO_SCHEDULE",
    "FieldDef",
    "ResourceDef",
    "default_definitions",
    "find",
]
