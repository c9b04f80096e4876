"""The test API server, driven by the REAL ``kubernetes`` client (not KubeApi).

These pin the behaviour the client relies on (FACTS.md, "Kubernetes in
tests"). Tests without server-only knobs also run against a real cluster
(READYBOT_TEST_KUBECONFIG, with the upstream CRDs installed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import CoreV1Api, CustomObjectsApi, V1ConfigMap, V1ObjectMeta
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from tests.kube.apiserver import RecordedRequest
from tests.kube.handle import KubeTarget
from tests.kube.objects import application

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"
TIMEOUT = 5


def as_object(value: object) -> dict[str, Any]:
    """The client types custom objects as ``object``; they are dicts."""
    assert isinstance(value, dict)
    return value


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status body of an error answer."""
    assert error.body is not None
    return as_object(json.loads(error.body))


class Apps:
    """The official ``CustomObjectsApi`` on Argo CD Applications in the test namespace, typed."""

    def __init__(self, kube: KubeTarget) -> None:
        self.api = CustomObjectsApi(kube.client())
        self.namespace = kube.namespace

    def create(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return as_object(
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, application(name, **kwargs), _request_timeout=TIMEOUT
            )
        )

    def get(self, name: str) -> dict[str, Any]:
        return as_object(
            self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=TIMEOUT
            )
        )

    def listing(self) -> dict[str, Any]:
        return as_object(
            self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=TIMEOUT
            )
        )

    def resource_version(self) -> str:
        return str(self.listing()["metadata"]["resourceVersion"])

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return as_object(
            self.api.replace_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, body, _request_timeout=TIMEOUT
            )
        )

    def patch(self, name: str, body: dict[str, Any], content_type: str | None = None) -> dict[str, Any]:
        return as_object(
            self.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body,
                _content_type=content_type,
                _request_timeout=TIMEOUT,
            )
        )

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=TIMEOUT
        )

    def stream(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Watch events, raw, as the client's Watch.stream yields them."""
        watch = Watch()  # type: ignore[no-untyped-call]
        events: Iterator[dict[str, Any]] = watch.stream(  # type: ignore[no-untyped-call]
            self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, **kwargs
        )
        return events

    def events(self, **kwargs: Any) -> list[tuple[str, str]]:
        """(type, name) of every event of one watch, until it ends."""
        return [(event["type"], event["raw_object"]["metadata"]["name"]) for event in self.stream(**kwargs)]


def config_map_model(name: str, labels: dict[str, str] | None = None) -> V1ConfigMap:
    return V1ConfigMap(metadata=V1ObjectMeta(name=name, labels=labels))


def test_create_answers_201_with_the_stored_object(kube: KubeTarget) -> None:
    """POST answers 201 with the object as stored: uid, resourceVersion, creationTimestamp, generation 1."""
    apps = Apps(kube)
    data, status, _ = apps.api.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, kube.namespace, PLURAL, application("web"), _request_timeout=TIMEOUT
    )
    assert status == 201
    metadata = as_object(data)["metadata"]
    assert metadata["name"] == "web" and metadata["namespace"] == kube.namespace
    assert metadata["uid"] and metadata["resourceVersion"] and metadata["creationTimestamp"]
    assert metadata["generation"] == 1
    assert as_object(data)["spec"]["project"] == "default"


def test_create_of_an_existing_name_is_409_already_exists(kube: KubeTarget) -> None:
    """A second POST with the same name answers 409 AlreadyExists."""
    apps = Apps(kube)
    apps.create("web")
    with pytest.raises(ApiException) as caught:
        apps.create("web")
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "AlreadyExists"


def test_get_of_a_missing_object_is_404_with_a_status_naming_it(kube: KubeTarget) -> None:
    """GET of a missing object answers 404 with a NotFound Status whose details name it."""
    with pytest.raises(ApiException) as caught:
        Apps(kube).get("nope")
    assert caught.value.status == 404
    status = status_of(caught.value)
    assert status["reason"] == "NotFound"
    assert status["details"]["name"] == "nope"


