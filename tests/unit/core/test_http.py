"""The HTTP server: health, readiness, metrics and hook authentication."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bot.http.server import Health, build_http_app
from bot.metrics import Metrics

TOKEN = "hook-token-0123456789"
HEALTH = web.AppKey("health", Health)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A server with one hook `echo` behind a token, on 127.0.0.1."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=await request.text())

    health = Health(store_open=True)
    app = build_http_app(
        metrics=Metrics(),
        health=health,
        hook_tokens={"echo": SecretStr(TOKEN)},
        hooks={"echo": echo, "open": echo},
        max_body_bytes=2048,
    )
    app[HEALTH] = health
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_healthz_answers_ok(client: TestClient[web.Request, web.Application]) -> None:
    """/healthz answers 200 while the process runs."""
    response = await client.get("/healthz")
    assert response.status == 200


async def test_readyz_waits_for_the_first_sync(client: TestClient[web.Request, web.Application]) -> None:
    """/readyz is 503 naming what is missing until the first sync, then 200."""
    response = await client.get("/readyz")
    assert response.status == 503
    assert "first sync" in await response.text()
    client.app[HEALTH].first_sync_done = True
    assert (await client.get("/readyz")).status == 200


async def test_metrics_are_prometheus_text(client: TestClient[web.Request, web.Application]) -> None:
    """/metrics serves the Prometheus text format with readybot's series."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert "readybot_outbox_depth" in await response.text()


async def test_metrics_are_served_when_the_scrape_time_refresh_hangs() -> None:
    """A refresh stuck behind a locked store is given up after the timeout; the counters are still served."""
    stuck = asyncio.Event()

    async def refresh() -> None:
        await stuck.wait()  # never set: a read queued behind writers waiting out a lock

    app = build_http_app(
        metrics=Metrics(),
        health=Health(store_open=True),
        hook_tokens={},
        hooks={},
        max_body_bytes=2048,
        refresh_metrics=refresh,
        refresh_timeout_s=0.2,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        began = time.monotonic()
        response = await test_client.get("/metrics", timeout=10)
        took = time.monotonic() - began
        assert response.status == 200
        assert "readybot_outbox_depth" in await response.text()
    assert took < 5


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
)
async def test_hooks_refuse_missing_or_wrong_tokens(
    client: TestClient[web.Request, web.Application], headers: dict[str, str]
) -> None:
    """No token, a wrong token or another scheme gets 401 and the handler never runs."""
    response = await client.post("/hooks/echo", data="x", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_hook_without_configured_token_is_closed(
    client: TestClient[web.Request, web.Application],
) -> None:
    """A hook that has no token configured refuses everyone, even with another hook's token."""
    response = await client.post("/hooks/open", data="x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 401


async def test_unknown_hooks_look_the_same_without_a_token(
    client: TestClient[web.Request, web.Application],
) -> None:
    """An unauthenticated caller cannot tell which hooks exist."""
    assert (await client.post("/hooks/nothing-here", data="x")).status == 401


async def test_authorised_hook_runs(client: TestClient[web.Request, web.Application]) -> None:
    """The right token reaches the handler."""
    response = await client.post("/hooks/echo", data="hello", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert await response.text() == "hello"


async def test_oversized_body_is_refused_with_413(client: TestClient[web.Request, web.Application]) -> None:
    """A body over the limit is refused before the handler reads it."""
    response = await client.post("/hooks/echo", data="x" * 5000, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 413


async def test_scoped_token_reaches_the_hook_with_its_scope() -> None:
    """A token keyed `hook/scope` is accepted and the handler sees the scope; the hook-wide one gives None."""
    from bot.http.server import TOKEN_SCOPE

    async def scope_echo(request: web.Request) -> web.Response:
        return web.Response(text=str(request[TOKEN_SCOPE]))

    app = build_http_app(
        metrics=Metrics(),
        health=Health(store_open=True),
        hook_tokens={"am": SecretStr("wide-token-1234"), "am/team-a": SecretStr("team-a-token-1234")},
        hooks={"am": scope_echo},
        max_body_bytes=2048,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        scoped = await test_client.post("/hooks/am", headers={"Authorization": "Bearer team-a-token-1234"})
        assert await scoped.text() == "team-a"
        wide = await test_client.post("/hooks/am", headers={"Authorization": "Bearer wide-token-1234"})
        assert await wide.text() == "None"
        other = await test_client.post("/hooks/other", headers={"Authorization": "Bearer team-a-token-1234"})
        assert other.status == 401


async def test_a_body_over_the_limit_gets_the_same_answer_with_or_without_content_length() -> None:
    """413 says the same, naming the limit, whether the size was announced or found while reading chunks."""
    from bot.http.common import PayloadError, problem, read_json_body

    async def reads_json(request: web.Request) -> web.Response:
        try:
            await read_json_body(request)
        except PayloadError as error:
            return problem(error.status, error.detail)
        return web.Response(text="read")

    app = build_http_app(
        metrics=Metrics(),
        health=Health(store_open=True),
        hook_tokens={"json": SecretStr(TOKEN)},
        hooks={"json": reads_json},
        max_body_bytes=2048,
    )
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000

    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        announced = await test_client.post("/hooks/json", data=b"x" * 5000, headers=headers)
        chunked = await test_client.post("/hooks/json", data=chunks(), headers=headers)
        answers = [(r.status, await r.json()) for r in (announced, chunked)]
    expected = {"error": "body too large: the limit is 2048 bytes (http.max_body_bytes)"}
    assert answers == [(413, expected), (413, expected)]


async def test_a_standby_is_not_ready_and_refuses_hooks_with_503(
    client: TestClient[web.Request, web.Application],
) -> None:
    """With ha, a standby answers /readyz and an authenticated webhook 503 "standby: not the leader"."""
    health = client.app[HEALTH]
    health.first_sync_done = True
    health.leader = False
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "standby: not the leader" in await ready.text()
    hook = await client.post("/hooks/echo", data="x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert hook.status == 503
    assert (await hook.json()) == {"error": "standby: not the leader"}
    health.leader = True
    assert (await client.get("/readyz")).status == 200
    assert (
        await client.post("/hooks/echo", data="x", headers={"Authorization": f"Bearer {TOKEN}"})
    ).status == 200


async def test_a_standby_still_refuses_a_wrong_token_with_401(
    client: TestClient[web.Request, web.Application],
) -> None:
    """A standby authenticates first: a wrong token learns nothing, not even that this replica stands by."""
    client.app[HEALTH].leader = False
    response = await client.post("/hooks/echo", data="x", headers={"Authorization": "Bearer wrong"})
    assert response.status == 401
