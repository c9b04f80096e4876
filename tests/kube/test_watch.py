"""The list-then-watch loop against the test API server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.kube.errors import ClusterUnreachable, Forbidden, KubeError, MissingCRD
from bot.kube.resources import ARGO_APPLICATIONS
from bot.kube.watch import WatchStatus, watch_resource
from tests.kube.crds import CUSTOM, ResourceDef, find
from tests.kube.handle import KubeHandle
from tests.kube.objects import application

GROUP, VERSION, PLURAL = ARGO_APPLICATIONS
WAIT_S = 5.0


@dataclass
class Recorder:
    """Collects what the loop hands over and lets a test wait for a condition."""

    relists: list[list[str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, obj["metadata"]["name"]))
        self.changed.set()

    async def on_relist(self, items: list[dict[str, Any]]) -> None:
        self.relists.append(sorted(item["metadata"]["name"] for item in items))
        self.changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        # Conditions on a WatchStatus change without an event: poll as well.
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.02)


@contextlib.asynccontextmanager
async def running_watch(
    kube_api: KubeHandle, recorder: Recorder, *, relist_hook: bool = True, **kwargs: Any
) -> AsyncIterator[WatchStatus]:
    """The watch loop as a task for the block's duration; it must stop within a second."""
    stop = asyncio.Event()
    status = WatchStatus()
    options: dict[str, Any] = {"timeout_s": 1, "backoff_max_s": 0.2, **kwargs}
    task = asyncio.create_task(
        watch_resource(
            kube_api.api,
            GROUP,
            VERSION,
            PLURAL,
            kube_api.namespace,
            recorder.on_event,
            stop,
            on_relist=recorder.on_relist if relist_hook else None,
            status=status,
            **options,
        )
    )
    try:
        yield status
    finally:
        stop.set()
        async with asyncio.timeout(2):
            await task


def last_error(status: WatchStatus) -> KubeError | None:
    # Read through a function: the type checker would keep an earlier narrowing.
    return status.last_error


async def create(kube_api: KubeHandle, *names: str) -> None:
    for name in names:
        await kube_api.api.create_custom_object(GROUP, VERSION, kube_api.namespace, PLURAL, application(name))


async def test_initial_list_is_handed_over(kube_api: KubeHandle) -> None:
    """The loop starts with a LIST and hands the full set to on_relist, before any event."""
    await create(kube_api, "a", "b")
    recorder = Recorder()
    async with running_watch(kube_api, recorder) as status:
        await recorder.wait_for(lambda: bool(recorder.relists))
        assert recorder.relists == [["a", "b"]]
        assert recorder.events == []
        assert status.synced and status.lists == 1


