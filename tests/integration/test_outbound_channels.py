"""The ways out that bypass Matrix, against a small HTTP server on 127.0.0.1: second channel and self-ping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.deadman.channels import HttpNoticeChannel, SelfPing
from bot.deadman.switch import SecondaryChannelError
from config.deadman import SecondaryChannelSettings, SelfPingSettings

TOKEN = "channel-secret-Vd93"


@dataclass
class Endpoint:
    url: str = ""
    status: int = 200
    requests: list[tuple[str, dict[str, str], str]] = field(default_factory=list)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """An HTTP endpoint recording (method, headers, body), answering ``status``."""
    found = Endpoint()

    async def record(request: web.Request) -> web.Response:
        found.requests.append((request.method, dict(request.headers), await request.text()))
        return web.Response(status=found.status, text="ok")

    app = web.Application()
    app.router.add_route("*", "/hook", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()


async def test_the_second_channel_posts_text_with_ntfy_headers_and_the_token(endpoint: Endpoint) -> None:
    """A notice is a POST of plain text with Title/Priority/Tags and the bearer token."""
    channel = HttpNoticeChannel(
        SecondaryChannelSettings.model_validate({"url": endpoint.url, "token": TOKEN})
    )
    await channel.send("readybot: no heartbeat from eu-1 ✓", "🔴 silent for 5m", urgent=True)
    ((method, headers, body),) = endpoint.requests
    assert method == "POST" and body == "🔴 silent for 5m"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Title"] == "readybot: no heartbeat from eu-1 ?"
    assert (headers["Priority"], headers["Tags"]) == ("urgent", "rotating_light")


async def test_second_channel_failures_never_carry_the_token(endpoint: Endpoint) -> None:
    """A non-2xx answer and a refused connection are errors whose text holds no token or URL."""
    endpoint.status = 503
    channel = HttpNoticeChannel(
        SecondaryChannelSettings.model_validate({"url": endpoint.url, "token": TOKEN})
    )
    with pytest.raises(SecondaryChannelError, match="HTTP 503") as refused:
        await channel.send("t", "b", urgent=False)
    closed = HttpNoticeChannel(SecondaryChannelSettings.model_validate({"url": "http://127.0.0.1:9/x?k=v"}))
    with pytest.raises(SecondaryChannelError, match=r"cannot connect to 127\.0\.0\.1:9") as unreachable:
        await closed.send("t", "b", urgent=False)
    for error in (refused.value, unreachable.value):
        assert TOKEN not in str(error) and "k=v" not in str(error)


async def test_self_ping_pings_while_healthy_and_stops_promptly(endpoint: Endpoint) -> None:
    """The self-ping GETs on its interval while checks run, stays silent when they stall, stops at once."""
    healthy = True
    ping = SelfPing(
        SelfPingSettings.model_validate({"url": endpoint.url, "interval_s": 1}),
        lambda _now: healthy,
        lambda: 0.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ping.run(stop))
    async with asyncio.timeout(5):
        while len(endpoint.requests) < 2:
            await asyncio.sleep(0.05)
    assert {method for method, _, _ in endpoint.requests} == {"GET"}
    healthy = False
    seen = len(endpoint.requests)
    await asyncio.sleep(1.5)
    assert len(endpoint.requests) == seen, "a stalled bot must stop vouching for itself"
    stop.set()
    async with asyncio.timeout(1):
        await task
