"""Resource definitions the test API server serves, written here.

Every kind the bot reads is listed with what discovery says about it (group,
versions, plural, singular, kind, scope, short names). The custom resources
also list the fields the tests and the bot use, with their types as the
upstream CRD's ``openAPIV3Schema`` gives them. ``tests/kube/test_upstream_crds.py``
checks all of this against the upstream CRD files in ``../shared/fixtures/crds``
(in CI), and that the tests' objects use only the fields listed (everywhere).
The server validates no schema and serves no subresource: none of these CRDs
has a status subresource.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldDef:
    """A field of a custom resource as its CRD's schema types it: ``status.lastBackup``, string, date-time."""

    path: str
    type: str
    format: str | None = None
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResourceDef:
    """One resource type as discovery describes it."""

    group: str
    versions: tuple[str, ...]
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Built-in kinds: strategic merge patch accepted (as a merge patch),
    # PUT without resourceVersion allowed, list items without kind/apiVersion.
    builtin: bool = False
    # Custom resources: the fields the tests and the bot use (below ``spec`` and ``status``).
    fields: tuple[FieldDef, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def resource(self) -> str:
        """``applications.argoproj.io``; ``configmaps`` in the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version


def _builtin(group: str, version: str, plural: str, kind: str, *, namespaced: bool = True) -> ResourceDef:
    return ResourceDef(
        group=group,
        versions=(version,),
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        builtin=True,
    )


BUILTIN: tuple[ResourceDef, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", namespaced=False),
    _builtin("", "v1", "configmaps", "ConfigMap"),
    _builtin("", "v1", "resourcequotas", "ResourceQuota"),
    _builtin("", "v1", "limitranges", "LimitRange"),
    _builtin("", "v1", "pods", "Pod"),
    _builtin("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    _builtin("apps", "v1", "deployments", "Deployment"),
    _builtin("apps", "v1", "daemonsets", "DaemonSet"),
    _builtin("apps", "v1", "statefulsets", "StatefulSet"),
    _builtin("batch", "v1", "cronjobs", "CronJob"),
    _builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    # Leader election of two replicas (ha.enabled): get, create, update with 409.
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
)


def _strings(*paths: str) -> tuple[FieldDef, ...]:
    return tuple(FieldDef(path, "string") for path in paths)


def _times(*paths: str) -> tuple[FieldDef, ...]:
    return tuple(FieldDef(path, "string", "date-time") for path in paths)


def _integers(*paths: str) -> tuple[FieldDef, ...]:
    return tuple(FieldDef(path, "integer") for path in paths)


# Velero v1 (vmware-tanzu/velero config/crd/v1/bases/velero.io_*.yaml).
VELERO_BACKUP = ResourceDef(
    "velero.io",
    ("v1",),
    "backups",
    "backup",
    "Backup",
    True,
    fields=(
        *_strings("spec.storageLocation", "spec.ttl", "status.failureReason"),
        FieldDef("spec.includedNamespaces", "array"),
        FieldDef(
            "status.phase",
            "string",
            enum=(
                "New",
                "Queued",
                "ReadyToStart",
                "FailedValidation",
                "InProgress",
                "WaitingForPluginOperations",
                "WaitingForPluginOperationsPartiallyFailed",
                "Finalizing",
                "FinalizingPartiallyFailed",
                "Completed",
                "PartiallyFailed",
                "Failed",
                "Deleting",
            ),
        ),
        *_times("status.startTimestamp", "status.completionTimestamp", "status.expiration"),
        *_integers(
            "status.errors", "status.warnings", "status.progress.itemsBackedUp", "status.progress.totalItems"
        ),
        FieldDef("status.validationErrors", "array"),
    ),
)
VELERO_RESTORE = ResourceDef(
    "velero.io",
    ("v1",),
    "restores",
    "restore",
    "Restore",
    True,
    fields=(
        *_strings("spec.backupName", "spec.scheduleName", "status.failureReason"),
        # What a restore drill writes (bot/velero/drill_plan.py).
        FieldDef("spec.includedNamespaces", "array"),
        FieldDef("spec.namespaceMapping", "object"),
        FieldDef("spec.includeClusterResources", "boolean"),
        FieldDef("spec.restorePVs", "boolean"),
        FieldDef(
            "status.phase",
            "string",
            enum=(
                "New",
                "FailedValidation",
                "InProgress",
                "WaitingForPluginOperations",
                "WaitingForPluginOperationsPartiallyFailed",
                "Completed",
                "PartiallyFailed",
                "Failed",
                "Finalizing",
                "FinalizingPartiallyFailed",
            ),
        ),
        *_times("status.startTimestamp", "status.completionTimestamp"),
        *_integers(
            "status.errors", "status.warnings", "status.progress.itemsRestored", "status.progress.totalItems"
        ),
        FieldDef("status.validationErrors", "array"),
    ),
)
VELERO_SCHEDULE = ResourceDef(
    "velero.io",
    ("v1",),
    "schedules",
    "schedule",
    "Schedule",
    True,
    fields=(
        FieldDef("spec.schedule", "string"),
        FieldDef("spec.paused", "boolean"),
        FieldDef("spec.template.includedNamespaces", "array"),
        FieldDef("status.phase", "string", enum=("New", "Enabled", "FailedValidation")),
        *_times("status.lastBackup"),
        FieldDef("status.validationErrors", "array"),
    ),
)
VELERO_LOCATION = ResourceDef(
    "velero.io",
    ("v1",),
    "backupstoragelocations",
    "backupstoragelocation",
    "BackupStorageLocation",
    True,
    ("bsl",),
    fields=(
        *_strings("spec.provider", "spec.objectStorage.bucket", "status.message"),
        FieldDef("spec.default", "boolean"),
        FieldDef("status.phase", "string", enum=("Available", "Unavailable")),
        *_times("status.lastValidationTime"),
    ),
)
# Argo CD (argoproj/argo-cd manifests/crds/application-crd.yaml). Its schema is large and
# in the repository (tests/deploy/schemas/argocd-application-crd.yaml): the tests validate
# their Applications against it instead of listing fields here.
ARGO_APPLICATION = ResourceDef(
    "argoproj.io", ("v1alpha1",), "applications", "application", "Application", True, ("app", "apps")
)

# The CRDs whose upstream files the CI test compares with these definitions.
CUSTOM: tuple[ResourceDef, ...] = (
    ARGO_APPLICATION,
    VELERO_BACKUP,
    VELERO_LOCATION,
    VELERO_RESTORE,
    VELERO_SCHEDULE,
)

# Not compared in CI (no upstream file in ../shared; Kyverno's CRD is very large): names,
# groups, versions and scopes are those of the upstream CRDs.
HAND_WRITTEN: tuple[ResourceDef, ...] = (
    ResourceDef("kyverno.io", ("v1",), "clusterpolicies", "clusterpolicy", "ClusterPolicy", False, ("cpol",)),
    ResourceDef(
        "policies.kyverno.io", ("v1",), "validatingpolicies", "validatingpolicy", "ValidatingPolicy", False
    ),
    ResourceDef(
        "aquasecurity.github.io",
        ("v1alpha1",),
        "vulnerabilityreports",
        "vulnerabilityreport",
        "VulnerabilityReport",
        True,
        ("vuln", "vulns"),
    ),
    ResourceDef(
        "monitoring.coreos.com", ("v1",), "prometheuses", "prometheus", "Prometheus", True, ("prom",)
    ),
)


def default_definitions() -> list[ResourceDef]:
    """Built-ins, the custom resources compared with upstream, and the other hand-written ones."""
    return [*BUILTIN, *CUSTOM, *HAND_WRITTEN]


def find(definitions: Iterable[ResourceDef], group: str, plural: str) -> ResourceDef | None:
    return next((d for d in definitions if d.group == group and d.plural == plural), None)
