"""What the Kubernetes fault tests share: a bot process with every cluster feature on the test API server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bot.demo.synapse import SynapseServer
from tests.faults.approval_world import approval_config
from tests.integration.people import Account
from tests.kube.handle import KubeTarget

# Velero's four kinds, one watch each.
VELERO_WATCHES = 4
# What the bot's watcher logs when the API server answers 410 Gone (bot/kube/watch.py).
_RELIST = re.compile(r"watch of (\S+) in \S+ expired \(410\); relisting")


def cluster_config(
    synapse: SynapseServer,
    account: Account,
    state: Path,
    room: str,
    kube: KubeTarget,
    apps: dict[str, Any],
) -> dict[str, Any]:
    """Approval gates (``apps``), the readiness scorecard and the Velero relay, all on ``kube``."""
    readiness = {"enabled": True, "probe_timeout_s": 5}
    velero = {
        "enabled": True,
        "namespace": kube.namespace,
        "rooms": [room],
        "completed": "each",
        "missed_grace_s": 60,
        "check_interval_s": 0.5,
    }
    return approval_config(synapse, account, state, room, kube, apps, readiness=readiness, velero=velero)


def relists_logged(log_text: str) -> dict[str, int]:
    """How many times each watched resource type was relisted after a 410, from the bot's log."""
    counts: dict[str, int] = {}
    for match in _RELIST.finditer(log_text):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts
