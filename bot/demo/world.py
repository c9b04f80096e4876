"""The demo cluster's objects: a small platform, seeded into the Kubernetes API stand-in.

Shaped as the components write them (Argo CD, Velero, Kyverno, Cilium's
Helm chart, Trivy Operator, Falco, OpenCost), so that the bot's features
read them as they would a real cluster's, and ``!readiness status`` shows a
mixed scorecard: some criteria pass, some fail, the Prometheus ones are
unknown (the demo runs no Prometheus), the manual ones say so.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bot.demo.kube.store import ObjectStore
from config.cron import parse_cron

Obj = dict[str, Any]

ARGOCD_NAMESPACE: Final = "argocd"
VELERO_NAMESPACE: Final = "velero"
GATED_APPS: Final = ("cilium", "cert-manager", "metallb")
AUTOMATED_APPS: Final = ("kyverno", "velero", "trivy-operator", "falco", "opencost", "podinfo")
DAILY: Final = ("velero-daily-cluster", "0 2 * * *")
WEEKLY: Final = ("velero-weekly-full", "0 3 * * 0")
# What !apps shows on every app's line (spec.info, Argo CD's "Info" panel).
SIMULATED_NOTE: Final = {"name": "demo", "value": "simulated: no cluster, syncs by a stand-in controller"}
_VCLUSTER_LABEL: Final = {"vcluster.loft.sh/namespace": "true"}
_REPO: Final = "https://git.example.org/platform/addons.git"
_SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")


def revision(seed: str) -> str:
    """A stable, commit-like 40-hex revision."""
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(store: ObjectStore, now: datetime | None = None) -> None:
    """Everything the demo cluster holds at start-up."""
    now = now or datetime.now(UTC)
    _namespaces(store)
    _applications(store)
    _velero(store, now)
    _security(store)
    _workloads(store)
    _network_policies(store)


def _namespaces(store: ObjectStore) -> None:
    for name in ("shop", "payments"):
        store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Three vclusters: all with a LimitRange, one without its ResourceQuota (plan 3.1).
    for name in ("vcluster-team-a", "vcluster-team-b", "vcluster-media"):
        store.put(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": _VCLUSTER_LABEL}}
        )
        store.put(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "default-limits", "namespace": name},
                "spec": {
                    "limits": [
                        {
                            "type": "Container",
                            "default": {"cpu": "500m", "memory": "512Mi"},
                            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                        }
                    ]
                },
            }
        )
        if name != "vcluster-media":
            store.put(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": {"name": "default-quota", "namespace": name},
                    "spec": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi", "pods": "100"}},
                }
            )


def application(name: str, *, gated: bool) -> Obj:
    """An Application as Argo CD reports it: gated ones out of sync with a newer commit waiting."""
    live, target = revision(f"{name}-live"), revision(f"{name}-target")
    policy: Obj = {"syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}
    if not gated:
        policy["automated"] = {"prune": True, "selfHeal": True}
        target = live
    namespace = "kube-system" if name in ("cilium", "metallb") else name
    resources: list[Obj] = [
        {
            "group": "apps",
            "version": "v1",
            "kind": "Deployment" if name != "cilium" else "DaemonSet",
            "namespace": namespace,
            "name": name,
            "status": "OutOfSync" if gated else "Synced",
            "health": {"status": "Healthy"},
        },
        {"version": "v1", "kind": "ConfigMap", "namespace": namespace, "name": f"{name}-config"}
        | {"status": "OutOfSync" if gated else "Synced"},
    ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "project": "platform",
            "source": {"repoURL": _REPO, "path": f"addons/{name}", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            "syncPolicy": policy,
            "info": [SIMULATED_NOTE],
        },
        "status": {
            "sync": {"status": "OutOfSync" if gated else "Synced", "revision": target},
            "health": {"status": "Healthy"},
            "history": [{"id": 1, "revision": live, "deployedAt": "2026-04-02T09:14:00Z"}],
            "resources": resources,
        },
    }


def _applications(store: ObjectStore) -> None:
    for name in GATED_APPS:
        store.put(application(name, gated=True))
    for name in AUTOMATED_APPS:
        store.put(application(name, gated=False))


def backup(name: str, phase: str, started: datetime, *, schedule: str | None, **status: Any) -> Obj:
    """A Backup as Velero leaves it once finished."""
    labels = {"velero.io/schedule-name": schedule} if schedule else {}
    return {
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": VELERO_NAMESPACE,
            "labels": labels,
            "creationTimestamp": stamp(started),
        },
        "spec": {"storageLocation": "default", "ttl": "168h0m0s", "includedNamespaces": ["*"]},
        "status": {
            "phase": phase,
            "startTimestamp": stamp(started),
            "completionTimestamp": stamp(started + timedelta(minutes=4)),
            "expiration": stamp(started + timedelta(days=7)),
        }
        | status,
    }


def _velero(store: ObjectStore, now: datetime) -> None:
    store.put(
        {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": VELERO_NAMESPACE},
            "spec": {"provider": "aws", "default": True, "objectStorage": {"bucket": "platform-backups"}},
            "status": {"phase": "Available", "lastValidationTime": stamp(now)},
        }
    )
    for (name, cron), outcome in ((DAILY, "Failed"), (WEEKLY, "PartiallyFailed")):
        last = parse_cron(cron).previous_fire(now) or now
        store.put(
            {
                "apiVersion": "velero.io/v1",
                "kind": "Schedule",
                "metadata": {
                    "name": name,
                    "namespace": VELERO_NAMESPACE,
                    "creationTimestamp": stamp(now - timedelta(days=60)),
                },
                "spec": {"schedule": cron, "paused": False, "template": {"includedNamespaces": ["*"]}},
                "status": {"phase": "Enabled", "lastBackup": stamp(last)},
            }
        )
        step = timedelta(days=1 if name == DAILY[0] else 7)
        for back in (2, 1):  # two good runs before the last one
            started = last - back * step
            store.put(backup(f"{name}-{started:%Y%m%d%H%M%S}", "Completed", started, schedule=name))
        last_status: dict[str, Any] = (
            {
                "failureReason": "upload to bucket platform-backups failed: connection reset by peer",
                "errors": 1,
            }
            if outcome == "Failed"
            else {"errors": 3, "warnings": 12}
        )
        store.put(backup(f"{name}-{last:%Y%m%d%H%M%S}", outcome, last, schedule=name, **last_status))


def _security(store: ObjectStore) -> None:
    # Cilium enforcing (Helm value policyAuditMode: false).
    store.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cilium-config", "namespace": "kube-system"},
            "data": {"policy-audit-mode": "false", "enable-policy": "default", "cluster-name": "demo"},
        }
    )
    exempt = {"any": [{"resources": {"namespaces": ["kube-system", "kube-public", "argocd"]}}]}
    # Two Kyverno policies enforce, one still audits: the plan wants three.
    for name, action, check in (
        ("disallow-privileged-containers", "Enforce", {"securityContext": {"=(privileged)": "false"}}),
        ("require-labels", "Enforce", {"metadata": {"labels": {"app.kubernetes.io/name": "?*"}}}),
        ("restrict-image-registries", "Audit", {"spec": {"containers": [{"image": "registry.local/*"}]}}),
    ):
        store.put(
            {
                "apiVersion": "kyverno.io/v1",
                "kind": "ClusterPolicy",
                "metadata": {"name": name},
                "spec": {
                    "validationFailureAction": action,
                    "background": True,
                    "rules": [
                        {
                            "name": name,
                            "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                            "exclude": exempt,
                            "validate": {"message": f"{name} (demo policy)", "pattern": check},
                        }
                    ],
                },
            }
        )
    store.put(
        {
            "apiVersion": "aquasecurity.github.io/v1alpha1",
            "kind": "VulnerabilityReport",
            "metadata": {"name": "replicaset-shop-web-7d9f8-web", "namespace": "shop"},
            "report": {
                "artifact": {"repository": "shop/web", "tag": "1.4.2"},
                "summary": {"criticalCount": 1, "highCount": 4, "mediumCount": 9, "lowCount": 17},
            },
        }
    )


def _deployment(namespace: str, name: str, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }


def _workloads(store: ObjectStore) -> None:
    for namespace, name in (
        ("trivy-system", "trivy-operator"),
        ("velero", "velero"),
        ("opencost", "opencost"),
        ("falco", "falco-falcosidekick"),
        ("kyverno", "kyverno-admission-controller"),
        ("shop", "web"),
        ("payments", "api"),
    ):
        store.put(_deployment(namespace, name))
    store.put(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "falco", "namespace": "falco"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "falco", "args": ["/usr/bin/falco", "-o", "engine.kind=modern_ebpf"]}
                        ]
                    }
                }
            },
            "status": {"desiredNumberScheduled": 3, "numberReady": 3},
        }
    )
    store.put(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Prometheus",
            "metadata": {"name": "k8s", "namespace": "monitoring"},
            "spec": {"retention": "15d"},
        }
    )


def _network_policies(store: ObjectStore) -> None:
    """A default deny in every namespace but the system ones, and one forgotten: payments."""
    for namespace in store.objects("", "namespaces"):
        name = namespace["metadata"]["name"]
        if name in _SYSTEM_NAMESPACES or name == "payments":
            continue
        store.put(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny", "namespace": name},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            }
        )
