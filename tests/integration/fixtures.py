"""Fixtures for tests against a real Synapse on 127.0.0.1, for every suite that needs one.

A plugin (``pytest_plugins`` in ``tests/conftest.py``) rather than a
conftest, so that tests/integration, tests/faults and tests/security share
them and one Synapse serves the whole session (it takes seconds to start);
each test registers fresh users with unique names, so tests never share state.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from bot.demo.synapse import SYNAPSE_MISSING, SynapseServer, find_synapse_python
from commands.registry import CommandRegistry

from .alertmanager import AlertmanagerServer, find_alertmanager
from .botprocess import BotProcess
from .botrunner import RunningBot, bot_settings
from .element import ELEMENT_MISSING, ElementFactory, ElementPerson, ElementRuntime, find_element_runtime
from .people import Account, Person, PersonFactory, register_account

_TESTS = Path(__file__).parent.parent.resolve()
# The suites whose tests talk to a real homeserver: marked "integration".
_LIVE_SUITES = tuple(_TESTS / name for name in ("integration", "faults", "security"))


ALERTMANAGER_MISSING = (
    "Alertmanager is not installed: apt-get install prometheus-alertmanager (or set READYBOT_ALERTMANAGER)"
)
# alertmanager(config_yaml) -> a started AlertmanagerServer on 127.0.0.1
AlertmanagerFactory = Callable[[str], AlertmanagerServer]
# bot_process(config, name) -> a BotProcess (not started yet), killed at teardown
BotProcessFactory = Callable[..., BotProcess]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not just this directory's.
    for item in items:
        if any(item.path.resolve().is_relative_to(suite) for suite in _LIVE_SUITES):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """One Synapse with open rate limits for the whole test session."""
    if find_synapse_python() is None:
        # Locally a missing optional extra is a skip; in CI it must be loud,
        # or the integration suite could silently stop running.
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(SYNAPSE_MISSING, pytrace=False)
        pytest.skip(SYNAPSE_MISSING)
    server = SynapseServer(tmp_path_factory.mktemp("synapse"), open_rate_limits=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bot_account(synapse: SynapseServer) -> Account:
    """A fresh user for the bot to log in as: (user_id, password)."""
    return register_account(synapse, "readybot")


@pytest.fixture
async def person_factory(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[PersonFactory]:
    """``await person_factory("alice")``: a fresh, logged-in, syncing Person.

    Every Person made here is closed at teardown, even if the test failed.
    """
    people: list[Person] = []

    async def make(prefix: str = "person", *, account: Account | None = None) -> Person:
        # Registration is blocking urllib: keep it off the event loop.
        if account is None:
            account = await asyncio.to_thread(register_account, synapse, prefix)
        store = tmp_path / "people" / uuid.uuid4().hex
        person = await Person.login(synapse.base_url, account.user_id, account.password, store)
        people.append(person)
        return person

    try:
        yield make
    finally:
        for person in people:
            await person.close()


@pytest.fixture(scope="session")
def element_runtime() -> ElementRuntime:
    """Node 22 and the person program of tests/element, installed by ``make element-deps``."""
    runtime = find_element_runtime()
    if runtime is None:
        # As for Synapse: a skip on a developer's machine, a failure in CI.
        if in_ci():
            pytest.fail(ELEMENT_MISSING, pytrace=False)
        pytest.skip(ELEMENT_MISSING)
    return runtime


@pytest.fixture
async def element_factory(
    element_runtime: ElementRuntime, synapse: SynapseServer, tmp_path: Path
) -> AsyncIterator[ElementFactory]:
    """``await element_factory("alice")``: a fresh, logged-in ElementPerson (matrix-js-sdk, Rust crypto).

    Each runs in its own Node process, logging to ``<tmp_path>/element/``;
    every one made here is stopped (or killed) at teardown.
    """
    people: list[ElementPerson] = []

    async def make(prefix: str = "element", *, account: Account | None = None) -> ElementPerson:
        if account is None:
            account = await asyncio.to_thread(register_account, synapse, prefix)
        log_path = tmp_path / "element" / f"{account.user_id.split(':')[0].lstrip('@')}-{len(people)}.log"
        person = await ElementPerson.start(element_runtime, log_path)
        people.append(person)
        await person.login(synapse.base_url, account.user_id, account.password)
        return person

    try:
        yield make
    finally:
        for person in people:
            await person.close()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerFactory]:
    """``alertmanager(config_yaml)``: a real Alertmanager started on 127.0.0.1, stopped at teardown.

    A factory, because the configuration routes to the bot, whose port is
    known only once it runs; each test may stop and start its own instance.
    """
    if find_alertmanager() is None:
        # As for Synapse: a skip on a developer's machine, a failure in CI.
        if in_ci():
            pytest.fail(ALERTMANAGER_MISSING, pytrace=False)
        pytest.skip(ALERTMANAGER_MISSING)
    servers: list[AlertmanagerServer] = []

    def make(config_yaml: str) -> AlertmanagerServer:
        server = AlertmanagerServer(tmp_path / f"alertmanager-{len(servers)}", config_yaml)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
async def bots(synapse: SynapseServer) -> AsyncIterator[list[RunningBot]]:
    """Every bot a test starts (append a RunningBot), stopped at teardown before Synapse."""
    running: list[RunningBot] = []
    yield running
    for bot in running:
        await bot.close()


@pytest.fixture
def bot_process(synapse: SynapseServer, tmp_path: Path) -> Iterator[BotProcessFactory]:
    """``bot_process(config, name="bot")``: the bot as a subprocess (not yet started), killed at teardown.

    ``config`` is what ``botrunner.bot_config`` builds; its password is moved
    into the environment, as a deployment would pass it, so that no config
    file on disk holds it.
    """
    processes: list[BotProcess] = []

    def make(config: dict[str, Any], name: str = "bot") -> BotProcess:
        env = {}
        password = config.get("matrix", {}).pop("password", None)
        if password is not None:
            env["READYBOT_MATRIX__PASSWORD"] = str(password)
        process = BotProcess(config, tmp_path / name, env=env)
        processes.append(process)
        return process

    try:
        yield make
    finally:
        for process in processes:
            process.close()


# -- the bot serving one person's encrypted room ------------------------------------


async def start_bot(
    bots: list[RunningBot],
    synapse: SynapseServer,
    account: Account,
    state: Path,
    rooms: list[str],
    registry: CommandRegistry | None = None,
    **sections: Any,
) -> RunningBot:
    runner = RunningBot(bot_settings(synapse.base_url, account, state, rooms, **sections), registry)
    bots.append(runner)
    await runner.start()
    return runner


class Served(NamedTuple):
    alice: Person
    room: str
    runner: RunningBot


ServeAlice = Callable[..., Awaitable[Served]]


@pytest.fixture
def serve_alice(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bots: list[RunningBot],
    tmp_path: Path,
) -> ServeAlice:
    """``await serve_alice(**sections)``: Alice's encrypted room, the bot serving it and joined."""

    async def serve(registry: CommandRegistry | None = None, **sections: Any) -> Served:
        alice = await person_factory("alice")
        room = await room_with_bot(alice, bot_account.user_id)
        runner = await start_bot(bots, synapse, bot_account, tmp_path / "bot", [room], registry, **sections)
        await alice.wait_joined(room, bot_account.user_id)
        return Served(alice, room, runner)

    return serve


async def room_with_bot(person: Person, bot_user: str) -> str:
    return await person.create_room("alerts", encrypted=True, invite=[bot_user])
