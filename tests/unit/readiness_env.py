"""Clusters for the readiness tests, seeded into the test API server's store.

Two states of the plan: its starting point (Cilium enforcing, NetworkPolicies
everywhere, Trivy deployed; the rest missing, as the plan's ticks say) and
everything done. Objects are shaped as the upstream components write them
(the Kyverno and Trivy ones come from ``tests/samples.py``).
"""

from __future__ import annotations

import copy
import functools
import time
from datetime import UTC, datetime
from typing import Any

from config.readiness_plan import SHIPPED_PLAN, Plan, load_plan
from tests.kube.store import ObjectStore
from tests.samples import sample

VCLUSTER_LABEL = {"vcluster.loft.sh/namespace": "true"}
VCLUSTER_NAMESPACES = ("demo", "test", "vcluster-media")
CRITICAL_APPS = ("cilium", "cert-manager", "metallb")
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
DAY_S = 86_400

Obj = dict[str, Any]


@functools.cache
def shipped_plan() -> Plan:
    return load_plan(SHIPPED_PLAN)


def stamp(at: float) -> str:
    """RFC 3339, as the API server writes times."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fixture(relative: str) -> Obj:
    """A fresh copy of a sample object (tests/samples.py), by its name."""
    return sample(relative)


def deployment(namespace: str, name: str, *, replicas: int = 1, ready: int | None = None) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": replicas if ready is None else ready},
    }


def stateful_set(namespace: str, name: str, *, replicas: int = 1, ready: int | None = None) -> Obj:
    obj = deployment(namespace, name, replicas=replicas, ready=ready)
    obj["kind"] = "StatefulSet"
    return obj


def daemon_set(
    namespace: str, name: str, *, nodes: int = 3, ready: int | None = None, args: list[str] | None = None
) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{"name": name, "args": args or []}]}}},
        "status": {"desiredNumberScheduled": nodes, "numberReady": nodes if ready is None else ready},
    }


def application(name: str, *, automated: bool, sync: str = "Synced", health: str = "Healthy") -> Obj:
    policy: Obj = {"automated": {"prune": True, "selfHeal": True}} if automated else {}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        # destination and project: required by the CRD's schema.
        "spec": {
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
            "syncPolicy": policy,
        },
        "status": {"sync": {"status": sync}, "health": {"status": health}},
    }


def default_deny(namespace: str) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def cover_namespaces(store: ObjectStore) -> None:
    """A default-deny NetworkPolicy in every namespace but the system ones (plan 1.1, done)."""
    for namespace in store.objects("", "namespaces"):
        name = namespace["metadata"]["name"]
        if name not in SYSTEM_NAMESPACES:
            store.put(default_deny(name))


def prometheus_object(retention: str) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": "k8s", "namespace": "monitoring"},
        "spec": {"retention": retention},
    }


def seed_starting_point(store: ObjectStore) -> None:
    """The plan's starting point: 1.1 and 1.2 done (ticked in the plan), everything else missing."""
    store.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cilium-config", "namespace": "kube-system"},
            "data": {"policy-audit-mode": "false", "enable-policy": "default"},
        }
    )
    store.put(deployment("trivy-system", "trivy-operator"))
    store.put(fixture("trivy/vulnerability-report.yaml"))
    # Kyverno: policies as the policy library ships them, one of them Enforce.
    for name in (
        "require-labels",
        "disallow-privileged-containers",
        "disallow-ingress-nginx-custom-snippets",
    ):
        store.put(fixture(f"kyverno/{name}.yaml"))
    store.put(fixture("kyverno/vpol/require-labels.yaml"))
    for namespace in VCLUSTER_NAMESPACES:
        store.put(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": VCLUSTER_LABEL},
            }
        )
    # "All ArgoCD sync policies are fully automated."
    for name in (*CRITICAL_APPS, "trivy-operator"):
        store.put(application(name, automated=True))
    store.put(prometheus_object("15d"))
    cover_namespaces(store)


