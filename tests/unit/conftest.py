"""Unit-test guard: a test that leaves asyncio tasks running fails (kopf's ``_no_asyncio_pending_tasks``).

The bot is built on spawned tasks (relay commits, outbox rooms, handlers);
one left running after its test is a task the bot would leak in production.
Only async tests are guarded: the check runs in the test's own event loop,
right after the test, before the teardown of the fixtures it used.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked: set[asyncio.Task[object]] = set()
    # Give tasks cancelled at the end of the test a few turns to finish.
    for _ in range(10):
        leaked = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()}
        if not leaked:
            return
        await asyncio.sleep(0)
    names = ", ".join(sorted(t.get_name() for t in leaked))
    pytest.fail(f"the test left {len(leaked)} asyncio task(s) running: {names}", pytrace=False)


@pytest.fixture(autouse=True)
def _guard_async_tests(request: pytest.FixtureRequest) -> None:
    if inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        request.getfixturevalue("_no_leaked_tasks")
