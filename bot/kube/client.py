"""``KubeApi``: an async facade over the official, synchronous ``kubernetes`` client.

Why this shape:

- The official client blocks. Every call runs in a worker thread with a
  timeout on the socket (``_request_timeout``) and a slightly longer one on
  the awaiting side, so the event loop never blocks and a caller never hangs.
  The threads are KubeApi's own (``max_concurrent_requests``), not the
  loop's default executor: a cluster that times out cannot starve other
  ``to_thread`` users, and they cannot starve us.
- It speaks plain JSON through ``ApiClient.param_serialize``/``call_api``
  (the client's own transport, TLS and token refresh) instead of the typed
  ``*Api`` classes: every kind, custom or built-in, comes back as the dict the
  API server sent, and the content type of each write is ours to choose
  (merge-patch is ``application/merge-patch+json``, always).
- Each ``KubeApi`` builds its own ``Configuration`` and ``ApiClient``; the
  client's global default configuration is never touched, so several
  instances (tests, several clusters) coexist.
- urllib3 retries are off: one attempt, bounded by ``request_timeout_s``.
  Retrying is the caller's decision (the watch loop backs off; a chat command
  answers "cluster unreachable").
- Errors become the typed ``bot.kube.errors`` whose messages are safe to show.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, load_incluster_config, load_kube_config

from bot.errors import ConfigError
from bot.kube.errors import (
    AlreadyExists,
    ClusterUnreachable,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    MissingCRD,
    NotFound,
    Operation,
    Unauthorized,
)
from bot.kube.resources import (
    CONFIGMAPS,
    CRON_JOBS,
    DAEMON_SETS,
    DEPLOYMENTS,
    LIMIT_RANGES,
    NAMESPACES,
    NETWORK_POLICIES,
    RESOURCE_QUOTAS,
    STATEFUL_SETS,
    ResourceType,
)

if TYPE_CHECKING:
    from config.kubernetes import KubernetesSettings

log = logging.getLogger(__name__)

# The kubernetes package ships py.typed but leaves many functions unannotated;
# the few calls to those carry "type: ignore[no-untyped-call]".

KubeObject = dict[str, Any]
T = TypeVar("T")

MERGE_PATCH: Final = "application/merge-patch+json"
JSON: Final = "application/json"
# The awaiting side gives the thread this much longer than the socket
# timeout: DNS resolution is not bounded by urllib3's timeouts.
_AWAIT_GRACE_S: Final = 2.0
_SERVICE_ACCOUNT_TOKEN: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Longest server message quoted in an Invalid error.
_MESSAGE_MAX: Final = 300
# Object names and namespaces are DNS names (plus ":" for RBAC objects). A
# name from chat is checked against this before it becomes a URL segment, so
# "../secrets" can never address another resource.
_NAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True)
class ResourceList:
    """A list answer: the items and the resourceVersion to watch from."""

    items: list[KubeObject]
    resource_version: str


class KubeConfigError(ConfigError):
    """The cluster connection cannot even be set up (no kubeconfig, unknown context, …)."""


def running_in_cluster(environ: dict[str, str] | None = None) -> bool:
    """True in a pod: the service host variable and the service account token are there."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and _SERVICE_ACCOUNT_TOKEN.is_file()


def load_configuration(settings: KubernetesSettings) -> Configuration:
    """A fresh client ``Configuration`` from the settings (blocking: reads files).

    Raises ``KubeConfigError`` with a one-line reason; the reason names files
    and contexts, never credentials.
    """
    configuration = Configuration()
    in_cluster = settings.in_cluster if settings.in_cluster is not None else running_in_cluster()
    try:
        if in_cluster:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context,
                client_configuration=configuration,
                # Never write refreshed credentials back into the operator's file.
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError) as error:
        source = "the in-cluster service account" if in_cluster else "the kubeconfig"
        raise KubeConfigError([f"kubernetes: cannot load {source}: {_first_line(error)}"]) from None
    # One attempt per call, bounded by our timeout; see the module docstring.
    configuration.retries = False
    return configuration


