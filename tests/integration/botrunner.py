"""Run the real bot in-process against the test Synapse, stop and restart it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import ReadyBot
from commands.registry import CommandRegistry
from config.settings import Settings
from tests.integration.people import Account

START_TIMEOUT_S = 30.0


def bot_config(
    base_url: str, account: Account, state: Path, rooms: list[str], **sections: Any
) -> dict[str, Any]:
    """The configuration (as loaded from YAML) of a bot on the test homeserver with its state under ``state``.

    Each keyword is a section whose keys are merged over the defaults here.
    """
    data: dict[str, Any] = {
        "matrix": {
            "homeserver": base_url,
            "user_id": account.user_id,
            "password": account.password,
            "store_dir": str(state / "crypto"),
            "rooms": rooms,
            "sync_timeout_ms": 5_000,
        },
        "http": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(state / "readybot.sqlite3")},
        "outbox": {"max_backoff_s": 1.0},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def bot_settings(base_url: str, account: Account, state: Path, rooms: list[str], **sections: Any) -> Settings:
    """Settings for a bot on the test homeserver with its state under ``state``."""
    return Settings.model_validate(bot_config(base_url, account, state, rooms, **sections))


@dataclass
class RunningBot:
    settings: Settings
    registry: CommandRegistry | None = None
    bot: ReadyBot | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> ReadyBot:
        self._stop = asyncio.Event()
        self.bot = ReadyBot(self.settings, command_registry=self.registry)
        self._task = asyncio.create_task(self.bot.run(self._stop))
        ready = asyncio.create_task(self.bot.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED"
        )
        if ready not in done:
            ready.cancel()
            if self._task in done:
                self._task.result()  # raise the bot's own error
            raise TimeoutError("the bot did not become ready")
        return self.bot

    async def stop(self) -> float:
        """Stop as SIGTERM would; returns how long the shutdown took."""
        assert self._task is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._stop.set()
        await asyncio.wait_for(self._task, timeout=15)
        self._task = None
        return loop.time() - began

    async def close(self) -> None:
        if self._task is not None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=15)


async def eventually(check: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
    """Until ``check()`` holds (it reads what a person's client has received), at most ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for {what}") from None
