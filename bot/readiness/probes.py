"""Running the plan's probes: concurrently, each criterion within a timeout, errors as "unknown".

``run_plan`` probes every criterion at once. Requests are shared within one
run (``RunCache``): three coverage probes list the namespaces once, every
``prometheus_rule`` probe reads the rules once. A criterion that does not
finish within ``timeout_s`` is unknown ("no answer within …"); an error that
means "could not look" (cluster unreachable, forbidden, missing CRD,
Prometheus down) is unknown with the error's message; only a real negative
finding is a fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bot.errors import UserError
from bot.readiness import kube_probes, monitoring_probes, self_probes
from bot.readiness.causes import cause_of, general
from bot.readiness.results import Mark, ProbeResult, all_of, any_of
from config.readiness_plan import AllProbe, AnyProbe, ManualProbe, Plan, Probe

if TYPE_CHECKING:
    from bot.alertmanager.api import AlertmanagerApi
    from bot.kube.client import KubeApi
    from bot.readiness.prometheus import PrometheusApi
    from bot.readiness.self_probes import DrillHistory, WatchdogSource

log = logging.getLogger(__name__)

T = TypeVar("T")


class RunCache:
    """Shares the answer to one request among the probes of a run (also while it is in flight)."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:

            async def run() -> T:
                return await fetch()

            task = asyncio.create_task(run())
            self._tasks[key] = task
        # Shielded: one probe timing out must not cancel the request for the others.
        result: T = await asyncio.shield(task)
        return result

    async def close(self) -> None:
        """Cancel what is still running and collect every outcome (no "never retrieved" warnings)."""
        for task in self._tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


class AlertmanagerStatus(Protocol):
    async def status(self) -> dict[str, Any]: ...


@dataclass
class ProbeEnv:
    """What the probes may reach. A missing part makes its probes unknown, saying what to configure."""

    kube: KubeApi | None = None
    prometheus: PrometheusApi | None = None
    alertmanager: AlertmanagerStatus | AlertmanagerApi | None = None
    watchdog: WatchdogSource | None = None
    # Argo CD Application names gated by readybot; None: not known here.
    gated_apps: frozenset[str] | None = None
    # The last passed restore drill (bot.drills.service); None: drills are off here.
    drills: DrillHistory | None = None
    clock: Callable[[], float] = time.time
    cache: RunCache = field(default_factory=RunCache)
    # Set when the cluster did not answer the run's first request: every
    # cluster probe is then unknown at once instead of timing out one by one.
    kube_unreachable: str | None = None


@dataclass(frozen=True, slots=True)
class CriterionOutcome:
    criterion_id: str
    result: ProbeResult
    seconds: float


async def run_plan(plan: Plan, env: ProbeEnv, *, timeout_s: float) -> list[CriterionOutcome]:
    """Probe every criterion of the plan concurrently; results in plan order."""
    criteria = [criterion for _, _, criterion in plan.criteria()]
    if env.kube is not None and any(_needs_kube(c.probe) for c in criteria):
        await _preflight(env, timeout_s)
    try:
        return list(await asyncio.gather(*(_run_criterion(c.id, c.probe, env, timeout_s) for c in criteria)))
    finally:
        await env.cache.close()


async def _preflight(env: ProbeEnv, timeout_s: float) -> None:
    from bot.kube.errors import KubeError

    assert env.kube is not None
    try:
        async with asyncio.timeout(timeout_s):
            await env.kube.server_version()
    except KubeError as error:
        env.kube_unreachable = str(error)
    except TimeoutError:
        env.kube_unreachable = f"cluster unreachable: no answer within {timeout_s:g} s"


async def _run_criterion(
    criterion_id: str, probe: Probe, env: ProbeEnv, timeout_s: float
) -> CriterionOutcome:
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        async with asyncio.timeout(timeout_s):
            result = await run_probe(probe, env)
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s"
        result = ProbeResult.unknown(reason, describe_probe(probe), [general(reason)])
    except Exception as error:
        # A probe bug must cost one criterion, not the scorecard.
        log.exception("readiness: the probe of %s failed", criterion_id)
        result = ProbeResult.unknown(
            f"the probe failed ({type(error).__name__})", f"criterion {criterion_id}"
        )
    return CriterionOutcome(criterion_id, result, loop.time() - began)


async def run_probe(probe: Probe, env: ProbeEnv) -> ProbeResult:
    """One probe (composites run their parts concurrently)."""
    if isinstance(probe, ManualProbe):
        return ProbeResult(Mark.MANUAL, probe.evidence, "confirmed by a person")
    if isinstance(probe, AllProbe | AnyProbe):
        parts = await asyncio.gather(*(run_probe(inner, env) for inner in probe.probes))
        return all_of(parts) if isinstance(probe, AllProbe) else any_of(parts)
    try:
        if kube_probes.handles(probe):
            return await kube_probes.run(probe, env)
        if monitoring_probes.handles(probe):
            return await monitoring_probes.run(probe, env)
        return await self_probes.run(probe, env)
    except UserError as error:
        # Every "could not look" error (Kubernetes, Prometheus, Alertmanager)
        # is a UserError whose message is safe to show.
        return ProbeResult.unknown(str(error), describe_probe(probe), [cause_of(error)])


def describe_probe(probe: Probe) -> str:
    """What the probe checks, in one line (the "expected" of its evidence)."""
    if isinstance(probe, ManualProbe):
        return "confirmed by a person"
    if isinstance(probe, AllProbe):
        return "; ".join(describe_probe(inner) for inner in probe.probes)
    if isinstance(probe, AnyProbe):
        return " — or — ".join(describe_probe(inner) for inner in probe.probes)
    if kube_probes.handles(probe):
        return kube_probes.describe(probe)
    if monitoring_probes.handles(probe):
        return monitoring_probes.describe(probe)
    return self_probes.describe(probe)


def _needs_kube(probe: Probe) -> bool:
    if isinstance(probe, AllProbe | AnyProbe):
        return any(_needs_kube(inner) for inner in probe.probes)
    return kube_probes.handles(probe)


def leaf_probes(probe: Probe) -> Sequence[Probe]:
    """The probes inside composites, flattened (for explain)."""
    if isinstance(probe, AllProbe | AnyProbe):
        return [leaf for inner in probe.probes for leaf in leaf_probes(inner)]
    return [probe]