class KubeApi:
    """Typed, async access to the Kubernetes API. Every method returns plain dicts.

    Methods take the resource type as (group, version, plural); the core
    group is "". ``namespace=None`` means cluster-scoped objects, or all
    namespaces for a list of namespaced ones.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        request_timeout_s: float = 10.0,
        watch_timeout_s: int = 30,
        watch_backoff_max_s: float = 30.0,
        max_concurrent_requests: int = 8,
    ) -> None:
        self._client = api_client
        self.request_timeout_s = request_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.watch_backoff_max_s = watch_backoff_max_s
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent_requests, thread_name_prefix="kube-api"
        )
        self._closed = False

    @classmethod
    def from_settings(cls, settings: KubernetesSettings) -> KubeApi:
        """Connect as the settings say (blocking: reads the kubeconfig or service account files)."""
        configuration = load_configuration(settings)
        # Watches hold a connection each; leave room for them beside the request threads.
        configuration.connection_pool_maxsize = settings.max_concurrent_requests + 16
        return cls(
            ApiClient(configuration),
            request_timeout_s=settings.request_timeout_s,
            watch_timeout_s=settings.watch_timeout_s,
            watch_backoff_max_s=settings.watch_backoff_max_s,
            max_concurrent_requests=settings.max_concurrent_requests,
        )

    async def close(self) -> None:
        """Stop the request threads and close pooled connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()  # type: ignore[no-untyped-call]

    # --- generic access by (group, version, plural) ---------------------

    async def get_resource(
        self, group: str, version: str, plural: str, name: str, *, namespace: str | None = None
    ) -> KubeObject:
        """GET one object. ``NotFound`` if it does not exist, ``MissingCRD`` if the type does not."""
        op = Operation("get", group, version, plural, namespace, name)
        return await self._call(op, "GET", _path(op))

    async def list_resource(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ResourceList:
        """LIST objects (all namespaces when ``namespace`` is None), with the list's resourceVersion."""
        op = Operation("list", group, version, plural, namespace)
        query = _selectors(label_selector, field_selector)
        answer = await self._call(op, "GET", _path(op), query=query)
        items = answer.get("items") or []
        return ResourceList(
            items=items, resource_version=str(answer.get("metadata", {}).get("resourceVersion", ""))
        )

    async def create_resource(
        self, group: str, version: str, plural: str, body: KubeObject, *, namespace: str | None = None
    ) -> KubeObject:
        """POST a new object; ``AlreadyExists`` if the name is taken. Returns the stored object."""
        name = body.get("metadata", {}).get("name")
        op = Operation("create", group, version, plural, namespace, name)
        return await self._call(
            op, "POST", _path(Operation("create", group, version, plural, namespace)), body=body
        )

    async def replace_resource(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        body: KubeObject,
        *,
        namespace: str | None = None,
    ) -> KubeObject:
        """PUT the whole object. ``body.metadata.resourceVersion`` makes it conditional:
        ``Conflict`` if the object changed since it was read.
        """
        op = Operation("update", group, version, plural, namespace, name)
        return await self._call(op, "PUT", _path(op), body=body)

    async def merge_patch_resource(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        patch: KubeObject,
        *,
        namespace: str | None = None,
    ) -> KubeObject:
        """PATCH with a JSON merge patch (RFC 7386: ``None`` deletes a key, lists are replaced whole).

        Put ``metadata.resourceVersion`` in the patch to make it conditional
        (``Conflict`` if stale).
        """
        op = Operation("patch", group, version, plural, namespace, name)
        return await self._call(op, "PATCH", _path(op), body=patch, content_type=MERGE_PATCH)

    async def delete_resource(
        self, group: str, version: str, plural: str, name: str, *, namespace: str | None = None
    ) -> None:
        """DELETE one object; ``NotFound`` if it is already gone."""
        op = Operation("delete", group, version, plural, namespace, name)
        await self._call(op, "DELETE", _path(op))

    # --- namespaced custom objects, in the official client's argument order --

    async def get_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> KubeObject:
        return await self.get_resource(group, version, plural, name, namespace=namespace)

    async def list_custom_objects(
        self,
        group: str,
        version: str,
        namespace: str | None,
        plural: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[KubeObject]:
        """The items only; use ``list_resource`` for the resourceVersion too."""
        listing = await self.list_resource(
            group,
            version,
            plural,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return listing.items

    async def create_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: KubeObject
    ) -> KubeObject:
        return await self.create_resource(group, version, plural, body, namespace=namespace)

    async def replace_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: KubeObject
    ) -> KubeObject:
        return await self.replace_resource(group, version, plural, name, body, namespace=namespace)

    async def patch_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, patch: KubeObject
    ) -> KubeObject:
        """A merge patch (``application/merge-patch+json``), as ``merge_patch_resource``."""
        return await self.merge_patch_resource(group, version, plural, name, patch, namespace=namespace)

    async def delete_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> None:
        await self.delete_resource(group, version, plural, name, namespace=namespace)

    # --- the built-in kinds the features read ----------------------------

    async def get_config_map(self, namespace: str, name: str) -> KubeObject:
        return await self.get_resource(*CONFIGMAPS, name, namespace=namespace)

    async def list_namespaces(self, *, label_selector: str | None = None) -> list[KubeObject]:
        return (await self.list_resource(*NAMESPACES, label_selector=label_selector)).items

    async def get_deployment(self, namespace: str, name: str) -> KubeObject:
        return await self.get_resource(*DEPLOYMENTS, name, namespace=namespace)

    async def get_daemon_set(self, namespace: str, name: str) -> KubeObject:
        return await self.get_resource(*DAEMON_SETS, name, namespace=namespace)

    async def get_stateful_set(self, namespace: str, name: str) -> KubeObject:
        return await self.get_resource(*STATEFUL_SETS, name, namespace=namespace)

    async def get_cron_job(self, namespace: str, name: str) -> KubeObject:
        return await self.get_resource(*CRON_JOBS, name, namespace=namespace)

    async def list_network_policies(self, namespace: str | None = None) -> list[KubeObject]:
        return (await self.list_resource(*NETWORK_POLICIES, namespace=namespace)).items

    async def list_resource_quotas(self, namespace: str | None = None) -> list[KubeObject]:
        return (await self.list_resource(*RESOURCE_QUOTAS, namespace=namespace)).items

    async def list_limit_ranges(self, namespace: str | None = None) -> list[KubeObject]:
        return (await self.list_resource(*LIMIT_RANGES, namespace=namespace)).items

    async def server_version(self) -> KubeObject:
        """``GET /version`` (gitVersion, platform): a cheap "is the cluster there" probe."""
        op = Operation("get", "", "", "version")
        return await self._call(op, "GET", "/version")

    # --- for the watch loop (bot.kube.watch) -----------------------------

    def open_watch(
        self,
        resource: ResourceType,
        namespace: str | None,
        *,
        resource_version: str | None,
        timeout_s: int,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """BLOCKING: start one watch request and return the unread streaming response.

        For a worker thread only. The server ends the stream after
        ``timeout_s``; the read timeout is longer, so a silently dead
        connection is noticed too. Non-2xx answers raise the typed errors
        (``Gone`` for 410).
        """
        op = Operation("watch", *resource, namespace=namespace)
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_s))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        query += _selectors(label_selector, field_selector)
        timeout = (self.request_timeout_s, timeout_s + self.request_timeout_s)
        response = self._send(op, "GET", resource.path(namespace), query, None, JSON, timeout)
        if not 200 <= response.status <= 299:
            data = _read_quietly(response)
            raise error_for_status(response.status, data, op)
        raw: urllib3.BaseHTTPResponse = response.response
        return raw

    # --- plumbing ---------------------------------------------------------

    async def _call(
        self,
        op: Operation,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: KubeObject | None = None,
        content_type: str = JSON,
    ) -> KubeObject:
        if self._closed:
            raise ClusterUnreachable("the Kubernetes client is closed")
        job = functools.partial(self._request_blocking, op, method, path, query or [], body, content_type)
        return await self._in_thread(job)

    async def _in_thread(self, job: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.request_timeout_s + _AWAIT_GRACE_S):
                return await loop.run_in_executor(self._executor, job)
        except TimeoutError:
            # The thread finishes on its own (socket timeout); we stop waiting.
            raise ClusterUnreachable(f"no answer within {self.request_timeout_s:g} s") from None
        except RuntimeError:
            # The executor was shut down under us (close() during a call).
            if self._closed:
                raise ClusterUnreachable("the Kubernetes client is closed") from None
            raise

    def _request_blocking(
        self,
        op: Operation,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: KubeObject | None,
        content_type: str,
    ) -> KubeObject:
        response = self._send(op, method, path, query, body, content_type, self.request_timeout_s)
        data = _read_quietly(response, op, self.request_timeout_s)
        if not 200 <= response.status <= 299:
            raise error_for_status(response.status, data, op)
        if not data:
            return {}
        try:
            decoded = json.loads(data)
        except ValueError:
            raise ClusterUnreachable("the API server sent an answer that is not JSON") from None
        if not isinstance(decoded, dict):
            raise ClusterUnreachable("the API server sent an unexpected answer")
        return decoded

    def _send(
        self,
        op: Operation,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: KubeObject | None,
        content_type: str,
        timeout: float | tuple[float, float],
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            # param_serialize adds the bearer token (refreshing it through the
            # configuration's hook: exec plugins, rotated service account tokens).
            method, url, header_params, serialized, post_params = self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=query,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            return self._client.call_api(
                method,
                url,
                header_params=header_params,
                body=serialized,
                post_params=post_params,
                _request_timeout=timeout,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException) as error:
            raise translate_error(error, op, _read_timeout(timeout)) from None


def translate_error(error: BaseException, op: Operation, timeout_s: float) -> KubeError:
    """A transport or API exception as a typed error whose message is safe to show.

    The message is built from ``op`` and a fixed reason; the exception's own
    text (which names the URL) is only logged at debug level, by type.
    """
    if isinstance(error, KubeError):
        return error
    log.debug("kubernetes %s %s%s failed: %s", op.verb, op.target, op.where, type(error).__name__)
    if isinstance(error, ApiException):
        if error.status:
            body = error.body.encode() if isinstance(error.body, str) else b""
            return error_for_status(int(error.status), body, op)
        # Status 0: the client failed before an answer (TLS, unsupported body).
        return ClusterUnreachable("TLS error" if "SSL" in str(error.reason) else "request failed")
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return translate_error(error.reason, op, timeout_s)
    if isinstance(error, ConfigException):
        return Unauthorized("could not obtain credentials for the cluster (kubeconfig auth provider failed)")
    return ClusterUnreachable(_transport_reason(error, timeout_s))


def _transport_reason(error: BaseException, timeout_s: float) -> str:  # noqa: PLR0911 - one reason per class
    # NewConnectionError is a ConnectTimeoutError subclass: test it first.
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        return "cannot resolve the API server's host name"
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        refused = isinstance(error.__cause__ or error.__context__, ConnectionRefusedError)
        return "connection refused" if refused else "cannot connect"
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection within {timeout_s:g} s"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(error, urllib3.exceptions.SSLError):
        return "TLS error"
    if isinstance(error, urllib3.exceptions.ProtocolError | ConnectionError):
        return "connection lost"
    return "network error"


def error_for_status(status: int, body: bytes, op: Operation) -> KubeError:  # noqa: PLR0911 - one per status
    """The typed error for an HTTP error answer to ``op``."""
    details = _status_details(body)
    if status == 401:
        return Unauthorized("the cluster refused the bot's credentials (401)", status=status)
    if status == 403:
        return Forbidden(op)
    if status == 404:
        return _not_found(op, details)
    if status == 409:
        if op.verb == "create":
            return AlreadyExists(f"{op.target} already exists{op.where}", status=status)
        return Conflict(
            f"{op.target}{op.where} was changed meanwhile (stale resourceVersion); read it again and retry",
            status=status,
        )
    if status == 410:
        return Gone("the resourceVersion is too old (410 Gone); relist", status=status)
    if status == 429:
        return ClusterUnreachable("the API server is overloaded (429)", status=status)
    if status >= 500:
        return ClusterUnreachable(f"API server error {status}", status=status)
    if status in (400, 415, 422):
        message = str(details.get("message", ""))[:_MESSAGE_MAX]
        suffix = f": {message}" if message else ""
        return Invalid(f"the cluster refused to {op.verb} {op.target}{suffix}", status=status)
    return KubeError(f"unexpected answer {status} to {op.verb} {op.target}{op.where}", status=status)


def _not_found(op: Operation, status_body: dict[str, Any]) -> KubeError:
    """404 means a missing object, a missing namespace, or a missing resource type.

    The API server names the object in ``details`` for the first two; for an
    unknown resource it answers with no details (or plain "404 page not
    found" for an unknown group/version): that is a missing CRD.
    """
    details = status_body.get("details") or {}
    missing = details.get("name") if isinstance(details, dict) else None
    if op.verb not in ("list", "watch") and missing:
        if details.get("kind") == "namespaces" and op.plural != "namespaces":
            return NotFound(f"namespace {missing} not found", status=404)
        return NotFound(f"{op.target} not found{op.where}", status=404)
    if op.plural == "version":
        return ClusterUnreachable("the server does not look like a Kubernetes API server", status=404)
    return MissingCRD(
        f"{op.resource} ({op.group or 'core'}/{op.version}) is not served by the cluster: "
        "is its CRD installed?",
        group=op.group,
        resource=op.resource,
        status=404,
    )


def _status_details(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _read_quietly(response: Any, op: Operation | None = None, timeout_s: float = 0.0) -> bytes:
    """The whole body; a connection dropped mid-body is an unreachable cluster."""
    try:
        data = response.read()
    except (urllib3.exceptions.HTTPError, OSError) as error:
        if op is None:
            return b""
        raise translate_error(error, op, timeout_s) from None
    return data if isinstance(data, bytes) else b""


def _path(op: Operation) -> str:
    for what, value in (("object name", op.name), ("namespace", op.namespace)):
        if value is not None and (not _NAME.fullmatch(value) or ".." in value):
            raise Invalid(f"not a valid Kubernetes {what}")
    return ResourceType(op.group, op.version, op.plural).path(op.namespace, op.name)


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def _read_timeout(timeout: float | tuple[float, float]) -> float:
    return timeout[1] if isinstance(timeout, tuple) else timeout


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
