"""List-then-watch: follow one resource type, whatever the API server does.

``watch_resource`` LISTs, hands the items over, then WATCHes from the list's
resourceVersion; it resumes from the last resourceVersion it saw (bookmarks
included) when a watch request ends, relists on 410 Gone, backs off (capped,
jittered, interruptible) while the API is unreachable or refuses, and returns
within about a second once ``stop`` is set.

Threads: the official client's ``Watch.stream`` blocks, so each watch request
runs in a short-lived daemon thread of its own (never the loop's default
executor, which a few long watches would exhaust). Cancelling a task that
awaits a thread does not stop the thread, so the thread has its own stop
flag, and stopping also shuts the watch socket down, which unblocks a read
at once. Events cross to the loop through a bounded queue: a slow consumer
slows the reader instead of growing memory, and callbacks run on the loop,
one at a time, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from bot.kube.client import KubeApi, KubeObject, translate_error
from bot.kube.errors import Gone, KubeError, Operation
from bot.kube.resources import ResourceType

log = logging.getLogger(__name__)

EventHandler = Callable[[str, KubeObject], Awaitable[None]]
RelistHandler = Callable[[list[KubeObject]], Awaitable[None]]

# Event types handed to ``on_event``.
ADDED: Final = "ADDED"
MODIFIED: Final = "MODIFIED"
DELETED: Final = "DELETED"

_QUEUE_SIZE: Final = 64
_JOIN_ON_STOP_S: Final = 1.0
_BACKOFF_INITIAL_S: Final = 0.5


@dataclass
class WatchStatus:
    """How a watch loop is doing, updated as it runs.

    Pass one in to read it from elsewhere: ``synced`` False with a
    ``last_error`` means the feature should report "unknown/unreachable".
    """

    synced: bool = False
    last_error: KubeError | None = None
    # Consecutive failed attempts; 0 once a list or watch succeeds again.
    failures: int = 0
    lists: int = 0
    watch_requests: int = 0
    events: int = 0
    # Exceptions raised by the callbacks (logged; the loop carries on).
    handler_errors: int = 0


async def watch_resource(
    api: KubeApi,
    group: str,
    version: str,
    plural: str,
    namespace: str | None,
    on_event: EventHandler,
    stop: asyncio.Event,
    *,
    on_relist: RelistHandler | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    timeout_s: int | None = None,
    backoff_max_s: float | None = None,
    status: WatchStatus | None = None,
) -> None:
    """Follow ``plural.group`` in ``namespace`` (None: all namespaces) until ``stop`` is set.

    ``on_event(type, obj)`` gets ADDED/MODIFIED/DELETED with the object as
    the server sent it. After every (re)list, ``on_relist(items)`` gets the
    full current set; without ``on_relist``, the differences to what was
    known are delivered as ADDED/MODIFIED/DELETED events instead, so a
    consumer sees each change once. Callback exceptions are logged and
    counted, and the loop goes on.
    """
    loop = _WatchLoop(
        api,
        ResourceType(group, version, plural),
        namespace,
        on_event,
        stop,
        on_relist=on_relist,
        selectors=(label_selector, field_selector),
        timeout_s=timeout_s or api.watch_timeout_s,
        backoff=Backoff(
            min(_BACKOFF_INITIAL_S, backoff_max_s or api.watch_backoff_max_s),
            backoff_max_s or api.watch_backoff_max_s,
        ),
        status=status or WatchStatus(),
    )
    await loop.run()


class Backoff:
    """Exponential back-off with jitter, capped; the wait ends early when stop is set."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * 2.0**self.attempts)
        self.attempts += 1
        # Jitter spreads the retries of several watches (and replicas) apart.
        jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
        return delay * jitter

    def reset(self) -> None:
        self.attempts = 0

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep the next delay; True if stop was set meanwhile."""
        return await wait_or_stop(stop, self.next_delay())


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless ``stop`` is set first; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


@dataclass
class _SessionEnd:
    resource_version: str
    events: int = 0
    error: KubeError | None = None
    stopped: bool = False
    quick: bool = False


@dataclass
class _WatchLoop:
    api: KubeApi
    resource: ResourceType
    namespace: str | None
    on_event: EventHandler
    stop: asyncio.Event
    on_relist: RelistHandler | None
    selectors: tuple[str | None, str | None]
    timeout_s: int
    backoff: Backoff
    status: WatchStatus
    # What the consumer knows, (namespace, name) -> resourceVersion; kept only
    # when relists are turned into events (no on_relist).
    known: dict[tuple[str, str], str] = field(default_factory=dict)
    gone_streak: int = 0

    @property
    def label(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        group = f".{self.resource.group}" if self.resource.group else ""
        return f"{self.resource.plural}{group}{where}"

    async def run(self) -> None:
        resource_version: str | None = None
        while not self.stop.is_set():
            if resource_version is None:
                resource_version = await self._list()
                continue
            end = await self._watch(resource_version)
            if end.stopped:
                return
            resource_version = end.resource_version
            if end.events:
                # Progress: whatever comes next starts from the shortest delay.
                self.gone_streak = 0
                self.backoff.reset()
            if isinstance(end.error, Gone):
                # History was compacted past our resourceVersion: relist. A
                # second 410 without progress in between waits first, so a
                # confused server cannot make us spin.
                log.info("watch of %s expired (410); relisting", self.label)
                resource_version = None
                self.gone_streak += 1
                if self.gone_streak > 1 and await self.backoff.wait(self.stop):
                    return
            elif end.error is not None:
                self._failed(end.error)
                if await self.backoff.wait(self.stop):
                    return
            elif end.quick and not end.events:
                # Ended at once with nothing in it: back off instead of spinning.
                if await self.backoff.wait(self.stop):
                    return
            else:
                self.gone_streak = 0
                self.backoff.reset()

    async def _list(self) -> str | None:
        label_selector, field_selector = self.selectors
        try:
            listing = await self.api.list_resource(
                *self.resource,
                namespace=self.namespace,
                label_selector=label_selector,
                field_selector=field_selector,
            )
        except KubeError as error:
            self._failed(error)
            await self.backoff.wait(self.stop)
            return None
        self.status.lists += 1
        self._recovered()
        # A fresh list is progress (a watch failing right after it still backs
        # off: it resumes from this resourceVersion, not from the list) unless
        # we are here because watches keep expiring at once.
        if not self.gone_streak:
            self.backoff.reset()
        await self._relisted(listing.items)
        return listing.resource_version

    async def _relisted(self, items: list[KubeObject]) -> None:
        if self.on_relist is not None:
            await self._guarded(self.on_relist(items))
            return
        current = {_key(item): item for item in items}
        for key, item in current.items():
            before = self.known.get(key)
            if before != _resource_version(item):
                await self._deliver(ADDED if before is None else MODIFIED, item)
        for key in [key for key in self.known if key not in current]:
            gone = {"metadata": {"namespace": key[0], "name": key[1], "resourceVersion": self.known[key]}}
            await self._deliver(DELETED, gone)

    async def _deliver(self, kind: str, obj: KubeObject) -> None:
        if self.on_relist is None:
            if kind == DELETED:
                self.known.pop(_key(obj), None)
            else:
                self.known[_key(obj)] = _resource_version(obj)
        self.status.events += 1
        await self._guarded(self.on_event(kind, obj))

    async def _guarded(self, callback: Awaitable[None]) -> None:
        try:
            await callback
        except Exception:
            self.status.handler_errors += 1
            log.exception("a handler of the %s watch failed; the watch goes on", self.label)

    async def _watch(self, resource_version: str) -> _SessionEnd:
        loop = asyncio.get_running_loop()
        session = _Session(self.api, self.resource, self.namespace, self.selectors, self.timeout_s, loop)
        self.status.watch_requests += 1
        session.start(resource_version)
        started = loop.time()
        end = _SessionEnd(resource_version)
        stopping = asyncio.ensure_future(self.stop.wait())
        getting: asyncio.Future[tuple[str, Any]] | None = None
        try:
            while True:
                getting = asyncio.ensure_future(session.queue.get())
                done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    end.stopped = True
                    return end
                kind, payload = getting.result()
                if kind == "event":
                    end.events += await self._watch_event(payload, end)
                    continue
                if kind == "open":
                    self._recovered()
                    continue
                end.error = payload if isinstance(payload, KubeError) else None
                end.quick = loop.time() - started < self.timeout_s / 2
                if end.error is None:
                    self._recovered()
                return end
        finally:
            # Also on cancellation from outside: no pending helper left behind,
            # and the thread told to stop.
            stopping.cancel()
            if getting is not None:
                getting.cancel()
            session.interrupt()
            if end.stopped:
                await session.join(_JOIN_ON_STOP_S)

    async def _watch_event(self, event: dict[str, Any], end: _SessionEnd) -> int:
        kind = str(event.get("type"))
        obj = event.get("raw_object")
        if not isinstance(obj, dict):
            return 0
        end.resource_version = _resource_version(obj) or end.resource_version
        if kind not in (ADDED, MODIFIED, DELETED):
            # BOOKMARK: only its resourceVersion matters.
            return 0
        if not self.status.synced:
            self._recovered()
        await self._deliver(kind, obj)
        return 1

    def _failed(self, error: KubeError) -> None:
        if self.status.failures == 0:
            log.warning("watch of %s: %s; retrying with back-off", self.label, error)
        else:
            log.debug("watch of %s still failing: %s", self.label, error)
        self.status.failures += 1
        self.status.last_error = error
        self.status.synced = False

    def _recovered(self) -> None:
        if self.status.failures:
            log.info("watch of %s recovered after %d failed attempt(s)", self.label, self.status.failures)
        self.status.failures = 0
        self.status.last_error = None
        self.status.synced = True


class _Stopped(Exception):
    """Raised inside the watch thread when the session was interrupted."""


class _Session:
    """One watch request in a daemon thread; its events go to ``queue`` on the loop."""

    def __init__(
        self,
        api: KubeApi,
        resource: ResourceType,
        namespace: str | None,
        selectors: tuple[str | None, str | None],
        timeout_s: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._api = api
        self._resource = resource
        self._namespace = namespace
        self._selectors = selectors
        self._timeout_s = timeout_s
        self._loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        # return_type=object: events stay the dicts the server sent, and the
        # client still reads resourceVersions (bookmarks included) from them.
        self._watch = Watch(return_type=object)  # type: ignore[no-untyped-call]
        self._thread: threading.Thread | None = None
        # Set on the loop when the thread is done.
        self._finished = asyncio.Event()

    def start(self, resource_version: str) -> None:
        self._thread = threading.Thread(
            target=self._run,
            args=(resource_version,),
            name=f"kube-watch-{self._resource.plural}",
            daemon=True,
        )
        self._thread.start()

    def interrupt(self) -> None:
        """Make the thread stop now: flag, client-side stop, and shut the socket (unblocks a read)."""
        self._stopping.set()
        self._watch.stop()  # type: ignore[no-untyped-call]
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown_socket(response)

    async def join(self, timeout_s: float) -> None:
        """Wait (without blocking the loop) for the thread to end, at most ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), timeout_s)

    def _open(
        self,
        *,
        watch: bool,
        _preload_content: bool,
        resource_version: str | None = None,
        timeout_seconds: int,
    ) -> Any:
        """What ``Watch.stream`` calls for each request (it adds watch/_preload_content)."""
        if self._stopping.is_set():
            raise _Stopped
        label_selector, field_selector = self._selectors
        response = self._api.open_watch(
            self._resource,
            self._namespace,
            resource_version=resource_version,
            timeout_s=timeout_seconds,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        with self._lock:
            self._response = response
            stopping = self._stopping.is_set()
        if stopping:
            # interrupt() ran between our check and storing the response.
            response.close()
            raise _Stopped
        # The server accepted the watch: the loop may call the watch healthy now
        # rather than when this request ends.
        self._put(("open", None))
        return response

    def _run(self, resource_version: str) -> None:
        try:
            self._stream(resource_version)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._finished.set)

    def _stream(self, resource_version: str) -> None:
        op = Operation("watch", *self._resource, namespace=self._namespace)
        outcome: tuple[str, Any]
        try:
            for event in self._watch.stream(  # type: ignore[no-untyped-call]
                self._open, resource_version=resource_version, timeout_seconds=self._timeout_s
            ):
                if not self._put(("event", event)):
                    return
            outcome = ("end", None)
        except _Stopped:
            return
        except KubeError as error:
            outcome = ("error", error)
        except ApiException as error:
            # An ERROR event in the stream (410 Gone among them).
            outcome = ("error", translate_error(error, op, self._timeout_s))
        except Exception as error:
            if self._stopping.is_set():
                return
            # Transport errors mid-stream (connection reset, read timeout) and
            # anything unexpected: the loop backs off and resumes.
            log.debug("watch of %s ended on %s", self._resource.plural, type(error).__name__)
            outcome = ("error", translate_error(error, op, self._timeout_s))
        finally:
            with self._lock:
                self._response = None
        self._put(outcome)

    def _put(self, item: tuple[str, Any]) -> bool:
        """Hand one item to the loop, waiting while the queue is full; False once stopping."""
        try:
            future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self._loop)
        except RuntimeError:
            return False  # the loop is closed
        while True:
            try:
                future.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                if self._stopping.is_set():
                    future.cancel()
                    return False
            except (concurrent.futures.CancelledError, RuntimeError):
                return False
            else:
                return True


def _shutdown_socket(response: Any) -> None:
    # What Watch.stop() does too: shutting the socket down makes a read
    # blocked in another thread return at once (close() alone may not).
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _key(obj: KubeObject) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _resource_version(obj: KubeObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
