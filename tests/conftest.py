"""Root fixtures: a Kubernetes API for tests (``tests.kube``); the homeserver fixtures as a plugin.

``kube``: a ``KubeTarget`` (kubeconfig, url, a fresh namespace, the test API
server and its store/requests) for tests that drive the official client.
``kube_api``: the same with a ``KubeApi`` on it (``.api``). Both use a fresh
``FakeApiServer`` per test, or the real cluster named by
``READYBOT_TEST_KUBECONFIG``.

Also the session-wide record of every request those servers receive, for the
"RBAC matches the code" test (``tests/deploy/rbac_recorder.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.deploy import rbac_recorder

# Synapse, people, Alertmanager, bots: shared by the integration, fault and security suites;
# the store on SQLite and PostgreSQL (tests.stores).
pytest_plugins = ["tests.integration.fixtures", "tests.stores"]

# The fixtures import the kubernetes client lazily: it takes half a second to
# import, and most of the suite never needs it.
if TYPE_CHECKING:
    from tests.kube.handle import KubeHandle, KubeTarget


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeTarget]:
    """A cluster with a fresh namespace: the test API server unless READYBOT_TEST_KUBECONFIG is set."""
    from tests.kube.handle import open_target

    with open_target(tmp_path) as target:
        yield target


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[KubeHandle]:
    """``kube`` plus a ``KubeApi`` (``.api``) built from its kubeconfig, closed afterwards."""
    from bot.kube.client import KubeApi
    from tests.kube.handle import KubeHandle, open_target

    with open_target(tmp_path) as target:
        api = KubeApi.from_settings(target.settings())
        handle = KubeHandle(target.kubeconfig_path, target.url, target.namespace, target.server, api=api)
        try:
            yield handle
        finally:
            await api.close()
            handle.close()


# --- RBAC matches the code: record every test API server's requests, per test ---


def pytest_sessionstart(session: pytest.Session) -> None:
    rbac_recorder.install(session.config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    rbac_recorder.install(item.config)  # in case this conftest was loaded after sessionstart
    with rbac_recorder.recording(item.nodeid):
        return (yield)


# --- the clock tests: schedules, expiry and durations ---------------------------------
# Marked `clock`; .ci/run runs them again under a fixed wall clock (faketime at 02:30
# UTC), where a world built on fixed times of day instead of the injected "now" fails.
# A test elsewhere can opt in with @pytest.mark.clock.
_TESTS = Path(__file__).resolve().parent
CLOCK_SUITES = tuple(
    _TESTS / name
    for name in (
        "unit/deadman/test_deadman.py",
        "unit/velero/test_velero_service.py",
        "unit/velero/test_velero_outcomes.py",
        "unit/approvals/test_approvals_machine.py",
        "unit/approvals/test_approvals_service.py",
        "unit/alertmanager/test_silences.py",
        "unit/alertmanager/test_matchers.py",
        "unit/falco/test_falco_relay.py",
        "unit/readiness/test_readiness_conditions.py",
        "unit/readiness/test_readiness_probes.py",
        "unit/readiness/test_readiness_feature.py",
        "unit/drills/test_restore_drills.py",
        "unit/core/test_cron.py",
        "unit/ha/test_election.py",
        # Not the integration tests that run Alertmanager (test_silences, test_deadman):
        # a Go binary reads the real clock, not faketime's, and refuses silences that
        # end in its past or alerts that ended long ago.
        "integration/test_velero.py",
        "integration/test_approvals.py",
        "integration/test_falco.py",
        "integration/test_restore_drills.py",
    )
)


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.path in CLOCK_SUITES:
        item.add_marker(pytest.mark.clock)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The RBAC comparison needs every other test's requests first.
    rbac_recorder.run_last(items)
