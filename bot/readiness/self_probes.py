"""Probes of readybot's own state: the dead-man's switch hears the Watchdog, and the gates are set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from bot.readiness.causes import general
from bot.readiness.results import ProbeResult
from config.durations import format_duration
from config.readiness_plan import Probe, ReadybotProbe

if TYPE_CHECKING:
    from bot.deadman.switch import SourceView
    from bot.readiness.probes import ProbeEnv
    from config.deadman import DeadmanSettings


class WatchdogSource(Protocol):
    """What ``bot.deadman.switch.DeadmansSwitch`` offers: its settings and each source's state."""

    settings: DeadmanSettings

    async def status(self) -> Sequence[SourceView]: ...


def describe(probe: Probe) -> str:
    assert isinstance(probe, ReadybotProbe)
    if probe.check == "watchdog":
        return "readybot's dead-man's switch heard a Watchdog heartbeat within its threshold"
    return f"readybot gates the syncs of {', '.join(probe.apps)} (approvals.apps)"


async def run(probe: Probe, env: ProbeEnv) -> ProbeResult:
    assert isinstance(probe, ReadybotProbe)
    expected = describe(probe)
    if probe.check == "watchdog":
        return await _watchdog(env, expected)
    return _gates(probe, env, expected)


async def _watchdog(env: ProbeEnv, expected: str) -> ProbeResult:
    switch = env.watchdog
    if switch is None:
        return ProbeResult.unknown("only the running bot knows its Watchdog heartbeats", expected)
    if not switch.settings.enabled:
        reason = "the dead-man's switch is off (deadman.enabled)"
        return ProbeResult.unknown(reason, expected, [general(reason)])
    views = await switch.status()
    if not views:
        return ProbeResult.failed("no Watchdog heartbeat received yet", expected)
    now = env.clock()
    threshold = switch.settings.threshold_s
    fresh = [
        view
        for view in views
        if view.state.value == "up" and view.last_seen is not None and now - view.last_seen <= threshold
    ]
    described = "; ".join(
        f"{view.source}: {view.state.value}, last heartbeat "
        + ("never" if view.last_seen is None else f"{format_duration(now - view.last_seen)} ago")
        for view in (fresh or views)
    )
    return ProbeResult.passed(described, expected) if fresh else ProbeResult.failed(described, expected)


def _gates(probe: ReadybotProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    gated = env.gated_apps
    if gated is None:
        return ProbeResult.unknown("the approval gates are not known here", expected)
    missing = [app for app in probe.apps if app not in gated]
    if missing:
        return ProbeResult.failed(f"not gated: {', '.join(missing)}", expected)
    return ProbeResult.passed(f"gated: {', '.join(probe.apps)}", expected)
