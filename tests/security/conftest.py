"""The security suite's shared stage: one bot, four people, three rooms and a cluster per module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.demo.synapse import SynapseServer
from tests.kube.handle import open_target
from tests.security.stage import Stage, build_stage


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stage(synapse: SynapseServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stage]:
    """The bot (a subprocess) and everyone around it, shared by every row of a module's table."""
    workdir = tmp_path_factory.mktemp("security")
    with open_target(workdir) as kube:
        kube.require_server()  # the rows read the test API server's record of writes
        async with contextlib.AsyncExitStack() as close:
            yield await build_stage(synapse, kube, workdir, close)
