"""A Kubernetes API server for the tests and the demo: aiohttp in its own thread on 127.0.0.1.

It behaves as the real one where the official ``kubernetes`` client and our
``KubeApi`` care (see FACTS.md, "Kubernetes in tests", and docs/kubernetes.md
for what it implements and what it does not), and it has knobs a real
cluster lacks: compaction, faults, delays, going away and coming back on the
same port, and a record of every request in RBAC terms.

    server = FakeApiServer()
    server.start()                 # or: with FakeApiServer() as server:
    server.store.put({...})        # seed objects directly
    server.write_kubeconfig(path)  # a kubeconfig pointing at it
    server.compact()               # older resourceVersions -> 410 Gone
    server.fail(r"/applications", 403)
    hold = server.hold(r"/applications/cilium$", verb="patch")  # until hold.release()
    with server.unreachable(): ... # connection refused meanwhile
    server.requests                # [("get", "argoproj.io", "applications", "argocd"), ...]
    server.answers                 # every request with the status it was answered
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml
from aiohttp import web

from bot.demo.kube.crds import ResourceDef, default_definitions
from bot.demo.kube.selectors import SelectorError, parse_field_selector, parse_label_selector
from bot.demo.kube.store import CLOSE, EXPIRE, ObjectStore, StatusError, WatchEvent

HOST: Final = "127.0.0.1"
VERSION_INFO: Final = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-readybot-test",
    "platform": "linux/amd64",
}
# The identity a 403 names, like a real API server's message.
TEST_USER: Final = "system:serviceaccount:readybot:readybot"


class RecordedRequest(NamedTuple):
    """One API request in RBAC terms; compares equal to a plain 4-tuple."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    resource: str
    namespace: str | None


