"""Ways out that do not go through Matrix: the alarm's second channel, and the bot's own ping.

The second channel is a plain ``POST`` of the text, with ntfy's headers
(``Title``, ``Priority``, ``Tags``): an ntfy topic URL works as it is, and
any webhook receiver gets a readable body. The self-ping is a ``GET`` on an
interval (healthchecks.io, Uptime Kuma push, Dead Man's Snitch…), so an
external monitor notices when the bot itself has died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from bot.deadman.switch import SecondaryChannelError
from config.deadman import SecondaryChannelSettings, SelfPingSettings

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    """A failure in words that never include the URL's query or a header (tokens live there)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    return type(exc).__name__


class HttpNoticeChannel:
    """The second channel of the dead-man's switch (implements ``bot.deadman.switch.SecondaryChannel``)."""

    def __init__(self, settings: SecondaryChannelSettings) -> None:
        if settings.url is None:
            raise ValueError("the second channel needs a url")
        self._url = str(settings.url)
        self._token = settings.token
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)

    async def send(self, title: str, body: str, *, urgent: bool) -> None:
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            # HTTP headers are Latin-1: keep the title ASCII (the body carries the details).
            "Title": title.encode("ascii", errors="replace").decode("ascii"),
            "Priority": "urgent" if urgent else "default",
            "Tags": "rotating_light" if urgent else "white_check_mark",
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            # A session per notice: alarms are rare, and nothing is left to close at shutdown.
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(self._url, data=body.encode(), headers=headers) as response,
            ):
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SecondaryChannelError(_describe(exc)) from None
        if not 200 <= status < 300:
            raise SecondaryChannelError(f"HTTP {status}")


class SelfPing:
    """Root task: ``GET`` the configured URL every interval while ``healthy()`` says the bot works."""

    def __init__(
        self, settings: SelfPingSettings, healthy: Callable[[float], bool], clock: Callable[[], float]
    ) -> None:
        if settings.url is None:
            raise ValueError("the self-ping needs a url")
        self._url = str(settings.url)
        self._interval = settings.interval_s
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._healthy = healthy
        self._clock = clock
        self.pings_sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while not stop.is_set():
                await self._ping_once(session)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self._interval)
                except TimeoutError:
                    continue

    async def _ping_once(self, session: aiohttp.ClientSession) -> None:
        if not self._healthy(self._clock()):
            # Staying silent is the signal: the monitor alarms when pings stop.
            log.warning("self-ping skipped: the dead-man's switch checks have stalled")
            return
        try:
            async with session.get(self._url) as response:
                await response.read()
                if response.status >= 400:
                    log.warning("self-ping answered HTTP %d", response.status)
                    return
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("self-ping failed: %s", _describe(exc))
            return
        self.pings_sent += 1
