"""Session-wide record of every request the test Kubernetes API servers received.

Each ``FakeApiServer`` keeps ``requests`` as ``(verb, group, resource,
namespace)``, but only for its own life (one test, usually). The RBAC test
(``tests/deploy/test_rbac_matches_code.py``, moved to the end of the run)
needs them all, from every test and every server, however the test made it:
the ``kube``/``kube_api`` fixtures or a ``FakeApiServer()`` of its own. So
``install`` wraps the server's ``__post_init__`` to adopt each new instance,
and after each test ``harvest`` files what the adopted servers recorded under
that test's node id. The result is also written as JSON to the pytest cache
(``.pytest_cache/d/readybot-rbac/requests.json``) for a person to read.

Wired in ``tests/conftest.py`` (sessionstart, runtest_protocol,
collection_modifyitems).
"""

from __future__ import annotations

import json
import re
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pytest

    from tests.kube.apiserver import FakeApiServer

CACHE_DIR = "readybot-rbac"
RECORD_FILE = "requests.json"


class Request(NamedTuple):
    verb: str
    group: str
    resource: str
    namespace: str | None


# One object by name: /api/v1/[namespaces/<ns>/]<plural>/<name>, /apis/<group>/<version>/… likewise.
_OBJECT_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/(?:namespaces/(?P<ns>[^/]+)/)?(?P<plural>[^/]+)/(?P<name>[^/]+)$"
)
_NAMED_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def named_request(method: str, path: str, query: dict[str, str]) -> tuple[Request, str] | None:
    """The RBAC request and object name of a request for one object, as RBAC's resourceNames sees it."""
    verb = _NAMED_VERBS.get(method)
    match = _OBJECT_PATH.match(path)
    if verb is None or match is None or query.get("watch") in {"true", "1"}:
        return None
    group, namespace, plural, name = match.group("group", "ns", "plural", "name")
    if plural == "namespaces" and namespace is None:
        namespace = name  # as kube-apiserver's RequestInfo has it (and the test server records it)
    return Request(verb, group or "", plural, namespace), name


@dataclass
class _Adopted:
    server: weakref.ref[FakeApiServer]
    harvested: int = 0
    harvested_exchanges: int = 0


@dataclass
class Recorder:
    """Requests seen by any test API server in this session, each with the tests that made it."""

    installed: bool = False
    path: Path | None = None
    started: float = field(default_factory=time.time)
    seen: dict[Request, set[str]] = field(default_factory=dict)
    # Object names of the requests for one object (get, update, patch, delete by name).
    names: dict[Request, set[str]] = field(default_factory=dict)
    tests_run: set[str] = field(default_factory=set)
    _adopted: list[_Adopted] = field(default_factory=list)
    _written: int = -1

    def adopt(self, server: FakeApiServer) -> None:
        self._adopted.append(_Adopted(weakref.ref(server)))

    def harvest(self, nodeid: str) -> None:
        """File what the servers recorded since the last harvest under ``nodeid``; forget dead servers."""
        self.tests_run.add(nodeid)
        alive = []
        for adopted in self._adopted:
            server = adopted.server()
            if server is None:
                continue
            for recorded in server.requests[adopted.harvested :]:
                self.seen.setdefault(Request(*recorded), set()).add(nodeid)
            adopted.harvested = len(server.requests)
            for exchange in server.exchanges[adopted.harvested_exchanges :]:
                named = named_request(exchange.method, exchange.path, exchange.query)
                if named is not None:
                    self.names.setdefault(named[0], set()).add(named[1])
            adopted.harvested_exchanges = len(server.exchanges)
            alive.append(adopted)
        self._adopted = alive
        if len(self.seen) != self._written:
            self.write()

    def write(self) -> None:
        if self.path is None:
            return
        self.path.write_text(json.dumps(self.as_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        self._written = len(self.seen)

    def as_json(self) -> dict[str, Any]:
        return {
            "session_started": self.started,
            "requests": [
                {**request._asdict(), "tests": sorted(tests), "names": sorted(self.names.get(request, ()))}
                for request, tests in sorted(self.seen.items(), key=lambda kv: _sort_key(kv[0]))
            ],
        }


def _sort_key(request: Request) -> tuple[str, str, str, str]:
    return (request.group, request.resource, request.verb, request.namespace or "")


RECORDER = Recorder()


def install(config: pytest.Config) -> None:
    """Adopt every ``FakeApiServer`` created from now on (idempotent)."""
    if RECORDER.installed:
        return
    from tests.kube.apiserver import FakeApiServer

    original = FakeApiServer.__post_init__

    def __post_init__(self: FakeApiServer) -> None:
        original(self)
        RECORDER.adopt(self)

    FakeApiServer.__post_init__ = __post_init__  # type: ignore[method-assign]
    RECORDER.installed = True
    cache = getattr(config, "cache", None)
    if cache is not None:
        RECORDER.path = Path(cache.mkdir(CACHE_DIR)) / RECORD_FILE
        RECORDER.write()


@contextmanager
def recording(nodeid: str) -> Iterator[None]:
    """Around one test's whole protocol (setup, call, teardown): its requests are filed under it."""
    try:
        yield
    finally:
        RECORDER.harvest(nodeid)


def run_last(items: list[pytest.Item]) -> None:
    """Move the tests of modules that set ``RUN_LAST = True`` to the end, in their order."""
    last = [item for item in items if getattr(getattr(item, "module", None), "RUN_LAST", False)]
    if last:
        items[:] = [item for item in items if item not in last] + last