@dataclass(frozen=True)
class Exchange:
    """One HTTP request as it arrived, for assertions on headers and bodies."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    authorization: str | None
    body: bytes


@dataclass
class Fault:
    """Answer ``status`` (after ``delay_s``) to requests whose path matches ``pattern``."""

    pattern: re.Pattern[str]
    status: int | None = None
    delay_s: float = 0.0
    verb: str | None = None
    # How many more requests it applies to; None: all of them.
    remaining: int | None = None
    hits: int = 0
    # Set for a hold: matching requests wait until it is set (see ``release``).
    gate: threading.Event | None = None

    def release(self) -> None:
        """Let the requests a hold keeps go on (and later ones through at once)."""
        if self.gate is not None:
            self.gate.set()

    def applies(self, path: str, verb: str) -> bool:
        if self.remaining == 0 or (self.verb and self.verb != verb):
            return False
        return bool(self.pattern.search(path))


@dataclass(frozen=True)
class Answer:
    """One request and the status it was answered with, whether or not the client was still there."""

    exchange: Exchange
    verb: str
    status: int


@dataclass(frozen=True)
class Target:
    """What a URL addresses."""

    rdef: ResourceDef
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class FakeApiServer:
    definitions: list[ResourceDef] = field(default_factory=default_definitions)
    host: str = HOST
    port: int = 0
    # Length of a watch whose request names no timeoutSeconds.
    default_watch_timeout_s: float = 30.0
    # 410 for a watch from a compacted resourceVersion: as an ERROR event in a
    # 200 stream (what kube-apiserver's watch cache does) or as an HTTP 410.
    gone_in_stream: bool = True

    def __post_init__(self) -> None:
        self.store = ObjectStore(self.definitions)
        self.requests: list[RecordedRequest] = []
        self.exchanges: list[Exchange] = []
        self.answers: list[Answer] = []
        self._faults: list[Fault] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> FakeApiServer:
        """Serve (again, on the same port after a stop). Blocks until bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._serve_forever, args=(ready,), name="fake-apiserver", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test API server did not start")
        failed = self._failure()
        if failed is not None:
            self._thread.join(5)
            self._thread = None
            raise failed
        return self

    def _failure(self) -> BaseException | None:
        # Set by the server thread; a method so the type checker does not
        # assume it is still the None assigned before the thread started.
        return self._startup_error

    def stop(self) -> None:
        """Close the port and drop every connection (open watches end abruptly)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        self._thread = None

    async def astart(self) -> FakeApiServer:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[None]:
        """Connection refused inside the block; back on the same port after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- knobs -------------------------------------------------------------

    def compact(self) -> int:
        """Forget history: a watch from an older resourceVersion now gets 410 Gone."""
        return self.store.compact()

    def expire_watches(self) -> int:
        """Open watches get an ERROR event with code 410 and end (e.g. after a compaction)."""
        return self.store.end_watches(EXPIRE)

    def close_watches(self) -> int:
        """Open watches end normally, as when the API server's watch cache restarts."""
        return self.store.end_watches(CLOSE)

    def fail(self, pattern: str, status: int, *, verb: str | None = None, times: int | None = None) -> Fault:
        """Answer ``status`` (with a Status body) to matching requests; ``times`` None: until cleared."""
        fault = Fault(re.compile(pattern), status=status, verb=verb, remaining=times)
        self._faults.append(fault)
        return fault

    def delay(
        self, pattern: str, seconds: float, *, verb: str | None = None, times: int | None = None
    ) -> Fault:
        """Hold matching requests ``seconds`` before answering them normally."""
        fault = Fault(re.compile(pattern), delay_s=seconds, verb=verb, remaining=times)
        self._faults.append(fault)
        return fault

    def hold(self, pattern: str, *, verb: str | None = None, times: int | None = None) -> Fault:
        """Keep matching requests waiting until ``release()``, then answer them normally.

        A client that gives up (or dies) meanwhile does not stop it: the
        request is still served on release, as a real API server applies a
        write whose client went away. ``hits`` says a request is being held.
        """
        fault = Fault(re.compile(pattern), verb=verb, remaining=times, gate=threading.Event())
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def register(self, rdef: ResourceDef) -> None:
        """Serve one more resource type (a CRD installed)."""
        self.store.register(rdef)

    def unregister(self, group: str, plural: str) -> None:
        """Stop serving a resource type (a CRD uninstalled): its URLs answer 404."""
        self.store.unregister(group, plural)

    def write_kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        namespace: str = "default",
        context: str = "readybot-test",
    ) -> Path:
        """A kubeconfig pointing at this server (no auth, or a bearer ``token`` it accepts)."""
        user: dict[str, Any] = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": user}],
            "contexts": [
                {"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def wait_for_watches(self, count: int, timeout_s: float = 5.0) -> None:
        """Block until ``count`` watches are open (a test's "the watcher is listening now")."""
        deadline = time.monotonic() + timeout_s
        while self.store.open_watches < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.store.open_watches} watch(es) open, expected {count}")
            time.sleep(0.01)

    # --- the server thread ---------------------------------------------------

    def _serve_forever(self, ready: threading.Event) -> None:
        # asyncio.run: at the end it cancels and awaits whatever handlers the
        # shutdown cut off (open watches), so nothing is left pending.
        try:
            asyncio.run(self._serve(ready))
        except BaseException as error:  # reported to start()
            self._startup_error = error
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: handlers still running (watches, delays) are cut
        # off, as when a real API server goes away.
        runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            self.port = int(runner.addresses[0][1])
            ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # --- request handling ----------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        exchange = Exchange(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Content-Type"),
            request.headers.get("Authorization"),
            body,
        )
        self.exchanges.append(exchange)
        discovery = self._discovery(request.path)
        if discovery is not None:
            return web.json_response(discovery)
        target = self._target(request.path)
        if isinstance(target, web.Response):
            return target
        verb = _verb(request.method, target, request.query)
        self.requests.append(
            RecordedRequest(verb, target.rdef.group, target.rdef.plural, _rbac_namespace(target))
        )
        response = await self._answer(request, verb, target, body)
        self.answers.append(Answer(exchange, verb, response.status))
        return response

    async def _answer(
        self, request: web.Request, verb: str, target: Target, body: bytes
    ) -> web.StreamResponse:
        for fault in list(self._faults):
            if fault.applies(request.path, verb):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.gate is not None:
                    # Polled, not awaited in a thread: a server stop cancels it cleanly.
                    while not fault.gate.is_set():  # noqa: ASYNC110 - a threading.Event
                        await asyncio.sleep(0.02)
                if fault.status is not None:
                    return _status(_fault_error(fault.status, verb, target))
        try:
            return await self._serve_verb(request, verb, target, body)
        except StatusError as error:
            return _status(error)

    async def _serve_verb(  # noqa: PLR0911 - one answer per verb
        self, request: web.Request, verb: str, target: Target, body: bytes
    ) -> web.StreamResponse:
        store, rdef = self.store, target.rdef
        if target.subresource is not None:
            # No subresources: the fixtures' CRDs have no status subresource.
            raise StatusError(404, "NotFound", "the server could not find the requested resource", {})
        if verb == "watch":
            return await self._watch(request, target)
        if verb == "list":
            labels, fields = _selectors(request.query)
            items, rv = store.list_objects(rdef, target.namespace, labels, fields)
            if rdef.builtin:
                for item in items:  # the real server omits them in lists of built-ins
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
            return web.json_response(
                {
                    "kind": rdef.list_kind,
                    "apiVersion": rdef.api_version(target.version),
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                }
            )
        if verb == "get":
            return web.json_response(store.get(rdef, target.namespace, _named(target)))
        if verb == "delete":
            gone = store.delete(rdef, target.namespace, _named(target))
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": target.name,
                        "group": rdef.group,
                        "kind": rdef.plural,
                        "uid": gone["metadata"]["uid"],
                    },
                }
            )
        payload = _json_body(body)
        if verb == "create":
            return web.json_response(
                store.create(rdef, target.namespace, _object(payload), target.version), status=201
            )
        if verb == "update":
            return web.json_response(
                store.replace(rdef, target.namespace, _named(target), _object(payload), target.version)
            )
        if verb == "patch":
            content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
            return web.json_response(
                store.patch(rdef, target.namespace, _named(target), payload, content_type, target.version)
            )
        raise StatusError(405, "MethodNotAllowed", f"{verb} is not supported by the test API server")

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        labels, fields = _selectors(request.query)
        timeout_s = float(request.query.get("timeoutSeconds") or self.default_watch_timeout_s)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        loop = asyncio.get_running_loop()
        try:
            backlog, subscription = self.store.subscribe(
                target.rdef, request.query.get("resourceVersion"), loop
            )
        except StatusError as error:
            if error.code != 410 or not self.gone_in_stream:
                raise
            response = await _open_stream(request)
            await _send(response, {"type": "ERROR", "object": error.body()})
            await response.write_eof()
            return response
        response = await _open_stream(request)
        # The highest resourceVersion this watcher has been brought up to.
        last_rv = 0
        try:
            for event in backlog:
                last_rv = await self._deliver(response, event, target, labels, fields, last_rv)
            deadline = loop.time() + timeout_s
            while (remaining := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(subscription.queue.get(), remaining)
                except TimeoutError:
                    break
                if item == CLOSE:
                    break
                if item == EXPIRE:
                    gone = StatusError(
                        410, "Expired", "The resourceVersion for the provided watch is too old."
                    )
                    await _send(response, {"type": "ERROR", "object": gone.body()})
                    bookmarks = False
                    break
                if isinstance(item, WatchEvent):
                    last_rv = await self._deliver(response, item, target, labels, fields, last_rv)
            if bookmarks:
                await self._bookmark(response, subscription.queue, target, labels, fields, last_rv)
        finally:
            self.store.unsubscribe(subscription)
        await response.write_eof()
        return response

    async def _deliver(
        self,
        response: web.StreamResponse,
        event: WatchEvent,
        target: Target,
        labels: Any,
        fields: Any,
        last_rv: int,
    ) -> int:
        seen = event.for_watcher(target.namespace, labels, fields)
        if seen is not None:
            await _send(response, seen)
        return max(last_rv, event.resource_version)

    async def _bookmark(
        self,
        response: web.StreamResponse,
        queue: asyncio.Queue[WatchEvent | str],
        target: Target,
        labels: Any,
        fields: Any,
        last_rv: int,
    ) -> None:
        """End with a BOOKMARK: "you have seen everything up to here"."""
        current = self.store.resource_version
        # Events up to ``current`` were handed to this loop before we read it:
        # one turn of the loop puts them in the queue; deliver them first.
        await asyncio.sleep(0)
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, WatchEvent):
                last_rv = await self._deliver(response, item, target, labels, fields, last_rv)
        bookmark = {
            "kind": target.rdef.kind,
            "apiVersion": target.rdef.api_version(target.version),
            "metadata": {"resourceVersion": str(max(current, last_rv))},
        }
        await _send(response, {"type": "BOOKMARK", "object": bookmark})

    # --- URL parsing -----------------------------------------------------------

    def _discovery(self, path: str) -> dict[str, Any] | None:  # noqa: PLR0911 - one per URL
        parts = [p for p in path.split("/") if p]
        definitions = self.store.definitions()
        if parts == ["version"]:
            return dict(VERSION_INFO)
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": _groups(definitions)}
        if len(parts) == 2 and parts[0] == "apis":
            group = next((g for g in _groups(definitions) if g["name"] == parts[1]), None)
            return {"kind": "APIGroup", "apiVersion": "v1", **group} if group else None
        group_version = None
        if parts == ["api", "v1"]:
            group_version = ("", "v1")
        elif len(parts) == 3 and parts[0] == "apis":
            group_version = (parts[1], parts[2])
        if group_version is None:
            return None
        resources = [
            d
            for d in definitions
            if (d.group, group_version[1]) == group_version and group_version[1] in d.versions
        ]
        if not resources:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "/".join(p for p in group_version if p),
            "resources": [
                {
                    "name": d.plural,
                    "singularName": d.singular,
                    "namespaced": d.namespaced,
                    "kind": d.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    **({"shortNames": list(d.short_names)} if d.short_names else {}),
                }
                for d in resources
            ],
        }

    def _target(self, path: str) -> Target | web.Response:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return _page_not_found()
        served = [d for d in self.store.definitions() if d.group == group and version in d.versions]
        if not served:
            # An unknown group/version: the real server's plain-text 404.
            return _page_not_found()
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return _status(
                StatusError(404, "NotFound", "the server could not find the requested resource", {})
            )
        rdef = next((d for d in served if d.plural == rest[0]), None)
        if rdef is None or (namespace is not None and not rdef.namespaced):
            return _status(
                StatusError(404, "NotFound", "the server could not find the requested resource", {})
            )
        name = rest[1] if len(rest) > 1 else None
        if rdef.namespaced and namespace is None and name is not None:
            return _status(
                StatusError(404, "NotFound", "the server could not find the requested resource", {})
            )
        return Target(rdef, version, namespace, name, rest[2] if len(rest) > 2 else None)


