"""The demo's scripted traffic: alerts, a Falco burst, a failed backup, the Watchdog; and the second channel.

What Prometheus, falcosidekick and Velero would send, through the same
doors as in a real set-up: alerts go to Alertmanager's API when it runs
(it then notifies the bot) or, without it, to the bot's
``/hooks/alertmanager`` as Alertmanager's webhook; Falco events to
``/hooks/falco``; Velero's objects change in the Kubernetes API stand-in.
``Sink`` is the dead-man's switch's second channel (and Alertmanager's
second receiver): a local HTTP endpoint whose POSTs the demo prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp
from aiohttp import web

from bot.demo.alertmanager import AlertmanagerServer
from bot.demo.kube.store import ObjectStore
from bot.demo.world import VELERO_NAMESPACE, backup

log = logging.getLogger(__name__)

SOURCE_LABEL: Final = "cluster"
SOURCE: Final = "demo"
WATCHDOG: Final = {"alertname": "Watchdog", "severity": "none", SOURCE_LABEL: SOURCE}
CRASHLOOP: Final = {"alertname": "KubePodCrashLooping", "namespace": "shop", "severity": "warning"}
TARGET_DOWN: Final = {"alertname": "TargetDown", "namespace": "payments", "severity": "critical"}
_DEMO_EXTERNAL_URL: Final = "http://127.0.0.1:9093"


@dataclass(frozen=True)
class TourTiming:
    """When things happen, in seconds; ``pace`` scales them all (the tests use 0.1).

    The Watchdog beats from start-up; the rest counts from the first command
    the bot handles, and ``outage_after_s`` from start-up.
    """

    pace: float = 1.0
    first_alert_s: float = 5.0
    falco_s: float = 10.0
    backup_s: float = 15.0
    resolve_s: float = 65.0
    watchdog_every_s: float = 10.0
    # --outage: the Watchdog's last beat (the alarm follows after deadman.threshold_s).
    outage_after_s: float = 20.0

    def at(self, seconds: float) -> float:
        return seconds * self.pace


def crashloop_alerts() -> list[dict[str, str]]:
    return [CRASHLOOP | {"pod": "web-7d9f8-x2k4p"}, CRASHLOOP | {"pod": "web-7d9f8-q8d1m"}]


class Sink:
    """A local HTTP endpoint standing for the second channel: prints every POST on one line."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.received: list[tuple[str, str]] = []
        self._write = write or _print
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode(errors="replace")
        self.received.append((request.path, body))
        title = request.headers.get("Title")
        # The dead-man's switch sends ntfy's headers; Alertmanager's second receiver its webhook.
        text = f"{title}: {' '.join(body.split())}" if title is not None else _summarise_webhook(body)
        self._write(f"[second channel {request.path}] {text}")
        return web.Response(text="ok")


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def _summarise_webhook(body: str) -> str:
    try:
        payload = json.loads(body)
        labels = payload.get("commonLabels", {})
        return (
            f"Alertmanager: {payload.get('status')} {labels.get('alertname', '?')} ({len(payload['alerts'])})"
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:200]


def alertmanager_config(bot_url: str, token: str, sink_url: str) -> str:
    """Everything to the bot; the Watchdog on its own fast route; critical alerts to the sink too."""
    return f"""
route:
  receiver: readybot
  group_by: ['alertname', 'namespace']
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 4h
  routes:
    - receiver: readybot
      matchers: ['alertname = "Watchdog"']
      group_wait: 0s
      group_interval: 5s
      repeat_interval: 10s
    - receiver: readybot
      matchers: ['severity = "critical"']
      continue: true
    - receiver: pager
      matchers: ['severity = "critical"']
receivers:
  - name: readybot
    webhook_configs:
      - url: {bot_url}/hooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
  - name: pager
    webhook_configs:
      - url: {sink_url}/pager
        send_resolved: true
"""


