"""Chat commands: one module per command group, registered by decorator."""

from __future__ import annotations

import importlib

# Importing a module registers its commands in commands.registry.registry.
_MODULES = (
    "commands.help",
    "commands.ping",
    "commands.alertmanager",
    "commands.deadman",
    "commands.approvals",
    "commands.velero",
    "commands.drills",
    "commands.falco",
    "commands.readiness",
)


def load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)