def _verb(method: str, target: Target, query: Any) -> str:
    """The RBAC verb of a request, as kube-apiserver's RequestInfo names it."""
    if method == "GET":
        if target.name is not None:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    named = target.name is not None
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())


def _rbac_namespace(target: Target) -> str | None:
    # RequestInfo: for /api/v1/namespaces/<name> the namespace is the name.
    if target.rdef.plural == "namespaces" and not target.rdef.group:
        return target.name
    return target.namespace


def _named(target: Target) -> str:
    if target.name is None:
        raise StatusError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    return target.name


def _selectors(query: Any) -> tuple[Any, Any]:
    try:
        return parse_label_selector(query.get("labelSelector")), parse_field_selector(
            query.get("fieldSelector")
        )
    except SelectorError as error:
        raise StatusError(400, "BadRequest", str(error)) from None


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise StatusError(400, "BadRequest", "the request body is not valid JSON") from None


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise StatusError(400, "BadRequest", "the request body must be a JSON object")
    return payload


def _fault_error(status: int, verb: str, target: Target) -> StatusError:
    rdef = target.rdef
    if status == 403:
        where = f' in the namespace "{target.namespace}"' if target.namespace else " at the cluster scope"
        subject = f'{rdef.resource} "{target.name}"' if target.name else rdef.resource
        return StatusError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{TEST_USER}" cannot {verb} resource "{rdef.plural}" '
            f'in API group "{rdef.group}"{where}',
            {"name": target.name, "group": rdef.group, "kind": rdef.plural}
            if target.name
            else {"group": rdef.group, "kind": rdef.plural},
        )
    reasons = {
        401: "Unauthorized",
        409: "Conflict",
        410: "Expired",
        429: "TooManyRequests",
        503: "ServiceUnavailable",
    }
    return StatusError(status, reasons.get(status, "InternalError"), f"injected fault {status}")


def _groups(definitions: list[ResourceDef]) -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for d in definitions:
        if d.group:
            known = groups.setdefault(d.group, [])
            known.extend(v for v in d.versions if v not in known)
    return [
        {
            "name": name,
            "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
        }
        for name, versions in sorted(groups.items())
    ]


def _status(error: StatusError) -> web.Response:
    return web.json_response(error.body(), status=error.code)


def _page_not_found() -> web.Response:
    return web.Response(status=404, text="404 page not found\n", content_type="text/plain")


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(json.dumps(event).encode() + b"\n")
