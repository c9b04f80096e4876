"""The readiness scorecard end to end: two clusters, a real Prometheus and Alertmanager, the chat.

The test Kubernetes API is seeded as the plan's starting point (Cilium
enforcing, Trivy deployed, the rest missing) and as everything done; a real
Prometheus (Debian's) answers the query and rule probes, a real Alertmanager
the receiver and route probes. The chat tests read the bot's answers
(and download and decrypt the trend chart) through the real Synapse.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nio import MemoryDownloadResponse, RoomEncryptedImage, RoomMessageImage
from nio.crypto import decrypt_attachment
from PIL import Image
from pydantic import TypeAdapter

from bot.alertmanager.api import AlertmanagerApi
from bot.deadman.switch import DeadmansSwitch
from bot.demo.synapse import SynapseServer, free_port
from bot.drills.service import PassedDrill
from bot.outbox import Outbox
from bot.readiness.engine import Scorecard
from bot.readiness.probes import ProbeEnv, run_probe
from bot.readiness.prometheus import PrometheusApi
from bot.readiness.render import status_message
from bot.readiness.results import Mark
from bot.readiness.service import ReadinessService
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store.database import Database
from config.deadman import DeadmanSettings
from config.readiness import ReadinessSettings
from config.readiness_plan import Probe
from tests.integration.alertmanager import AlertmanagerServer, find_alertmanager
from tests.integration.botrunner import RunningBot, bot_settings
from tests.integration.fixtures import ALERTMANAGER_MISSING, in_ci
from tests.integration.people import Account, Person, PersonFactory
from tests.integration.prometheus import PROMETHEUS_MISSING, PrometheusServer, find_prometheus
from tests.kube.handle import KubeHandle
from tests.unit.readiness_env import CRITICAL_APPS, seed_everything_done, seed_starting_point, shipped_plan

PROBE: TypeAdapter[Probe] = TypeAdapter(Probe)
PROBE_TIMEOUT_S = 5.0

# Prometheus at the plan's starting point: only the Trivy alert (1.2 is done).
STARTING_RULES = """
groups:
  - name: trivy
    rules:
      - alert: CriticalVulnerabilityDetected
        expr: trivy_image_vulnerabilities{severity="Critical"} > 0
        for: 1h
        labels: {severity: warning}
"""
# Everything done: the plan's alerts, and recording rules standing in for the
# exporters: OpenCost's scrape target (a real scrape would wait for Prometheus'
# 5 s service-discovery throttle), Tempo's span counter (grows with time()),
# falcosidekick's outputs.
DONE_RULES = (
    STARTING_RULES
    + """
  - name: velero
    rules:
      - alert: VeleroBackupFailed
        expr: velero_backup_failure_total > velero_backup_success_total
        for: 1h
        labels: {severity: critical}
  - name: general.rules
    rules:
      - alert: Watchdog
        expr: vector(1)
        labels: {severity: none}
  - name: stand-ins
    interval: 1s
    rules:
      - record: up
        expr: vector(1)
        labels: {job: opencost, instance: "opencost.opencost:9003"}
      - record: tempo_distributor_spans_received_total
        expr: vector(time())
      - record: falcosidekick_outputs
        expr: vector(3)
        labels: {destination: alertmanager, status: ok}
"""
)
# One channel (the plan's starting point), then Matrix + email with critical to both.
SINGLE_CHANNEL = """
route:
  receiver: matrix
receivers:
  - name: matrix
    webhook_configs: [{url: "http://127.0.0.1:9/hooks/alertmanager"}]
"""
TWO_CHANNELS = """
global:
  smtp_smarthost: 127.0.0.1:25
  smtp_from: alertmanager@example.org
route:
  receiver: matrix
  routes:
    - matchers: ['alertname = "Watchdog"']
      receiver: readybot
      repeat_interval: 1m
    - matchers: ['severity = "critical"']
      receiver: matrix
      continue: true
    - matchers: ['severity = "critical"']
      receiver: mail
receivers:
  - name: matrix
    webhook_configs: [{url: "http://127.0.0.1:9/hooks/alertmanager"}]
  - name: readybot
    webhook_configs: [{url: "http://127.0.0.1:9/hooks/alertmanager"}]
  - name: mail
    email_configs: [{to: ops@example.org}]
"""

STARTING_MARKS = {
    "1.1.1": Mark.PASS,
    "1.1.3": Mark.PASS,
    "1.2.1": Mark.PASS,
    "1.2.3": Mark.PASS,
    "1.3.1": Mark.FAIL,
    "1.3.2": Mark.FAIL,
    "2.1.1": Mark.FAIL,
    "2.1.2": Mark.FAIL,
    "2.1.3": Mark.FAIL,
    "2.1.4": Mark.FAIL,
    "2.2.1": Mark.FAIL,
    "3.1.1": Mark.FAIL,
    "3.1.2": Mark.FAIL,
    "3.2.1": Mark.FAIL,
    "4.1.1": Mark.FAIL,
    "4.2.1": Mark.FAIL,
    "4.4.1": Mark.FAIL,
    "4.4.2": Mark.FAIL,
    "4.4.3": Mark.FAIL,
    "5.2.1": Mark.FAIL,
    "5.2.3": Mark.PASS,
    "6.1.1": Mark.FAIL,
    "6.1.3": Mark.FAIL,
}


# --- the monitoring stacks (one per state, shared by the module) --------------------------


def _need(binary: str | None, missing: str) -> None:
    if binary is None:
        # As for Synapse and Alertmanager: a skip on a developer's machine, a failure in CI.
        if in_ci():
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)


class Stack:
    def __init__(self, prometheus: PrometheusServer, alertmanager: AlertmanagerServer) -> None:
        self.prometheus = prometheus
        self.alertmanager = alertmanager


@pytest.fixture(scope="module")
def starting_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prometheus with the Trivy alert only, Alertmanager with one receiver."""
    _need(find_prometheus(), PROMETHEUS_MISSING)
    _need(find_alertmanager(), ALERTMANAGER_MISSING)
    workdir = tmp_path_factory.mktemp("starting-stack")
    with (
        PrometheusServer(workdir / "prometheus", STARTING_RULES) as prometheus,
        AlertmanagerServer(workdir / "alertmanager", SINGLE_CHANNEL) as alertmanager,
    ):
        yield Stack(prometheus, alertmanager)


@pytest.fixture(scope="module")
def done_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prometheus with every rule and the exporters' stand-ins; Alertmanager with two channels."""
    _need(find_prometheus(), PROMETHEUS_MISSING)
    _need(find_alertmanager(), ALERTMANAGER_MISSING)
    workdir = tmp_path_factory.mktemp("done-stack")
    with (
        PrometheusServer(workdir / "prometheus", DONE_RULES) as prometheus,
        AlertmanagerServer(workdir / "alertmanager", TWO_CHANNELS) as alertmanager,
    ):
        # Until two evaluations of the stand-ins (a rate needs two points).
        prometheus.wait_for("sum(rate(tempo_distributor_spans_received_total[1h])) > 0")
        yield Stack(prometheus, alertmanager)


@pytest.fixture
async def deadman(tmp_path: Path) -> AsyncIterator[DeadmansSwitch]:
    db = await Database.open(tmp_path / "deadman.sqlite3", migrations=MIGRATIONS)
    yield DeadmansSwitch(
        DeadmanSettings(threshold_s=300, check_interval_s=30),
        db=db,
        outbox=Outbox(db),
        templates=Templates(),
        rooms=[],
        clock=time.time,
        started_at=time.time(),
    )
    await db.close()


class Drills:
    """readybot's restore drills as the 2.1.3 probe reads them: the last passed one, or none."""

    def __init__(self, passed: PassedDrill | None = None) -> None:
        self.passed = passed

    async def last_passed(self) -> PassedDrill | None:
        return self.passed


def a_passed_drill() -> Drills:
    return Drills(PassedDrill("3f9a0c1e", "daily-20261207", "daily", time.time() - 3600, "412/412 items"))


async def scorecard(
    kube: KubeHandle,
    stack: Stack,
    deadman: DeadmansSwitch,
    gated: frozenset[str] = frozenset(),
    drills: Drills | None = None,
) -> Scorecard:
    def env() -> ProbeEnv:
        return ProbeEnv(
            kube=kube.api,
            prometheus=PrometheusApi(stack.prometheus.base_url, timeout_s=PROBE_TIMEOUT_S),
            alertmanager=AlertmanagerApi(stack.alertmanager.base_url, timeout_s=PROBE_TIMEOUT_S),
            watchdog=deadman,
            gated_apps=gated,
            drills=drills or Drills(),
            clock=time.time,
        )

    settings = ReadinessSettings(probe_timeout_s=PROBE_TIMEOUT_S)
    report = await ReadinessService(shipped_plan(), settings, env_factory=env, clock=time.time).run()
    return report.scorecard


def automatic_marks(card: Scorecard) -> dict[str, Mark]:
    return {key: result.mark for key, result in card.results.items() if result.mark is not Mark.MANUAL}


# --- two clusters ---------------------------------------------------------------------------


async def test_the_plans_starting_point_scores_as_the_plan_says(
    kube_api: KubeHandle, starting_stack: Stack, deadman: DeadmansSwitch
) -> None:
    """Cilium enforcing and Trivy deployed pass; everything the plan has not done fails, with evidence."""
    seed_starting_point(kube_api.store)
    card = await scorecard(kube_api, starting_stack, deadman)
    assert automatic_marks(card) == STARTING_MARKS
    found = {key: result.found for key, result in card.results.items()}
    assert found["1.1.1"] == 'cilium-config: data.policy-audit-mode = "false"'
    assert found["1.2.3"].startswith("alerting rule CriticalVulnerabilityDetected (group trivy): ")
    assert found["1.3.1"] == "1 found: disallow-ingress-nginx-custom-snippets"
    assert found["2.1.4"] == "not among the 1 alerting rules Prometheus has loaded"
    assert found["3.1.1"] == "0/3 namespaces covered; missing in: demo, test, vcluster-media"
    assert found["3.2.1"] == "no Deployment opencost in namespace opencost; the query returned no series"
    assert found["4.4.1"] == "1 receivers deliver: matrix (webhook)"
    assert found["4.4.2"] == "an alert with severity=critical reaches matrix (webhook)"
    assert found["5.2.1"].startswith("cilium: spec.syncPolicy.automated = ")
    assert card.overall.passed == 5 and card.overall.failed == 18 and card.overall.unknown == 0
    assert card.overall.coverage == 1.0 and card.notices == ()


async def test_everything_done_passes_every_automatic_criterion(
    kube_api: KubeHandle, done_stack: Stack, deadman: DeadmansSwitch
) -> None:
    """The finished plan: all 23 automatic criteria pass (score and coverage 100 %), with their evidence."""
    seed_everything_done(kube_api.store)
    await deadman.heartbeat("http://alertmanager.example.org")
    card = await scorecard(
        kube_api, done_stack, deadman, gated=frozenset(CRITICAL_APPS), drills=a_passed_drill()
    )
    assert automatic_marks(card) == dict.fromkeys(STARTING_MARKS, Mark.PASS)
    assert "drill 3f9a0c1e of daily-20261207 (schedule daily) passed" in card.results["2.1.3"].found
    assert card.overall.score == 1.0 and card.overall.coverage == 1.0
    found = {key: result.found for key, result in card.results.items()}
    assert "alerting rule VeleroBackupFailed (group velero)" in found["2.1.4"]
    assert found["3.2.1"].endswith(
        '1 series: {__name__="up",instance="opencost.opencost:9003",job="opencost"} 1'
    )
    assert found["4.4.2"] == "an alert with severity=critical reaches matrix (webhook), mail (email)"
    assert "Prometheus: " not in found["4.2.1"] and found["4.2.1"] == "1 found: monitoring/k8s"
    assert found["6.1.3"].endswith("1 series: {} 3")
    assert "last heartbeat" in found["4.4.3"]


async def test_a_missing_crd_gives_unknown_not_fail(
    kube_api: KubeHandle, done_stack: Stack, deadman: DeadmansSwitch
) -> None:
    """Without the Velero Schedule and Kyverno ClusterPolicy CRDs their criteria are unknown; others pass."""
    seed_everything_done(kube_api.store)
    await deadman.heartbeat("http://alertmanager.example.org")
    server = kube_api.require_server()
    server.unregister("velero.io", "schedules")
    server.unregister("kyverno.io", "clusterpolicies")
    card = await scorecard(
        kube_api, done_stack, deadman, gated=frozenset(CRITICAL_APPS), drills=a_passed_drill()
    )
    marks = automatic_marks(card)
    assert {key for key, mark in marks.items() if mark is not Mark.PASS} == {"1.3.1", "1.3.2", "2.1.2"}
    assert all(marks[key] is Mark.UNKNOWN for key in ("1.3.1", "1.3.2", "2.1.2"))
    assert "schedules.velero.io (velero.io/v1) is not served by the cluster" in card.results["2.1.2"].found
    assert card.overall.failed == 0


async def test_an_unreachable_api_is_unknown_everywhere_and_says_so(
    kube_api: KubeHandle, done_stack: Stack, deadman: DeadmansSwitch
) -> None:
    """API down: every cluster criterion unknown (none failed), "cluster unreachable" heads the scorecard."""
    seed_everything_done(kube_api.store)
    await deadman.heartbeat("http://alertmanager.example.org")
    with kube_api.require_server().unreachable():
        card = await scorecard(
            kube_api, done_stack, deadman, gated=frozenset(CRITICAL_APPS), drills=a_passed_drill()
        )
    unknown = [key for key, result in card.results.items() if result.mark is Mark.UNKNOWN]
    assert len(unknown) == 17 and card.overall.failed == 0
    assert all("cluster unreachable: connection refused" in card.results[key].found for key in unknown)
    # What does not need the cluster still passes: the Prometheus and Alertmanager criteria.
    # ... and the restore drills, which readybot keeps in its own store.
    assert {key for key, mark in automatic_marks(card).items() if mark is Mark.PASS} == {
        "1.2.3",
        "2.1.3",
        "2.1.4",
        "4.4.1",
        "4.4.2",
        "4.4.3",
    }
    message = status_message(Templates(), _report(card), "!")
    assert message.plain.splitlines()[1] == "⚠️ cluster unreachable: connection refused (17 criteria unknown)"


def _report(card: Scorecard) -> object:
    from bot.readiness.engine import compare
    from bot.readiness.service import Report

    return Report(card, compare(card, None, None, None), run_id=None)


# --- the Prometheus probes against the real Prometheus ----------------------------------------


async def check(spec: dict[str, object], prometheus: PrometheusApi) -> tuple[Mark, str]:
    env = ProbeEnv(prometheus=prometheus, clock=time.time)
    try:
        result = await run_probe(PROBE.validate_python(spec), env)
    finally:
        await env.cache.close()
    return result.mark, result.found


async def test_prometheus_queries_are_compared_as_the_probe_says(done_stack: Stack) -> None:
    """op/value/match/empty decide on real answers; a query Prometheus cannot parse is unknown."""
    api = PrometheusApi(done_stack.prometheus.base_url, timeout_s=PROBE_TIMEOUT_S)
    query = {"kind": "prometheus"}
    assert await check({**query, "query": "vector(2)", "op": ">=", "value": 2}, api) == (
        Mark.PASS,
        "1 series: {} 2",
    )
    assert (await check({**query, "query": "vector(0)"}, api))[0] is Mark.FAIL
    assert await check({**query, "query": "absent(vector(1))"}, api) == (
        Mark.FAIL,
        "the query returned no series",
    )
    assert (await check({**query, "query": "absent(vector(1))", "empty": "pass"}, api))[0] is Mark.PASS
    two = "label_replace(vector(1), 'x', 'a', '', '') or label_replace(vector(5), 'x', 'b', '', '')"
    assert (await check({**query, "query": two, "op": ">", "value": 2}, api))[0] is Mark.PASS
    assert (await check({**query, "query": two, "op": ">", "value": 2, "match": "all"}, api))[0] is Mark.FAIL
    mark, found = await check({**query, "query": "sum(("}, api)
    assert mark is Mark.UNKNOWN and found.startswith("Prometheus refused the query: ")


async def test_alerting_rules_are_found_by_name_or_by_expression(done_stack: Stack) -> None:
    """A rule found under another name but the same expression (spaces aside) passes; none found fails."""
    api = PrometheusApi(done_stack.prometheus.base_url, timeout_s=PROBE_TIMEOUT_S)
    spec = {
        "kind": "prometheus_rule",
        "alert": ["SomeOtherName"],
        "expr": "velero_backup_failure_total>velero_backup_success_total",
    }
    mark, found = await check(spec, api)
    assert mark is Mark.PASS and found.startswith("alerting rule VeleroBackupFailed (group velero)")
    mark, found = await check({"kind": "prometheus_rule", "alert": "NoSuchAlert"}, api)
    assert mark is Mark.FAIL and found == "not among the 3 alerting rules Prometheus has loaded"


async def test_a_prometheus_that_does_not_answer_is_unknown() -> None:
    """Nothing listening at prometheus_url: unknown, saying it cannot connect."""
    port = free_port()
    api = PrometheusApi(f"http://127.0.0.1:{port}", timeout_s=PROBE_TIMEOUT_S)
    mark, found = await check({"kind": "prometheus", "query": "vector(1)"}, api)
    assert (mark, found) == (Mark.UNKNOWN, f"Prometheus unreachable: cannot connect to 127.0.0.1:{port}")


# --- the chat, through the real Synapse ---------------------------------------------------------


async def start_readiness_bot(
    bots: list[RunningBot],
    synapse: SynapseServer,
    account: Account,
    state: Path,
    room: str,
    kube: KubeHandle,
    stack: Stack,
) -> RunningBot:
    settings = bot_settings(
        synapse.base_url,
        account,
        state,
        [room],
        kubernetes={
            "enabled": True,
            "in_cluster": False,
            "kubeconfig": str(kube.kubeconfig_path),
            "request_timeout_s": 2,
        },
        readiness={
            "enabled": True,
            "prometheus_url": stack.prometheus.base_url,
            "alertmanager_url": stack.alertmanager.base_url,
            "probe_timeout_s": PROBE_TIMEOUT_S,
        },
    )
    runner = RunningBot(settings)
    bots.append(runner)
    await runner.start()
    return runner


async def ask(person: Person, room: str, bot: str, text: str) -> str:
    command = await person.send_text(room, text, wait_members=[bot])
    reply = await person.wait_for_reply(room, bot, after_event_id=command, timeout=30)
    return reply.body


async def test_the_scorecard_in_an_encrypted_room(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube_api: KubeHandle,
    starting_stack: Stack,
    tmp_path: Path,
) -> None:
    """status, status security, explain 1.3 and trend (an encrypted PNG a person downloads and decrypts)."""
    seed_starting_point(kube_api.store)
    alice = await person_factory("alice")
    room = await alice.create_room("readiness", encrypted=True, invite=[bot_account.user_id])
    bot = bot_account.user_id
    await start_readiness_bot(bots, synapse, bot_account, tmp_path / "bot", room, kube_api, starting_stack)
    await alice.wait_joined(room, bot)

    status = await ask(alice, room, bot, "!readiness status")
    lines = status.splitlines()
    # 4.4.3's Watchdog half is the bot's own switch: no heartbeat yet, so it fails as at the starting point.
    # 2.1.3 reads readybot's restore drills, off in this bot: unknown, saying velero.drills.enabled.
    assert lines[0].startswith(
        "Production Readiness Plan: 22% (5/23 checked criteria pass) · coverage 96% (22/23 could be checked)"
    )
    assert "❌ Security 4/8 +5 manual" in lines
    assert "— Cultural readiness no criteria" in lines
    assert any(line.startswith("❌ 1 Security Enforcement (Quick Wins) 4/6") for line in lines)
    assert "Change first run: nothing to compare with yet" in lines

    security = await ask(alice, room, bot, "!readiness status security")
    assert security.startswith("❌ Security: 4/8 +5 manual")
    assert (
        "❌ 1.3.1 At least 3 enforce-mode ClusterPolicies active\n      found: 1 found: disallow-ingress"
        in security
    )

    explain = await ask(alice, room, bot, "!readiness explain 1.3")
    assert explain.startswith("1.3 Strengthen Kyverno to Enforce Mode")
    assert "How to fix: Add enforce-mode policies one at a time" in explain
    assert "Last result (" in explain
    assert "❌ fail — 1 found: disallow-ingress-nginx-custom-snippets" in explain

    mark = alice.mark()
    command = await alice.send_text(room, "!readiness trend")
    image = await alice.wait_for(
        lambda event: isinstance(event, RoomEncryptedImage) and event.sender == bot,
        room_id=room,
        since=mark,
        timeout=30,
        what="the trend chart",
    )
    assert isinstance(image, RoomEncryptedImage)
    assert image.source["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == command
    assert image.source["content"]["info"]["mimetype"] == "image/png"
    download = await alice.client.download(mxc=image.url)
    assert isinstance(download, MemoryDownloadResponse)
    png = decrypt_attachment(download.body, image.key["k"], image.hashes["sha256"], image.iv)
    assert download.body != png  # the media repository only ever saw ciphertext
    with Image.open(io.BytesIO(png)) as chart:
        assert chart.format == "PNG" and chart.size == (800, 420)


async def test_the_trend_in_a_plain_room_is_an_unencrypted_image(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    kube_api: KubeHandle,
    starting_stack: Stack,
    tmp_path: Path,
) -> None:
    """In an unencrypted room the chart is an m.image with a plain mxc URL anyone in the room can fetch."""
    seed_starting_point(kube_api.store)
    alice = await person_factory("alice")
    room = await alice.create_room("readiness", encrypted=False, invite=[bot_account.user_id])
    bot = bot_account.user_id
    await start_readiness_bot(bots, synapse, bot_account, tmp_path / "bot", room, kube_api, starting_stack)
    await alice.wait_joined(room, bot)
    mark = alice.mark()
    await alice.send_text(room, "!readiness trend", wait_members=[bot])
    image = await alice.wait_for(
        lambda event: isinstance(event, RoomMessageImage) and event.sender == bot,
        room_id=room,
        since=mark,
        timeout=30,
        what="the trend chart",
    )
    assert isinstance(image, RoomMessageImage)
    download = await alice.client.download(mxc=image.url)
    assert isinstance(download, MemoryDownloadResponse)
    assert download.body.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_ci_script_installs_prometheus() -> None:
    """.ci/run installs Debian's prometheus (with scripts/install-test-deps), so these tests run in CI."""
    root = Path(__file__).resolve().parents[2]
    assert "\nscripts/install-test-deps\n" in (root / ".ci" / "run").read_text()
    script = (root / "scripts" / "install-test-deps").read_text()
    assert "missing+=(prometheus-alertmanager)" in script and "missing+=(prometheus)" in script
    assert os.environ.get("CI") is None or find_prometheus() is not None