def test_list_filters_by_label_and_field_selectors(kube: KubeTarget) -> None:
    """labelSelector (=, !=, in, notin, exists, !exists) and fieldSelector (metadata.name) filter lists."""
    core = CoreV1Api(kube.client())
    for name, labels in {
        "a": {"app": "web", "tier": "front"},
        "b": {"app": "web", "tier": "back", "canary": "yes"},
        "c": {"app": "db"},
    }.items():
        core.create_namespaced_config_map(
            kube.namespace, config_map_model(name, labels), _request_timeout=TIMEOUT
        )

    def names(label_selector: str | None = None, field_selector: str | None = None) -> list[str]:
        listing = core.list_namespaced_config_map(
            kube.namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            _request_timeout=TIMEOUT,
        )
        return sorted(str(item.metadata.name) for item in listing.items if item.metadata)

    assert names("app=web") == ["a", "b"]
    assert names("app!=web") == ["c"]
    assert names("tier in (back,side)") == ["b"]
    assert names("tier notin (front)") == ["b", "c"]
    assert names("canary") == ["b"]
    assert names("app=web,!canary") == ["a"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names("tier", field_selector="metadata.name!=c") == ["a", "b"]


def test_list_carries_a_resource_version_that_grows(kube: KubeTarget) -> None:
    """A list's metadata.resourceVersion is the global counter: a later write raises it."""
    apps = Apps(kube)
    before = int(apps.resource_version())
    apps.create("web")
    after = apps.listing()
    assert int(after["metadata"]["resourceVersion"]) > before
    assert [item["metadata"]["name"] for item in after["items"]] == ["web"]


def test_put_with_a_stale_resource_version_is_409_conflict(kube: KubeTarget) -> None:
    """PUT with an old metadata.resourceVersion answers 409 Conflict; with the current one it succeeds."""
    apps = Apps(kube)
    stale = apps.create("web")
    apps.patch("web", {"metadata": {"labels": {"touched": "yes"}}})
    stale["spec"]["source"]["targetRevision"] = "v2"
    with pytest.raises(ApiException) as caught:
        apps.replace("web", stale)
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "Conflict"

    fresh = apps.get("web")
    fresh["spec"]["source"]["targetRevision"] = "v2"
    replaced = apps.replace("web", fresh)
    assert replaced["spec"]["source"]["targetRevision"] == "v2"
    assert int(replaced["metadata"]["resourceVersion"]) > int(fresh["metadata"]["resourceVersion"])


def test_merge_patch_null_deletes_a_key(kube: KubeTarget) -> None:
    """A merge patch (RFC 7386) merges objects, replaces values and deletes keys set to null."""
    apps = Apps(kube)
    apps.create("web", labels={"keep": "1", "drop": "2"})
    patched = apps.patch(
        "web",
        {"metadata": {"labels": {"drop": None, "new": "3"}}, "spec": {"source": {"targetRevision": "v9"}}},
        "application/merge-patch+json",
    )
    assert patched["metadata"]["labels"] == {"keep": "1", "new": "3"}
    assert patched["spec"]["source"]["targetRevision"] == "v9"
    assert patched["spec"]["source"]["repoURL"].startswith("https://")


def test_v37_client_sends_merge_patch_for_dict_bodies_on_custom_objects(kube: KubeTarget) -> None:
    """The v37 client's patch_namespaced_custom_object sends application/merge-patch+json by default."""
    server = kube.require_server()
    apps = Apps(kube)
    apps.create("web")
    apps.patch("web", {"spec": {"project": "x"}})
    patches = [e for e in server.exchanges if e.method == "PATCH"]
    assert [e.content_type for e in patches] == ["application/merge-patch+json"]


def test_strategic_merge_patch_on_a_custom_resource_is_415(kube: KubeTarget) -> None:
    """Custom resources refuse strategic merge patches with 415, as the real API server does."""
    apps = Apps(kube)
    apps.create("web")
    with pytest.raises(ApiException) as caught:
        apps.patch("web", {"spec": {"project": "x"}}, "application/strategic-merge-patch+json")
    assert caught.value.status == 415


def test_watch_from_a_resource_version_sees_later_events_only(kube: KubeTarget) -> None:
    """A watch from resourceVersion N delivers the changes after N, in order, and nothing before."""
    apps = Apps(kube)
    apps.create("before")
    since = apps.resource_version()
    apps.create("after")
    apps.patch("before", {"spec": {"project": "x"}})
    apps.delete("after")

    events = apps.events(resource_version=since, timeout_seconds=1)

    assert events == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]


def test_watch_with_timeout_seconds_ends_after_it(kube: KubeTarget) -> None:
    """A watch with timeoutSeconds=1 and nothing happening ends after about a second, without events."""
    apps = Apps(kube)
    since = apps.resource_version()
    started = time.monotonic()
    assert apps.events(resource_version=since, timeout_seconds=1) == []
    assert 0.9 <= time.monotonic() - started < 3


def test_watch_bookmark_carries_the_current_resource_version(kube: KubeTarget) -> None:
    """With allowWatchBookmarks, a watch ends with a BOOKMARK at the current resourceVersion."""
    server = kube.require_server()
    apps = Apps(kube)
    since = apps.resource_version()
    # A change elsewhere moves the global counter but is no event for this watch.
    CoreV1Api(kube.client()).create_namespaced_config_map(kube.namespace, config_map_model("elsewhere"))
    events = list(apps.stream(resource_version=since, timeout_seconds=1, allow_watch_bookmarks=True))
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == str(server.store.resource_version)


@pytest.mark.parametrize("in_stream", [True, False], ids=["error-event", "http-410"])
def test_after_compaction_a_watch_from_an_old_version_gets_410(kube: KubeTarget, in_stream: bool) -> None:
    """After compaction a watch from an older resourceVersion gets 410 (event or HTTP) and raises."""
    server = kube.require_server()
    server.gone_in_stream = in_stream
    apps = Apps(kube)
    old = apps.resource_version()
    apps.create("web")
    server.compact()

    with pytest.raises(ApiException) as caught:
        apps.events(resource_version=old, timeout_seconds=1)

    assert caught.value.status == 410
    watches = [r for r in server.requests if r.verb == "watch"]
    assert len(watches) == 1  # with timeout_seconds the client does not retry


