"""Resource types the bot reads or writes, named once.

A ``ResourceType`` is (group, version, plural), the order the generic
``KubeApi`` methods take, so ``await kube.get_resource(*DEPLOYMENTS, "velero",
namespace="velero")`` reads well and a typo in a plural is caught in one place.
The core group is "".
"""

from __future__ import annotations

from typing import NamedTuple


class ResourceType(NamedTuple):
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The URL path: namespaced when ``namespace`` is given, else cluster-wide."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        tail = f"/{name}" if name else ""
        return f"{base}{scope}/{self.plural}{tail}"


# Core and built-in kinds the features read.
NAMESPACES = ResourceType("", "v1", "namespaces")
CONFIGMAPS = ResourceType("", "v1", "configmaps")
RESOURCE_QUOTAS = ResourceType("", "v1", "resourcequotas")
LIMIT_RANGES = ResourceType("", "v1", "limitranges")
PODS = ResourceType("", "v1", "pods")
PERSISTENT_VOLUME_CLAIMS = ResourceType("", "v1", "persistentvolumeclaims")
DEPLOYMENTS = ResourceType("apps", "v1", "deployments")
DAEMON_SETS = ResourceType("apps", "v1", "daemonsets")
STATEFUL_SETS = ResourceType("apps", "v1", "statefulsets")
CRON_JOBS = ResourceType("batch", "v1", "cronjobs")
NETWORK_POLICIES = ResourceType("networking.k8s.io", "v1", "networkpolicies")

# Custom resources (none of these has a status subresource upstream).
ARGO_APPLICATIONS = ResourceType("argoproj.io", "v1alpha1", "applications")
VELERO_BACKUPS = ResourceType("velero.io", "v1", "backups")
VELERO_SCHEDULES = ResourceType("velero.io", "v1", "schedules")
VELERO_RESTORES = ResourceType("velero.io", "v1", "restores")
VELERO_BACKUP_STORAGE_LOCATIONS = ResourceType("velero.io", "v1", "backupstoragelocations")
