"""Resource definitions the test API server serves.

Custom resources come from the upstream CRD files in ``../shared/fixtures/crds``
(group, served versions, names and scope are read from them); the built-in
kinds the bot reads are listed here; a few CRDs that are not vendored (Kyverno,
Trivy, prometheus-operator) are written by hand from their upstream names,
marked as such.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
CRD_DIR = FIXTURES / "crds"

# The C loader reads the 400 KB Argo CD CRD ten times faster.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    _builtin("apps", "v1", "deployments", "Deployment"),
    _builtin("apps", "v1", "daemonsets", "DaemonSet"),
    _builtin("apps", "v1", "statefulsets", "StatefulSet"),
    _builtin("batch", "v1", "cronjobs", "CronJob"),
    _builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
)

# Hand-written: these CRDs are not vendored (Kyverno's is very large). Names,
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


def definition_from_crd(crd: dict[str, Any]) -> ResourceDef:
    """A ``ResourceDef`` from a CustomResourceDefinition object."""
    spec = crd["spec"]
    names = spec["names"]
    served = tuple(v["name"] for v in spec["versions"] if v.get("served", True))
    # The storage version first: it is the preferred one in discovery.
    storage = [v["name"] for v in spec["versions"] if v.get("storage")]
    versions = tuple(storage) + tuple(v for v in served if v not in storage)
    return ResourceDef(
        group=spec["group"],
        versions=versions,
        plural=names["plural"],
        singular=names.get("singular", names["kind"].lower()),
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames", ())),
    )


def load_crd_file(path: Path) -> list[ResourceDef]:
    with path.open(encoding="utf-8") as handle:
        documents = list(yaml.load_all(handle, Loader=_Loader))
    return [
        definition_from_crd(doc) for doc in documents if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


@functools.cache
def vendored_definitions(directory: Path = CRD_DIR) -> tuple[ResourceDef, ...]:
    """Every CRD in ``directory``, parsed once per process."""
    found: list[ResourceDef] = []
    for path in sorted(directory.glob("*.yaml")):
        found.extend(load_crd_file(path))
    return tuple(found)


def default_definitions() -> list[ResourceDef]:
    """Built-ins, the vendored CRDs and the hand-written ones."""
    return [*BUILTIN, *vendored_definitions(), *HAND_WRITTEN]


def find(definitions: Iterable[ResourceDef], group: str, plural: str) -> ResourceDef | None:
    return next((d for d in definitions if d.group == group and d.plural == plural), None)