def test_watch_stream_retries_a_410_event_once_then_raises(kube: KubeTarget) -> None:
    """Without timeout_seconds, Watch.stream retries an in-stream 410 once, then raises (FACTS.md)."""
    server = kube.require_server()
    apps = Apps(kube)
    old = apps.resource_version()
    apps.create("web")
    server.compact()

    with pytest.raises(ApiException) as caught:
        apps.events(resource_version=old)

    assert caught.value.status == 410
    assert len([r for r in server.requests if r.verb == "watch"]) == 2


def test_expire_watches_ends_an_open_watch_with_a_410_event(kube: KubeTarget) -> None:
    """server.expire_watches() sends open watches an ERROR event with code 410."""
    server = kube.require_server()
    apps = Apps(kube)
    stream = apps.stream(resource_version=apps.resource_version(), timeout_seconds=5, _request_timeout=10)
    apps.create("web")
    assert next(stream)["type"] == "ADDED"  # the watch is open now
    server.expire_watches()
    with pytest.raises(ApiException) as caught:
        next(stream)
    assert caught.value.status == 410


def test_unknown_resource_types_answer_404_like_a_missing_crd(kube: KubeTarget) -> None:
    """An unknown group answers a plain 404 page; an unknown plural a Status without details."""
    server = kube.require_server()
    api = Apps(kube).api
    with pytest.raises(ApiException) as unknown_group:
        api.list_namespaced_custom_object("nope.example.org", "v1", kube.namespace, "things")
    assert unknown_group.value.status == 404
    assert "404 page not found" in str(unknown_group.value.body)

    server.unregister("velero.io", "backups")
    with pytest.raises(ApiException) as unknown_plural:
        api.list_namespaced_custom_object("velero.io", "v1", kube.namespace, "backups")
    assert unknown_plural.value.status == 404
    assert status_of(unknown_plural.value)["details"] == {}


def test_requests_are_recorded_with_rbac_verbs(kube: KubeTarget) -> None:
    """Each request is recorded as (verb, group, resource, namespace) with RBAC verb names."""
    server = kube.require_server()
    apps, ns = Apps(kube), kube.namespace
    app = apps.create("web")
    apps.get("web")
    apps.listing()
    apps.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    apps.replace("web", app)
    apps.patch("web", {"spec": {"project": "x"}})
    apps.events(resource_version=app["metadata"]["resourceVersion"], timeout_seconds=1)
    apps.delete("web")
    CoreV1Api(kube.client()).read_namespace(ns)

    assert server.requests == [
        ("create", GROUP, PLURAL, ns),
        ("get", GROUP, PLURAL, ns),
        ("list", GROUP, PLURAL, ns),
        ("list", GROUP, PLURAL, None),
        ("update", GROUP, PLURAL, ns),
        ("patch", GROUP, PLURAL, ns),
        ("watch", GROUP, PLURAL, ns),
        ("delete", GROUP, PLURAL, ns),
        RecordedRequest("get", "", "namespaces", ns),
    ]


def test_seeding_a_yaml_file_makes_it_readable(kube: KubeTarget, tmp_path: Path) -> None:
    """store.load_yaml puts an Application written as YAML into the store, readable through the API."""
    store = kube.store
    written = application("velero-test") | {"status": {"operationState": {"phase": "Succeeded"}}}
    written["metadata"]["resourceVersion"] = "722811357"
    path = tmp_path / "application.yaml"
    path.write_text(yaml.safe_dump(written), encoding="utf-8")
    (seeded,) = store.load_yaml(path, namespace=kube.namespace)
    read = Apps(kube).get("velero-test")
    assert read["status"]["operationState"]["phase"] == "Succeeded"
    assert read["metadata"]["resourceVersion"] == seeded["metadata"]["resourceVersion"]
    # The store's counter, not the file's resourceVersion (722811357).
    assert int(read["metadata"]["resourceVersion"]) == store.resource_version


def test_a_held_write_is_applied_on_release_after_its_client_gave_up(kube: KubeTarget) -> None:
    """hold(): the PATCH waits; the client times out; on release it is applied and answered 200 anyway."""
    server = kube.require_server()
    apps = Apps(kube)
    apps.create("web")
    held = server.hold(r"/applications/web$", verb="patch", times=1)
    api = CustomObjectsApi(kube.client())
    with pytest.raises(Exception, match="timed out"):
        api.patch_namespaced_custom_object(
            GROUP, VERSION, kube.namespace, PLURAL, "web", {"spec": {"project": "late"}}, _request_timeout=0.3
        )
    assert held.hits == 1 and apps.get("web")["spec"]["project"] == "default"
    held.release()
    deadline = time.monotonic() + TIMEOUT
    while not (patches := [(a.verb, a.status) for a in server.answers if a.exchange.method == "PATCH"]):
        assert time.monotonic() < deadline, "the held write was not answered"
        time.sleep(0.02)
    assert patches == [("patch", 200)]
    assert apps.get("web")["spec"]["project"] == "late"
