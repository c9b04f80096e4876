"""The tests' import path of ``bot.demo.alertmanager`` (one copy: the demo starts the same Alertmanager)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.demo.alertmanager import (
    BINARY_NAMES,
    AlertmanagerError,
    AlertmanagerServer,
    find_alertmanager,
    receiver_config,
)

__all__ = [
    "BINARY_NAMES",
    "AlertmanagerError",
    "AlertmanagerServer",
    "find_alertmanager",
    "find_amtool",
    "receiver_config",
]


def find_amtool() -> str | None:
    return shutil.which("amtool") or ("/usr/bin/amtool" if Path("/usr/bin/amtool").exists() else None)