@dataclass
class Tour:
    """Runs the script against the bot (and Alertmanager when there is one) until stopped."""

    bot_url: str
    tokens: dict[str, str]
    store: ObjectStore
    alertmanager: AlertmanagerServer | None
    timing: TourTiming = field(default_factory=TourTiming)
    outage: bool = False
    write: Callable[[str], None] = _print

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            self._session = session
            if not await self._bot_ready(stop):
                return
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watchdog(stop))
                group.create_task(self._script(stop))

    async def _script(self, stop: asyncio.Event) -> None:
        # A device that joins later cannot read messages encrypted before it
        # existed: start once a person has talked to the bot, so they see it all.
        if not await self._first_command(stop):
            return
        self.write("demo tour: first command seen; alerts, Falco events and a failed backup follow")
        steps: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (self.timing.first_alert_s, self._fire),
            (self.timing.falco_s, self._falco_burst),
            (self.timing.backup_s, self._failed_backup),
            (self.timing.resolve_s, self._resolve),
        ]
        async with asyncio.TaskGroup() as group:
            for at, step in steps:
                group.create_task(self._later(stop, self.timing.at(at), step))

    async def _first_command(self, stop: asyncio.Event) -> bool:
        """Wait until the bot has handled a command (its /metrics say so)."""
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self._session.get(f"{self.bot_url}/metrics") as response:
                    if commands_handled(await response.text()) > 0:
                        return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return False

    async def _later(self, stop: asyncio.Event, delay_s: float, step: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)
            return
        try:
            await step()
        except (aiohttp.ClientError, OSError, RuntimeError) as error:
            log.warning("demo tour: %s failed: %s", step.__name__.strip("_"), error)

    async def _bot_ready(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self._session.get(f"{self.bot_url}/readyz") as response:
                    if response.status == 200:
                        return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return False

    # -- the steps ---------------------------------------------------------------------

    async def _fire(self) -> None:
        self.write("demo tour: firing KubePodCrashLooping (shop, 2 pods) and TargetDown (payments, critical)")
        summary = {"summary": "Pod is crash looping", "description": "web restarts every few seconds"}
        await self._alerts([(labels, summary, True) for labels in crashloop_alerts()])
        await self._alerts([(TARGET_DOWN, {"summary": "payments/api metrics target is down"}, True)])

    async def _resolve(self) -> None:
        self.write("demo tour: KubePodCrashLooping resolved")
        await self._alerts(
            [(labels, {"summary": "Pod is crash looping"}, False) for labels in crashloop_alerts()]
        )

    async def _falco_burst(self) -> None:
        self.write("demo tour: a burst of Falco events (20 shells in one pod, 3 sensitive file reads)")
        pod = {"k8s.ns.name": "shop", "k8s.pod.name": "web-7d9f8-x2k4p", "proc.name": "bash"}
        events = [
            _falco_event("Terminal shell in container", "Notice", pod, "A shell was spawned in a container")
            for _ in range(20)
        ]
        reader = {"k8s.ns.name": "payments", "k8s.pod.name": "api-5c6b7-zz9tw", "proc.name": "cat"}
        events += [
            _falco_event(
                "Read sensitive file untrusted", "Warning", reader, "Sensitive file opened for reading"
            )
            for _ in range(3)
        ]
        for event in events:
            await self._post("falco", event)
            await asyncio.sleep(0.05)

    async def _failed_backup(self) -> None:
        self.write("demo tour: Velero backup before-cilium-upgrade failed")
        started = datetime.now(UTC) - timedelta(minutes=4)
        obj = backup(
            "before-cilium-upgrade",
            "Failed",
            started,
            schedule=None,
            failureReason="error getting backup storage location: timed out",
            errors=1,
        )
        obj["metadata"]["namespace"] = VELERO_NAMESPACE
        await asyncio.to_thread(self.store.put, obj)

    async def _watchdog(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        stopped_said = False
        while not stop.is_set():
            if self.outage and loop.time() - began >= self.timing.at(self.timing.outage_after_s):
                if not stopped_said:
                    self.write("demo tour (--outage): the Watchdog stops; the dead-man's switch will notice")
                    stopped_said = True
            else:
                try:
                    await self._alerts([(WATCHDOG, {"summary": "the alerting pipeline works"}, True)])
                except (aiohttp.ClientError, OSError, RuntimeError) as error:
                    log.warning("demo tour: Watchdog beat failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.timing.at(self.timing.watchdog_every_s))

    # -- the doors ---------------------------------------------------------------------

    async def _alerts(self, alerts: list[tuple[dict[str, str], dict[str, str], bool]]) -> None:
        """Firing (True) or resolved alerts: to Alertmanager's API, else as its webhook to the bot."""
        now = datetime.now(UTC)
        if self.alertmanager is not None:
            body = [
                {
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": (now - timedelta(minutes=2)).isoformat(),
                    # Firing ones as Prometheus re-sends them; the Watchdog lapses soon if not fed.
                    "endsAt": (
                        now + timedelta(seconds=30 if labels is WATCHDOG else 3600)
                        if firing
                        else now - timedelta(seconds=1)
                    ).isoformat(),
                    "generatorURL": "http://127.0.0.1:9090/graph",
                }
                for labels, annotations, firing in alerts
            ]
            await asyncio.to_thread(self.alertmanager.post_alerts, body)
            return
        await self._post("alertmanager", _webhook(alerts, now))

    async def _post(self, hook: str, payload: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[hook]}"}
        async with self._session.post(
            f"{self.bot_url}/hooks/{hook}", json=payload, headers=headers
        ) as answer:
            if answer.status != 200:
                raise RuntimeError(f"/hooks/{hook} answered {answer.status}")


def commands_handled(metrics: str) -> float:
    """The sum of ``readybot_commands_handled_total`` over its labels, from Prometheus text."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("readybot_commands_handled_total"):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _webhook(alerts: list[tuple[dict[str, str], dict[str, str], bool]], now: datetime) -> dict[str, Any]:
    """Alertmanager's webhook (version 4) for one group: what it would send without being here."""
    first = alerts[0][0]
    group_labels = {k: first[k] for k in ("alertname", "namespace") if k in first}
    common = {k: v for k, v in first.items() if all(labels.get(k) == v for labels, _, _ in alerts)}
    status = "firing" if any(firing for _, _, firing in alerts) else "resolved"
    items = [
        {
            "status": "firing" if firing else "resolved",
            "labels": labels,
            "annotations": annotations,
            "startsAt": (now - timedelta(minutes=2)).isoformat(),
            "endsAt": "0001-01-01T00:00:00Z" if firing else now.isoformat(),
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16],
        }
        for labels, annotations, firing in alerts
    ]
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(group_labels, sort_keys=True),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "readybot",
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": _DEMO_EXTERNAL_URL,
        "alerts": items,
    }


def _falco_event(rule: str, priority: str, fields: dict[str, str], what: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    where = " ".join(f"{k}={v}" for k, v in fields.items())
    return {
        "uuid": str(uuid.uuid4()),
        "output": f"{now:%H:%M:%S}.000000000: {priority} {what} ({where})",
        "priority": priority,
        "rule": rule,
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "output_fields": fields | {"container.id": "3f1c2a9b7d4e"},
        "source": "syscall",
        "tags": ["container", "demo"],
        "hostname": "node-1",
    }