async def test_later_changes_are_delivered_once_in_order(kube_api: KubeHandle) -> None:
    """Changes after the list arrive once each, in order, across watch requests that time out and resume."""
    await create(kube_api, "a", "b")
    recorder = Recorder()
    async with running_watch(kube_api, recorder) as status:
        await recorder.wait_for(lambda: bool(recorder.relists))
        api, ns = kube_api.api, kube_api.namespace
        await create(kube_api, "c")
        await api.patch_custom_object(GROUP, VERSION, ns, PLURAL, "a", {"spec": {"project": "x"}})
        await api.delete_custom_object(GROUP, VERSION, ns, PLURAL, "b")
        expected = [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
        await recorder.wait_for(lambda: len(recorder.events) >= 3)
        # Let at least two 1-second watch requests end and resume.
        await recorder.wait_for(lambda: status.watch_requests >= 3, timeout_s=4)
        await create(kube_api, "d")
        await recorder.wait_for(lambda: len(recorder.events) >= 4)
    assert recorder.events == [*expected, ("ADDED", "d")]
    assert status.lists == 1  # resumed from the last resourceVersion, never relisted


@pytest.mark.parametrize("in_stream", [True, False], ids=["error-event", "http-410"])
async def test_after_410_the_loop_relists_the_full_current_set(kube_api: KubeHandle, in_stream: bool) -> None:
    """When its resourceVersion is compacted away, the loop relists and hands over the full current set."""
    server = kube_api.require_server()
    server.gone_in_stream = in_stream
    await create(kube_api, "a", "b")
    recorder = Recorder()
    async with running_watch(kube_api, recorder, timeout_s=30) as status:
        await recorder.wait_for(lambda: bool(recorder.relists))
        await asyncio.to_thread(server.wait_for_watches, 1)
        with server.unreachable():
            # Changes the watch never sees, then the history is gone.
            server.store.delete(server.store.definition(GROUP, PLURAL), kube_api.namespace, "b")  # type: ignore[arg-type]
            server.store.put(application("c"), namespace=kube_api.namespace)
            server.compact()
        await recorder.wait_for(lambda: len(recorder.relists) >= 2)
    assert recorder.relists == [["a", "b"], ["a", "c"]]
    assert recorder.events == []
    assert status.lists == 2


async def test_an_expired_open_watch_makes_the_loop_relist(kube_api: KubeHandle) -> None:
    """An ERROR 410 event in an open watch makes the loop relist at once."""
    server = kube_api.require_server()
    await create(kube_api, "a")
    recorder = Recorder()
    async with running_watch(kube_api, recorder, timeout_s=30):
        await recorder.wait_for(lambda: bool(recorder.relists))
        await asyncio.to_thread(server.wait_for_watches, 1)
        server.expire_watches()
        await recorder.wait_for(lambda: len(recorder.relists) >= 2)
    assert recorder.relists == [["a"], ["a"]]


async def test_without_on_relist_a_relist_becomes_the_differences(kube_api: KubeHandle) -> None:
    """Without on_relist, a relist is delivered as ADDED/MODIFIED/DELETED for what changed, nothing twice."""
    server = kube_api.require_server()
    await create(kube_api, "same", "changed", "removed")
    recorder = Recorder()
    async with running_watch(kube_api, recorder, relist_hook=False, timeout_s=30):
        await recorder.wait_for(lambda: len(recorder.events) >= 3)
        assert sorted(recorder.events) == [("ADDED", "changed"), ("ADDED", "removed"), ("ADDED", "same")]
        await asyncio.to_thread(server.wait_for_watches, 1)
        rdef = server.store.definition(GROUP, PLURAL)
        assert rdef is not None
        with server.unreachable():
            server.store.delete(rdef, kube_api.namespace, "removed")
            server.store.patch(
                rdef,
                kube_api.namespace,
                "changed",
                {"spec": {"project": "x"}},
                "application/merge-patch+json",
            )
            server.store.put(application("new"), namespace=kube_api.namespace)
            server.compact()
        await recorder.wait_for(lambda: len(recorder.events) >= 6)
        await asyncio.sleep(0.3)  # nothing more may come
    assert sorted(recorder.events[3:]) == [("ADDED", "new"), ("DELETED", "removed"), ("MODIFIED", "changed")]
    assert len(recorder.events) == 6


async def test_unreachable_api_backs_off_then_recovers(kube_api: KubeHandle) -> None:
    """While the API is down the loop retries with capped back-off, then resumes and catches up."""
    server = kube_api.require_server()
    await create(kube_api, "a")
    recorder = Recorder()
    async with running_watch(kube_api, recorder) as status:
        await recorder.wait_for(lambda: bool(recorder.relists))
        server.stop()
        await asyncio.sleep(1.5)
        assert isinstance(status.last_error, ClusterUnreachable)
        assert not status.synced
        # Back-off between 0.1 and 0.2 s: a handful of attempts, not thousands.
        assert 3 <= status.failures <= 20
        server.store.put(application("made-while-down"), namespace=kube_api.namespace)
        server.start()
        await recorder.wait_for(lambda: ("ADDED", "made-while-down") in recorder.events)
        await recorder.wait_for(lambda: status.synced)
        assert status.failures == 0
        assert last_error(status) is None
    assert status.lists == 1  # resumed from its resourceVersion: the history was still there


async def test_a_watch_that_always_expires_backs_off_instead_of_spinning(kube_api: KubeHandle) -> None:
    """If every watch request answers 410 at once, relists are spaced by the back-off, not back to back."""
    server = kube_api.require_server()
    server.fail(r"/applications", 410, verb="watch")
    recorder = Recorder()
    async with running_watch(kube_api, recorder) as status:
        await asyncio.sleep(1.0)
    # Back-off of 0.1-0.2 s after the second 410: about ten relists, not hundreds.
    assert 3 <= status.lists <= 15


async def test_refusals_are_reported_and_retried(kube_api: KubeHandle) -> None:
    """A 403 on list, then a missing CRD, show as the last error; the loop recovers when fixed."""
    server = kube_api.require_server()
    fault = server.fail(r"/applications", 403, verb="list")
    recorder = Recorder()
    async with running_watch(kube_api, recorder) as status:
        await recorder.wait_for(lambda: status.failures >= 2)
        assert isinstance(status.last_error, Forbidden)
        server.clear_faults()
        definition = find(CUSTOM, GROUP, PLURAL)
        assert isinstance(definition, ResourceDef)
        server.unregister(GROUP, PLURAL)
        failures = status.failures
        await recorder.wait_for(lambda: isinstance(status.last_error, MissingCRD))
        assert status.failures > failures
        server.register(definition)
        await recorder.wait_for(lambda: status.synced and bool(recorder.relists))
    assert fault.hits >= 2


async def test_bookmarks_move_the_resume_point(kube_api: KubeHandle) -> None:
    """The next watch request resumes from the last BOOKMARK's resourceVersion, not the list's."""
    server = kube_api.require_server()
    recorder = Recorder()
    async with running_watch(kube_api, recorder) as status:
        await recorder.wait_for(lambda: bool(recorder.relists))
        # Other objects move the global resourceVersion; this watch sees only bookmarks.
        server.store.put(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, namespace=kube_api.namespace
        )
        moved_to = server.store.resource_version
        await recorder.wait_for(lambda: status.watch_requests >= 2, timeout_s=3)
        await asyncio.sleep(0.2)
    watches = [e.query.get("resourceVersion") for e in server.exchanges if e.query.get("watch") == "true"]
    assert watches[1] == str(moved_to)


async def test_callback_errors_are_counted_and_the_loop_goes_on(kube_api: KubeHandle) -> None:
    """An exception in on_event is logged and counted; later events are still delivered."""
    recorder = Recorder()

    async def flaky(kind: str, obj: dict[str, Any]) -> None:
        await recorder.on_event(kind, obj)
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("handler bug")

    stop = asyncio.Event()
    status = WatchStatus()
    task = asyncio.create_task(
        watch_resource(
            kube_api.api, GROUP, VERSION, PLURAL, kube_api.namespace, flaky, stop, status=status, timeout_s=1
        )
    )
    try:
        await recorder.wait_for(lambda: status.synced)
        await create(kube_api, "bad", "good")
        await recorder.wait_for(lambda: ("ADDED", "good") in recorder.events)
        assert status.handler_errors == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


@pytest.mark.parametrize("while_", ["watching", "backing-off"])
async def test_stop_returns_within_a_second(kube_api: KubeHandle, while_: str) -> None:
    """Setting stop ends the loop within a second, whether a long watch is open or it is backing off."""
    server = kube_api.require_server()
    recorder = Recorder()
    stop = asyncio.Event()
    status = WatchStatus()
    task = asyncio.create_task(
        watch_resource(
            kube_api.api,
            GROUP,
            VERSION,
            PLURAL,
            kube_api.namespace,
            recorder.on_event,
            stop,
            on_relist=recorder.on_relist,
            status=status,
            timeout_s=60,
            backoff_max_s=30,
        )
    )
    await recorder.wait_for(lambda: bool(recorder.relists))
    await asyncio.to_thread(server.wait_for_watches, 1)
    if while_ == "backing-off":
        server.stop()
        await recorder.wait_for(lambda: status.failures >= 1)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1.0
    # The watch thread is gone too, not left reading a socket.
    await asyncio.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("kube-watch")]


async def test_cancelling_the_task_also_stops_the_watch_thread(kube_api: KubeHandle) -> None:
    """Cancelling the loop's task (a TaskGroup tearing down) ends the watch thread too, within a second."""
    server = kube_api.require_server()
    recorder = Recorder()
    task = asyncio.create_task(
        watch_resource(
            kube_api.api,
            GROUP,
            VERSION,
            PLURAL,
            kube_api.namespace,
            recorder.on_event,
            asyncio.Event(),
            timeout_s=60,
        )
    )
    await asyncio.to_thread(server.wait_for_watches, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(1):
        while [t for t in threading.enumerate() if t.name.startswith("kube-watch")]:
            await asyncio.sleep(0.02)
