"""The shipped Alertmanager example (deploy/alertmanager/alertmanager.yaml) is valid and does what it says."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.integration.alertmanager import find_amtool
from tests.integration.fixtures import ALERTMANAGER_MISSING, AlertmanagerFactory, in_ci

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yaml"
BOT_URL = "http://readybot.readybot.svc:8080/hooks/alertmanager"
CREDENTIALS_FILE = "/etc/alertmanager/secrets/readybot/token"


def example() -> dict[str, Any]:
    loaded = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_amtool_accepts_the_example() -> None:
    """`amtool check-config` (offline) accepts the example configuration."""
    amtool = find_amtool()
    if amtool is None:
        if in_ci():
            pytest.fail(ALERTMANAGER_MISSING, pytrace=False)
        pytest.skip(ALERTMANAGER_MISSING)
    result = subprocess.run(
        [amtool, "check-config", str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_watchdog_has_its_own_fast_route_without_resolved_notifications() -> None:
    """The Watchdog route comes first, waits 0 s, repeats every minute, and its receiver sends no resolved."""
    config = example()
    watchdog = config["route"]["routes"][0]
    assert watchdog["matchers"] == ['alertname = "Watchdog"']
    assert (watchdog["group_wait"], watchdog["repeat_interval"]) == ("0s", "1m")
    assert not watchdog.get("continue", False)
    receivers = {r["name"]: r for r in config["receivers"]}
    (hook,) = receivers[watchdog["receiver"]]["webhook_configs"]
    assert hook["send_resolved"] is False
    (alerts,) = receivers[config["route"]["receiver"]]["webhook_configs"]
    assert config["route"]["receiver"] == "readybot" and alerts["send_resolved"] is True
    for webhook in (hook, alerts):
        assert webhook["url"] == BOT_URL
        assert webhook["http_config"]["authorization"] == {
            "type": "Bearer",
            "credentials_file": CREDENTIALS_FILE,
        }


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], Any]]]]:
    """A stand-in for the bot's webhook: its URL and the (headers, JSON body) it received."""
    received: list[tuple[dict[str, str], Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks/alertmanager", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/alertmanager", received
    finally:
        await runner.cleanup()


async def test_a_real_alertmanager_sends_the_watchdog_with_the_token_from_the_file(
    alertmanager: AlertmanagerFactory,
    receiver: tuple[str, list[tuple[dict[str, str], Any]]],
    tmp_path: Path,
) -> None:
    """Run with the example (URL, token path swapped), Alertmanager sends the Watchdog at once, with token."""
    url, received = receiver
    token_file = tmp_path / "token"
    token_file.write_text("example-token-Jq7\n")
    config = EXAMPLE.read_text().replace(BOT_URL, url).replace(CREDENTIALS_FILE, str(token_file))
    server = alertmanager(config)
    server.fire({"alertname": "Watchdog", "severity": "none"})
    async with asyncio.timeout(10):
        while not received:
            await asyncio.sleep(0.05)
    headers, body = received[0]
    assert headers["Authorization"] == "Bearer example-token-Jq7"
    assert body["receiver"] == "readybot-watchdog"
    assert [alert["labels"]["alertname"] for alert in body["alerts"]] == ["Watchdog"]
    assert body["externalURL"] == server.base_url
