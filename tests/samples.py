"""Objects and events shaped as the upstream components write them, written for these tests.

The shapes (field names, types, where a value lives) are facts about Falco,
falcosidekick, Kyverno, Trivy Operator and Argo CD; the values are ours. The
real upstream files are in ``../shared/fixtures`` and only the tests that
check the project *against* them read them (``tests.places.upstream``), so a
clone of the repository alone runs everything else.
"""

from __future__ import annotations

import copy
import json
from typing import Any

Obj = dict[str, Any]

# -- Falco, as falcosidekick posts it -------------------------------------------------

# What falcosidekick's /test endpoint sends: the rule is "Test rule".
FALCOSIDEKICK_TEST: Obj = {
    "output": "This is a test from falcosidekick",
    "priority": "Debug",
    "rule": "Test rule",
    "time": "2026-03-01T09:30:00Z",
    "source": "syscalls",
    "output_fields": {"proc.name": "falcosidekick", "proc.tty": 4321},
    "tags": ["test", "example"],
    "hostname": "sidekick-host",
}

# An event without source or tags, whose evt.time is a 19-digit nanosecond integer.
WRITE_BELOW_BINARY_DIR: Obj = {
    "output": "09:12:44.123456789: Error File below a known binary directory opened for writing "
    "(user=root command=cp payload /usr/bin/payload file=/usr/bin/payload)",
    "hostname": "worker-2",
    "priority": "Error",
    "rule": "Write below binary dir",
    "time": "2026-04-02T09:12:44.123456789Z",
    "output_fields": {
        "evt.time": 1775121164123456789,
        "fd.name": "/usr/bin/payload",
        "proc.cmdline": "cp payload /usr/bin/payload",
        "user.name": "root",
    },
}

_DROP_COUNTS = {"n_drops": 51234, "n_drops_buffer_total": 51234, "n_drops_bug": 0, "n_evts": 9876543}

# Falco's internal drop event with its counts as strings, and the same as JSON numbers.
SYSCALL_DROP_STRINGS: Obj = {
    "hostname": "worker-1",
    "output": "Falco internal: syscall event drop. 51234 system calls dropped in last second.",
    "output_fields": {"ebpf_enabled": "1", **{k: str(v) for k, v in _DROP_COUNTS.items()}},
    "priority": "Debug",
    "rule": "Falco internal: syscall event drop",
    "time": "2026-05-05T05:05:05.000000005Z",
}
SYSCALL_DROP_NUMBERS: Obj = copy.deepcopy(SYSCALL_DROP_STRINGS) | {"output_fields": dict(_DROP_COUNTS)}


def shell_in_container(n: int) -> Obj:
    """One of a series of Warning events of one rule, as Falco's JSON output writes them."""
    nanos = 1_776_000_000_000_000_000 + n * 1_000_000
    return {
        "hostname": "worker-3",
        "output": f"Warning A shell was spawned in a container (user=app shell=sh n={n})",
        "priority": "Warning",
        "rule": "Terminal shell in container",
        "source": "syscall",
        "tags": ["container", "shell", "mitre_execution"],
        "time": f"2026-04-12T13:20:00.{n * 1_000_000:09d}Z",
        "output_fields": {"evt.time.iso8601": nanos, "proc.cmdline": "sh -i", "k8s.ns.name": "shop"},
    }


FALCO_EVENTS: dict[str, Obj] = {
    "falcosidekick-test": FALCOSIDEKICK_TEST,
    "write-below-binary-dir": WRITE_BELOW_BINARY_DIR,
    "syscall-drop-strings": SYSCALL_DROP_STRINGS,
    "syscall-drop-numbers": SYSCALL_DROP_NUMBERS,
    **{f"shell-in-container-{n}": shell_in_container(n) for n in range(1, 4)},
}


def falco_bytes(event: Obj) -> bytes:
    return json.dumps(event).encode()


# -- Kyverno -------------------------------------------------------------------------


def _pod_rule(name: str, message: str, pattern: Obj, kinds: tuple[str, ...] = ("Pod",)) -> Obj:
    return {
        "name": name,
        "match": {"any": [{"resources": {"kinds": list(kinds)}}]},
        "validate": {"message": message, "pattern": pattern},
    }


def cluster_policy(name: str, rules: list[Obj], action: str = "Audit") -> Obj:
    """A Kyverno ClusterPolicy with a policy-wide validationFailureAction."""
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": name, "annotations": {"policies.kyverno.io/severity": "medium"}},
        "spec": {"validationFailureAction": action, "background": True, "rules": rules},
    }


def _kyverno_samples() -> dict[str, Obj]:
    labels = cluster_policy(
        "require-labels",
        [
            _pod_rule(
                "check-for-labels",
                "Pods need the label app.kubernetes.io/name.",
                {"metadata": {"labels": {"app.kubernetes.io/name": "?*"}}},
            )
        ],
    )
    privileged = cluster_policy(
        "disallow-privileged-containers",
        [
            _pod_rule(
                "privileged-containers",
                "Privileged containers are not allowed.",
                {"spec": {"=(containers)": [{"=(securityContext)": {"=(privileged)": "false"}}]}},
            )
        ],
    )
    snippets = cluster_policy(
        "disallow-ingress-nginx-custom-snippets",
        [
            _pod_rule(
                "check-config-map",
                "ingress-nginx allow-snippet-annotations must be false.",
                {"data": {"allow-snippet-annotations": "false"}},
                kinds=("ConfigMap",),
            ),
            _pod_rule(
                "check-ingress-annotations",
                "The server-snippet annotation is not allowed.",
                {"metadata": {"=(annotations)": {"X(nginx.ingress.kubernetes.io/server-snippet)": "null"}}},
                kinds=("networking.k8s.io/v1/Ingress",),
            ),
        ],
        action="Enforce",
    )
    validating = {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ValidatingPolicy",
        "metadata": {"name": "require-labels"},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "validationActions": ["Audit"],
            "validations": [
                {"expression": "'app.kubernetes.io/name' in object.metadata.?labels.orValue({})"}
            ],
        },
    }
    return {
        "kyverno/require-labels.yaml": labels,
        "kyverno/disallow-privileged-containers.yaml": privileged,
        "kyverno/disallow-ingress-nginx-custom-snippets.yaml": snippets,
        "kyverno/vpol/require-labels.yaml": validating,
    }


# -- Trivy Operator --------------------------------------------------------------------


def vulnerability_report(namespace: str, name: str, *, critical: int = 0, high: int = 3) -> Obj:
    """A VulnerabilityReport with a summary (the counts the readiness probes read) and one finding."""
    return {
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "trivy-operator"},
        },
        "report": {
            "artifact": {"repository": "library/web", "tag": "1.4.2"},
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.60.0"},
            "summary": {
                "criticalCount": critical,
                "highCount": high,
                "mediumCount": 2,
                "lowCount": 1,
                "noneCount": 0,
                "unknownCount": 0,
            },
            "vulnerabilities": [
                {
                    "vulnerabilityID": "CVE-2026-0001",
                    "resource": "libexample",
                    "installedVersion": "1.0.0",
                    "fixedVersion": "1.0.1",
                    "severity": "HIGH",
                    "title": "example flaw",
                }
            ],
        },
    }


# -- everything a test can ask for by name ---------------------------------------------

SAMPLES: dict[str, Obj] = {
    **_kyverno_samples(),
    "trivy/vulnerability-report.yaml": vulnerability_report("web", "replicaset-web-5d9c7-web"),
}


def sample(name: str) -> Obj:
    """A fresh copy of a sample object, to change at will."""
    return copy.deepcopy(SAMPLES[name])