def enforce(policy: Obj, *, per_rule: bool = False) -> Obj:
    """A ClusterPolicy in Enforce mode (policy-wide, or per rule as Kyverno 1.13+ allows) exempting
    the system namespaces in every rule."""
    policy = copy.deepcopy(policy)
    if per_rule:
        policy["spec"].pop("validationFailureAction", None)
    else:
        policy["spec"]["validationFailureAction"] = "Enforce"
    for rule in policy["spec"]["rules"]:
        if per_rule:
            rule["validate"]["failureAction"] = "Enforce"
        rule["exclude"] = {"any": [{"resources": {"namespaces": ["kube-system", "kube-public", "argocd"]}}]}
    return policy


def seed_everything_done(store: ObjectStore, now: float | None = None) -> None:
    """Every automatic criterion of the plan met (the monitoring side lives in Prometheus/Alertmanager)."""
    now = time.time() if now is None else now
    old = stamp(now - 30 * DAY_S)
    seed_starting_point(store)
    # 1.3: three forms of Enforce, system namespaces exempted.
    store.put(enforce(fixture("kyverno/require-labels.yaml"), per_rule=True))
    store.put(enforce(fixture("kyverno/disallow-privileged-containers.yaml")))
    store.put(enforce(fixture("kyverno/disallow-ingress-nginx-custom-snippets.yaml")))
    vpol = fixture("kyverno/vpol/require-labels.yaml")
    vpol["spec"]["validationActions"] = ["Deny"]
    store.put(vpol)
    # 2.1: Velero deployed by Argo CD, both schedules backing up, a restore done.
    store.put(deployment("velero", "velero"))
    store.put(application("velero", automated=True))
    for name, cron in (("velero-daily-cluster", "0 2 * * *"), ("velero-weekly-full", "0 3 * * 0")):
        store.put(
            {
                "apiVersion": "velero.io/v1",
                "kind": "Schedule",
                "metadata": {"name": name, "namespace": "velero", "creationTimestamp": old},
                "spec": {"schedule": cron, "template": {"includedNamespaces": ["*"]}},
                "status": {"phase": "Enabled", "lastBackup": stamp(now - 60)},
            }
        )
        store.put(
            {
                "apiVersion": "velero.io/v1",
                "kind": "Backup",
                "metadata": {
                    "name": f"{name}-latest",
                    "namespace": "velero",
                    "labels": {"velero.io/schedule-name": name},
                },
                "status": {"phase": "Completed", "completionTimestamp": stamp(now - 30)},
            }
        )
    store.put(
        {
            "apiVersion": "velero.io/v1",
            "kind": "Restore",
            "metadata": {"name": "scratch-restore", "namespace": "velero"},
            "spec": {"backupName": "velero-daily-cluster-latest"},
            "status": {"phase": "Completed"},
        }
    )
    # 2.2: etcd snapshots every 6 hours.
    store.put(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "etcd-snapshot", "namespace": "kube-system", "creationTimestamp": old},
            "spec": {"schedule": "0 */6 * * *", "jobTemplate": {}},
            "status": {"lastScheduleTime": stamp(now - 60), "lastSuccessfulTime": stamp(now - 30)},
        }
    )
    # 3.1, 3.2
    for namespace in VCLUSTER_NAMESPACES:
        store.put(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "default-quota", "namespace": namespace},
            }
        )
        store.put(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "default-limits", "namespace": namespace},
            }
        )
    store.put(deployment("opencost", "opencost"))
    # 4.1, 4.2
    store.put(stateful_set("tempo", "tempo"))
    store.put(daemon_set("opentelemetry", "opentelemetry-collector-agent"))
    store.put(prometheus_object("90d"))
    # 5.2: the critical addons synced by hand only.
    for name in CRITICAL_APPS:
        store.put(application(name, automated=False))
    # 6.1
    store.put(daemon_set("falco", "falco", args=["/usr/bin/falco", "-o", "engine.kind=modern_ebpf"]))
    store.put(deployment("falco", "falco-falcosidekick"))
    cover_namespaces(store)
