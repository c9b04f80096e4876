"""The test API server's resource definitions (tests/kube/crds.py) against the upstream CRDs.

The definitions are written in the repository so that it stands alone. Two
checks keep them honest:

- everywhere: the objects the tests build use only the fields the
  definitions list (and phases their enums allow); Argo CD Applications
  validate against the Argo CD CRD's schema kept in ``tests/deploy/schemas``;
- in CI (``../shared`` beside the clone; a skip naming it elsewhere): every
  custom definition says what the upstream CRD in ``../shared/fixtures/crds``
  says (group, versions, kind, plural, singular, scope, short names, no
  status subresource), every listed field has the upstream type, format and
  enum, and the tests' Velero objects validate against the upstream schemas.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.kube import velero_objects
from tests.kube.crds import ARGO_APPLICATION, CUSTOM, FieldDef, ResourceDef, default_definitions
from tests.kube.objects import application as kube_application
from tests.kube.store import ObjectStore
from tests.places import ROOT, shared_path
from tests.unit import argo_fake, readiness_env

Obj = dict[str, Any]
# The C loader reads the 400 KB Argo CD CRD ten times faster.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ARGO_CRD = ROOT / "tests" / "deploy" / "schemas" / "argocd-application-crd.yaml"
NOW = datetime(2026, 12, 8, 2, 30, tzinfo=UTC)


def _load(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.load_all(handle, Loader=_Loader) if doc]


@functools.cache
def _argo_schema() -> Obj:
    (crd,) = _load(ARGO_CRD)
    schema: Obj = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def upstream_crds() -> dict[str, Obj]:
    """The CRDs in ../shared/fixtures/crds by name (``schedules.velero.io``)."""
    directory = shared_path("fixtures/crds")
    crds = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in _load(path):
            if doc.get("kind") == "CustomResourceDefinition":
                crds[doc["metadata"]["name"]] = doc
    return crds


def _schema_at(schema: Obj, path: str) -> Obj | None:
    node: Obj | None = schema
    for part in path.split("."):
        node = (node or {}).get("properties", {}).get(part)
        if node is None:
            return None
    return node


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, value)`` of every leaf; a list is a leaf (its items are not walked)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else key)
    elif not isinstance(value, dict):
        yield prefix, value


def velero_objects_of_the_tests() -> list[Obj]:
    """Every Velero object the builders and the readiness worlds make, with every optional field set."""
    past = NOW - timedelta(hours=5)
    built = [
        velero_objects.backup(
            "b",
            "PartiallyFailed",
            schedule="daily",
            created=past,
            started=past,
            completed=NOW,
            errors=1,
            warnings=2,
            items=3,
            total=4,
            failure_reason="boom",
            validation_errors=["bad"],
            namespaces=["shop"],
        ),
        velero_objects.restore(
            "r",
            "Completed",
            backup_name="b",
            schedule="daily",
            started=past,
            completed=NOW,
            errors=1,
            warnings=1,
        ),
        velero_objects.schedule("daily", "0 2 * * *", created=past, paused=True, last_backup=past),
        velero_objects.location("default", "Unavailable", message="no bucket"),
    ]
    store = ObjectStore(default_definitions())
    readiness_env.seed_everything_done(store, NOW.timestamp())
    for plural in ("backups", "restores", "schedules", "backupstoragelocations"):
        built.extend(store.objects("velero.io", plural))
    return built


def _definition_for(obj: Obj) -> ResourceDef:
    group = obj["apiVersion"].split("/")[0]
    found = [d for d in CUSTOM if d.group == group and d.kind == obj["kind"]]
    assert found, f"no definition for {obj['apiVersion']} {obj['kind']}"
    return found[0]


# --- everywhere: the tests stay within the definitions ---------------------------------


def test_the_tests_velero_objects_use_only_the_fields_the_definitions_list() -> None:
    """Every spec/status leaf of the tests' Velero objects is a listed field, and phases are in the enum."""
    objects = velero_objects_of_the_tests()
    assert {obj["kind"] for obj in objects} == {"Backup", "Restore", "Schedule", "BackupStorageLocation"}
    for obj in objects:
        fields = {f.path: f for f in _definition_for(obj).fields}
        for path, value in _leaves({"spec": obj.get("spec", {}), "status": obj.get("status", {})}):
            assert path in fields, f"{obj['kind']} {path} is not listed in tests/kube/crds.py"
            if fields[path].enum:
                assert value in fields[path].enum, f"{obj['kind']} {path}={value!r}"


