"""What the ``kube`` / ``kube_api`` fixtures hand a test: a cluster to talk to.

By default that is a fresh ``FakeApiServer`` per test. With
``READYBOT_TEST_KUBECONFIG`` set, it is the real cluster that kubeconfig
names; tests that need the test server's knobs (store, faults, compaction,
recorded requests) skip there through ``require_server()``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from kubernetes.client import ApiClient, CoreV1Api, V1Namespace, V1ObjectMeta
from kubernetes.config import new_client_from_config

from bot.kube.client import KubeApi
from config.kubernetes import KubernetesSettings
from tests.kube.apiserver import FakeApiServer, RecordedRequest
from tests.kube.store import ObjectStore

REAL_CLUSTER_ENV: Final = "READYBOT_TEST_KUBECONFIG"
# Short enough that failure tests are quick, long enough for a loaded CI box.
TEST_REQUEST_TIMEOUT_S: Final = 2.0
TEST_WATCH_TIMEOUT_S: Final = 5


def real_kubeconfig() -> Path | None:
    value = os.environ.get(REAL_CLUSTER_ENV)
    return Path(value) if value else None


@dataclass
class KubeTarget:
    """A cluster for one test: a kubeconfig, and a fresh namespace in it."""

    kubeconfig_path: Path
    url: str
    namespace: str
    # None when the tests target a real cluster.
    server: FakeApiServer | None
    _clients: list[ApiClient] = field(default_factory=list)

    def require_server(self) -> FakeApiServer:
        """The test API server, or skip: a real cluster has no such knobs."""
        if self.server is None:
            pytest.skip("needs the test API server's knobs (not available on a real cluster)")
        return self.server

    @property
    def store(self) -> ObjectStore:
        return self.require_server().store

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.require_server().requests

    def settings(self, **overrides: Any) -> KubernetesSettings:
        values: dict[str, Any] = {
            "enabled": True,
            "in_cluster": False,
            "kubeconfig": self.kubeconfig_path,
            "request_timeout_s": TEST_REQUEST_TIMEOUT_S,
            "watch_timeout_s": TEST_WATCH_TIMEOUT_S,
            "watch_backoff_max_s": 0.5,
        }
        values.update(overrides)
        return KubernetesSettings(**values)

    def client(self) -> ApiClient:
        """The official client on this cluster, without touching its global default."""
        api_client: ApiClient = new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig_path), persist_config=False
        )
        self._clients.append(api_client)
        return api_client

    def close(self) -> None:
        for api_client in self._clients:
            api_client.close()  # type: ignore[no-untyped-call]


@dataclass
class KubeHandle(KubeTarget):
    """A ``KubeTarget`` with a ``KubeApi`` on it."""

    api: KubeApi = field(kw_only=True)


@contextlib.contextmanager
def open_target(tmp_path: Path) -> Iterator[KubeTarget]:
    """A test API server (or the real cluster) with a fresh namespace in it."""
    namespace = f"rb-test-{uuid.uuid4().hex[:8]}"
    real = real_kubeconfig()
    if real is not None:
        target = KubeTarget(real, "", namespace, None)
        core = target.client()
        target.url = str(core.configuration.host)
        _create_namespace(core, namespace)
        try:
            yield target
        finally:
            with contextlib.suppress(Exception):
                CoreV1Api(core).delete_namespace(namespace, _request_timeout=10)
            target.close()
        return
    server = FakeApiServer().start()
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        target = KubeTarget(kubeconfig, server.url, namespace, server)
        server.store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        try:
            yield target
        finally:
            target.close()
    finally:
        server.stop()


def _create_namespace(core: ApiClient, namespace: str) -> None:
    CoreV1Api(core).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)), _request_timeout=10)
