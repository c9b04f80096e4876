"""Alertmanager faults for the silence commands: paused, and an answer lost after the change was made.

- ``paused``: SIGSTOP on the real Alertmanager's process group, SIGCONT on
  leaving. The kernel still accepts connections and buffers requests, so a
  request sent while paused is handled when it resumes: exactly the case of
  an Alertmanager too slow to answer within the bot's ``api_timeout_s``.
- ``AnswerDroppingProxy``: a proxy on 127.0.0.1 in front of the real
  Alertmanager that forwards every request and relays every answer, except
  that the answer to a change (POST, DELETE) is dropped and the connection
  closed. Seen from the bot this is Alertmanager dying after it made the
  silence and before it answered, which cannot be timed with the real
  process.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import aiohttp
from aiohttp import web

from tests.integration.alertmanager import AlertmanagerServer


@contextlib.contextmanager
def paused(server: AlertmanagerServer) -> Iterator[None]:
    """Alertmanager stopped with SIGSTOP inside the block (its port stays open), resumed after."""
    # The harness keeps the process handle private; only its pid is needed here.
    process = server._process
    assert process is not None and process.poll() is None, "Alertmanager is not running"
    # start_new_session=True made it a process group of its own.
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGCONT)


class AnswerDroppingProxy:
    """Forwards to ``upstream``; the answers to POST and DELETE never reach the client."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.dropped = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as answer:
            data = await answer.read()
            status = answer.status
            content_type = answer.headers.get("Content-Type", "application/json")
        if request.method in ("POST", "DELETE"):
            # The change is made upstream; its answer is lost with the connection.
            self.dropped += 1
            assert request.transport is not None
            request.transport.close()
        return web.Response(status=status, body=data, headers={"Content-Type": content_type})
