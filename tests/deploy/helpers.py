"""Shared pieces of the deploy checks: tools, the rendered overlay, schemas, the bot's metrics.

Everything here is offline. A missing tool skips its test outside CI and fails
it under ``CI=true`` (.ci/run installs or provides them all).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
# Two replicas with leader election (ha.enabled), built on the example overlay.
HA_OVERLAY = DEPLOY / "overlays" / "ha"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
YAMLLINT_CONFIG = Path(__file__).resolve().parent / "yamllint.yaml"

KubeObject = dict[str, Any]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip (locally) or fail (under CI=true) when ``what`` is missing."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available here")


def require_module(name: str, package: str) -> None:
    require(importlib.util.find_spec(name) is not None, f"the Python package {package}")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"the {name} command")
    assert path is not None
    return path


def require_kubectl() -> str:
    """kubectl 1.27+ (kustomize v5), or a skip with the reason, even under CI.

    No registry this project can install from carries it (Debian's
    kubernetes-client is 1.20 with kustomize v2, which cannot read our
    overlay), so a machine without it skips the render checks instead of
    failing; scripts/install-test-deps (make test, .ci/run) says so before the tests start.
    """
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl 1.27+ is not installed and no reachable registry provides it")
    return path


@functools.cache
def render(directory: Path) -> tuple[KubeObject, ...]:
    """``kubectl kustomize <directory>``, parsed: what Argo CD or ``kubectl apply -k`` would apply."""
    kubectl = require_kubectl()
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def only(objects: tuple[KubeObject, ...], kind: str, name: str | None = None) -> KubeObject:
    """The one object of ``kind`` (and ``name``)."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def git_blob_id(path: Path) -> str:
    """What ``git hash-object`` prints for the file."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# --- custom resource schemas ---------------------------------------------------------


def crd_schema(path: Path, version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one served version of a vendored CRD."""
    crd = load_yaml_documents(path)[0]
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"{path.name} does not serve version {version}")


def strict(schema: Any) -> Any:
    """A copy of a CRD schema that rejects unknown fields, as strict field validation does.

    An object schema with ``properties`` and neither ``additionalProperties``
    nor ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties:
    false``. ``metadata`` is left open (the API server checks it as ObjectMeta).
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copied = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in copied
        and "additionalProperties" not in copied
        and not copied.get("x-kubernetes-preserve-unknown-fields")
    ):
        copied["additionalProperties"] = False
    return copied


def custom_resource_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the JSON schema that validates it."""
    argo = strict(crd_schema(SCHEMAS / "argocd-application-crd.yaml", "v1alpha1"))
    argo.setdefault("properties", {})["metadata"] = {"type": "object"}
    return {
        ("argoproj.io/v1alpha1", "Application"): argo,
        ("monitoring.coreos.com/v1", "PrometheusRule"): json.loads(
            (SCHEMAS / "prometheusrule.schema.json").read_text(encoding="utf-8")
        ),
        ("monitoring.coreos.com/v1", "ServiceMonitor"): json.loads(
            (SCHEMAS / "servicemonitor.schema.json").read_text(encoding="utf-8")
        ),
    }


# --- the bot's metrics ---------------------------------------------------------------

_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "Enum": ("",),
}


def bot_metrics() -> dict[str, tuple[str, ...]]:
    """Every series name the bot exposes -> its label names, read from the source.

    Found as ``Counter("readybot_…", "help", [labels], …)`` (and Gauge, Histogram, …)
    calls anywhere under bot/, so a metric added by any feature is known here
    without a list to keep.
    """
    metrics: dict[str, tuple[str, ...]] = {}
    for path in sorted((ROOT / "bot").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _metric_calls(tree):
            kind, name, labels = call
            base = name.removesuffix("_total") if kind == "Counter" else name
            for suffix in _SUFFIXES[kind]:
                metrics[base + suffix] = labels
    return metrics


def _metric_calls(tree: ast.AST) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if kind not in _SUFFIXES or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue  # collections.Counter(...) and the like
        labels: tuple[str, ...] = ()
        candidates = [kw.value for kw in node.keywords if kw.arg == "labelnames"] + node.args[2:3]
        for candidate in candidates:
            if isinstance(candidate, ast.List | ast.Tuple):
                labels = tuple(
                    elt.value
                    for elt in candidate.elts
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
                )
        yield kind, first.value, labels
