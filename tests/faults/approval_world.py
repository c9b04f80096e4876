"""What the approval fault tests share: a gated-app bot process on the test API server, and counters.

The room, the prompt predicates and the ``Controller`` (the test playing the
Argo CD application controller) are the integration suite's, reused as they are.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from nio import Event, RoomMessageNotice

from bot.demo.synapse import SynapseServer
from tests.integration.botrunner import bot_config
from tests.integration.people import Account
from tests.kube.apiserver import FakeApiServer
from tests.kube.handle import KubeTarget

APP_PATH = r"/applications/cilium$"


def approval_config(
    synapse: SynapseServer,
    account: Account,
    state: Path,
    room: str,
    kube: KubeTarget,
    apps: dict[str, Any],
    **sections: Any,
) -> dict[str, Any]:
    """A bot process config: the test homeserver, the test API server, ``apps`` gated, quick polling."""
    kubernetes = kube.settings().model_dump(mode="json", exclude_none=True)
    approvals = {"apps": apps, "poll_interval_s": 0.2, "expiry_check_interval_s": 1.0}
    return bot_config(
        synapse.base_url, account, state, [room], kubernetes=kubernetes, approvals=approvals, **sections
    )


def operation_writes(server: FakeApiServer, approval_id: str) -> int:
    """PATCHes of the Application that set an operation carrying ``approval_id`` and were applied (200).

    The server answers a held write even when its client has died, so this
    counts what reached the object, not what the bot heard back.
    """
    count = 0
    for answer in server.answers:
        if answer.verb != "patch" or answer.status != 200 or not answer.exchange.path.endswith("/cilium"):
            continue
        operation = json.loads(answer.exchange.body).get("operation") or {}
        if {"name": "readybot-approval", "value": approval_id} in operation.get("info", []):
            count += 1
    return count


def patch_statuses(server: FakeApiServer) -> list[int]:
    """The status of every PATCH of the Application, in order."""
    return [a.status for a in server.answers if a.verb == "patch" and a.exchange.path.endswith("/cilium")]


def audit_actions(database: Path, prefix: str = "approval:") -> list[str]:
    """The audit log's actions (oldest first), read from the bot's SQLite file while it is stopped."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT action FROM audit WHERE action LIKE ? ORDER BY id", (prefix + "%",)
        ).fetchall()
    return [str(row[0]) for row in rows]


def notices(events: list[tuple[str, Event]], room: str) -> list[RoomMessageNotice]:
    return [e for r, e in events if r == room and isinstance(e, RoomMessageNotice)]
