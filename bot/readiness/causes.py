"""Why a probe could not look, as the scorecard's ⚠️ lines name it: by cause, not by evidence.

A missing CRD is grouped by the product that installs it ("Velero is not
installed: schedules.velero.io, restores.velero.io are not served"); an
unreachable cluster, an RBAC refusal or something not configured is its own
line. Every error that reaches here is a ``UserError`` whose message is safe
to show.
"""

from __future__ import annotations

from typing import Final

from bot.errors import UserError
from bot.kube.errors import MissingCRD
from bot.readiness.results import Cause

# API groups and the product whose CRDs they are.
_PRODUCTS: Final = {
    "velero.io": "Velero",
    "kyverno.io": "Kyverno",
    "policies.kyverno.io": "Kyverno",
    "reports.kyverno.io": "Kyverno",
    "wgpolicyk8s.io": "Kyverno",
    "argoproj.io": "Argo CD",
    "monitoring.coreos.com": "the Prometheus Operator",
    "cilium.io": "Cilium",
    "aquasecurity.github.io": "the Trivy Operator",
    "cert-manager.io": "cert-manager",
    "metallb.io": "MetalLB",
}


def general(headline: str) -> Cause:
    """A cause worth a ⚠️ line even when one criterion has it (the cluster, configuration, RBAC)."""
    return Cause(headline, general=True)


def cause_of(error: UserError) -> Cause:
    """The cause an error stands for: a missing CRD by its product, anything else by its message."""
    if isinstance(error, MissingCRD) and error.resource:
        product = _PRODUCTS.get(error.group)
        headline = (
            f"{product} is not installed" if product else f"the API group {error.group} is not installed"
        )
        return Cause(headline, missing=error.resource, general=True)
    return general(str(error))