def test_the_listed_field_check_catches_an_unlisted_field() -> None:
    """The walk above sees a field nested in status, so an unlisted one cannot slip through."""
    obj = velero_objects.schedule("daily", "0 2 * * *")
    obj["status"]["nextRun"] = "soon"
    fields = {f.path for f in _definition_for(obj).fields}
    paths = {path for path, _ in _leaves({"spec": obj["spec"], "status": obj["status"]})}
    assert paths - fields == {"status.nextRun"}


def test_the_tests_argo_cd_applications_validate_against_the_argo_cd_crd() -> None:
    """Applications built by the tests are valid for the Argo CD CRD's openAPIV3Schema (in tests/deploy)."""
    apps = [
        kube_application("cilium", labels={"team": "platform"}, revision="v1.2.3"),
        argo_fake.application(automated=True),
        argo_fake.application(current=None, sync="Synced"),
        readiness_env.application("velero", automated=True),
    ]
    for app in apps:
        assert (app["apiVersion"], app["kind"]) == (ARGO_APPLICATION.api_version(), ARGO_APPLICATION.kind)
        jsonschema.validate(app, _argo_schema())
    broken = kube_application("cilium")
    broken["spec"]["source"] = "not an object"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _argo_schema())


# --- in CI: the definitions against the upstream CRDs in ../shared -------------------


@pytest.mark.parametrize("definition", CUSTOM, ids=lambda d: d.resource)
def test_a_custom_definition_names_the_resource_as_its_upstream_crd_does(definition: ResourceDef) -> None:
    """Group, versions (storage first), kind, plural, singular, scope and short names are the CRD's."""
    crd = upstream_crds().get(definition.resource)
    assert crd is not None, f"no upstream CRD {definition.resource} in ../shared/fixtures/crds"
    spec, names = crd["spec"], crd["spec"]["names"]
    storage = [v["name"] for v in spec["versions"] if v.get("storage")]
    served = [v["name"] for v in spec["versions"] if v.get("served", True) and v["name"] not in storage]
    assert definition.group == spec["group"]
    assert definition.versions == (*storage, *served)
    assert definition.kind == names["kind"]
    assert definition.plural == names["plural"]
    assert definition.singular == names.get("singular", names["kind"].lower())
    assert definition.namespaced == (spec.get("scope", "Namespaced") == "Namespaced")
    assert definition.short_names == tuple(names.get("shortNames", ()))
    # The test server serves no subresource; a CRD with a status subresource would need one.
    assert all("status" not in (v.get("subresources") or {}) for v in spec["versions"])


@pytest.mark.parametrize("definition", [d for d in CUSTOM if d.fields], ids=lambda d: d.resource)
def test_the_listed_fields_have_the_upstream_types(definition: ResourceDef) -> None:
    """Every listed field exists in the upstream schema with the listed type, format and enum."""
    crd = upstream_crds()[definition.resource]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == definition.versions[0])
    schema = version["schema"]["openAPIV3Schema"]
    wrong = []
    for field in definition.fields:
        node = _schema_at(schema, field.path)
        upstream = (
            None
            if node is None
            else FieldDef(field.path, node.get("type", ""), node.get("format"), tuple(node.get("enum", ())))
        )
        if upstream != field:
            wrong.append(f"{field} upstream: {upstream or 'absent'}")
    assert not wrong, "\n".join(wrong)


def test_the_tests_velero_objects_validate_against_the_upstream_schemas() -> None:
    """The Velero objects the tests build are valid for the upstream CRDs' openAPIV3Schema."""
    crds = upstream_crds()
    for obj in velero_objects_of_the_tests():
        definition = _definition_for(obj)
        schema = crds[definition.resource]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        jsonschema.validate(obj, schema)
