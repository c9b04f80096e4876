"""Settings of the Kubernetes access layer (issue 4).

Every key has a default, so an empty ``kubernetes:`` section validates and the
bot runs without a cluster until ``enabled`` is set. No credential lives here:
the bot authenticates with its service account (in a pod) or with what the
kubeconfig names, so nothing in this section is a secret.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from config.base import Section


class KubernetesSettings(Section):
    """How the bot reaches the Kubernetes API and how patient it is with it."""

    # Off by default: the features that need a cluster (approvals, Velero,
    # readiness) look the client up and answer "not configured" without it.
    enabled: bool = False
    # None: use the pod's service account when running in a pod (the
    # KUBERNETES_SERVICE_HOST variable and the token file are present), the
    # kubeconfig otherwise. True/False force one or the other.
    in_cluster: bool | None = None
    # None: $KUBECONFIG, else ~/.kube/config.
    kubeconfig: Path | None = None
    # A context of the kubeconfig; None: its current-context.
    context: str | None = None
    # Bound of one API call, connecting included. A cluster that does not
    # answer within it is reported as unreachable, never waited on.
    request_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Server-side length of one watch request. Shorter means more requests;
    # stopping does not wait for it (the watch socket is shut down).
    watch_timeout_s: int = Field(default=30, ge=1, le=600)
    # Ceiling of the back-off between attempts while the API is unreachable.
    watch_backoff_max_s: float = Field(default=30.0, gt=0, le=600)
    # Threads serving API calls; more concurrent calls wait for a free one.
    max_concurrent_requests: int = Field(default=8, ge=1, le=64)
