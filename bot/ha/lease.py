"""The Lease through the official client's ``CoordinationV1Api``: get, create, conditional replace.

Every write carries the resourceVersion that was read, so of two replicas
writing the same read, one gets 409 Conflict (optimistic concurrency, as
client-go's leader election). Calls run in one thread of their own with a
time-out each, so a hung API server delays only the election, which then
steps down by its renew deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from kubernetes.client import ApiClient, CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from bot.ha.election import LeaseRecord
from bot.kube.client import load_configuration
from config.ha import HaSettings
from config.kubernetes import KubernetesSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseConflict(Exception):
    """Someone wrote the Lease since we read it (409), or created it first."""


class LeaseUnavailable(Exception):
    """The API server could not be asked or refused (unreachable, time-out, 403, 5xx)."""


@dataclass(frozen=True)
class LeaseRead:
    record: LeaseRecord
    resource_version: str


def to_record(lease: V1Lease) -> LeaseRecord:
    """The election's view of a ``V1Lease`` (missing fields read as a released lease)."""
    spec = lease.spec or V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or "",
        duration_s=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
    )


def to_lease(name: str, namespace: str, record: LeaseRecord, resource_version: str | None) -> V1Lease:
    """The ``V1Lease`` body of a write; with the read resourceVersion for a conditional replace."""
    return V1Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=V1ObjectMeta(name=name, namespace=namespace, resource_version=resource_version),
        spec=V1LeaseSpec(
            holder_identity=record.holder,
            lease_duration_seconds=record.duration_s,
            acquire_time=record.acquire_time,
            renew_time=record.renew_time,
            lease_transitions=record.transitions,
        ),
    )


class KubeLeases:
    """The one Lease of the election, read and written with a bounded time-out per call."""

    def __init__(self, api_client: ApiClient, ha: HaSettings, *, timeout_s: float) -> None:
        self._client = api_client
        self._api = CoordinationV1Api(api_client)
        self._name = ha.lease_name
        self._namespace = ha.namespace
        self._timeout_s = timeout_s
        # One thread: the election makes one call at a time, and a call that
        # hangs past its time-out cannot take threads from anyone else.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    @classmethod
    def from_settings(cls, kubernetes: KubernetesSettings, ha: HaSettings) -> KubeLeases:
        """Connect as the Kubernetes settings say (blocking: reads the kubeconfig or service account)."""
        # A renewal that takes half the deadline has failed: try again instead.
        timeout = min(kubernetes.request_timeout_s, ha.renew_deadline_s / 2)
        return cls(ApiClient(load_configuration(kubernetes)), ha, timeout_s=timeout)

    async def get(self) -> LeaseRead | None:
        """The Lease, or None when there is none."""
        try:
            lease = await self._run(
                lambda: self._api.read_namespaced_lease(
                    self._name, self._namespace, _request_timeout=self._timeout_s
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise _unavailable("read", error) from None
        return _read(lease)

    async def create(self, record: LeaseRecord) -> LeaseRead:
        """Create the Lease; ``LeaseConflict`` when another replica created it first."""
        body = to_lease(self._name, self._namespace, record, None)
        return await self._write(
            "create",
            lambda: self._api.create_namespaced_lease(
                self._namespace, body, _request_timeout=self._timeout_s
            ),
        )

    async def replace(self, record: LeaseRecord, resource_version: str) -> LeaseRead:
        """Replace the Lease if it is still at ``resource_version``; ``LeaseConflict`` if not."""
        body = to_lease(self._name, self._namespace, record, resource_version)
        return await self._write(
            "update",
            lambda: self._api.replace_namespaced_lease(
                self._name, self._namespace, body, _request_timeout=self._timeout_s
            ),
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()  # type: ignore[no-untyped-call]

    async def _write(self, verb: str, call: Callable[[], V1Lease]) -> LeaseRead:
        try:
            lease = await self._run(call)
        except ApiException as error:
            if error.status == 409:
                raise LeaseConflict(f"{verb}: the Lease changed since it was read") from None
            raise _unavailable(verb, error) from None
        return _read(lease)

    async def _run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except (HTTPError, OSError, TimeoutError) as error:
            raise LeaseUnavailable(f"API server unreachable ({type(error).__name__})") from None


def _read(lease: V1Lease) -> LeaseRead:
    metadata = lease.metadata or V1ObjectMeta()
    return LeaseRead(to_record(lease), str(metadata.resource_version or ""))


def _unavailable(verb: str, error: ApiException) -> LeaseUnavailable:
    # The status and reason only: the body may echo request details.
    return LeaseUnavailable(f"{verb} of the Lease refused: {error.status} {error.reason}")
