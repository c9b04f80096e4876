"""The Alertmanager client's failures: what was never sent, and what was sent but never answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.alertmanager.api import AlertmanagerApi, AlertmanagerNoAnswer, AlertmanagerUnreachable
from bot.alertmanager.matchers import Matcher
from bot.demo.synapse import free_port


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server on 127.0.0.1 that reads each request and never answers, as a hung Alertmanager."""
    received: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        received.append(await reader.read(65_536))

    server = await asyncio.start_server(take, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, received
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def create(api: AlertmanagerApi) -> str:
    now = datetime.now(UTC)
    return await api.create_silence([Matcher("alertname", "X")], now, now + timedelta(hours=1), "@a:b", "c")


async def test_a_change_sent_but_never_answered_is_no_answer(silent_server: tuple[int, list[bytes]]) -> None:
    """POST and DELETE that reached the server and timed out raise AlertmanagerNoAnswer."""
    port, received = silent_server
    api = AlertmanagerApi(f"http://127.0.0.1:{port}", timeout_s=0.3)
    with pytest.raises(AlertmanagerNoAnswer, match=r"no answer within 0\.3 s"):
        await create(api)
    with pytest.raises(AlertmanagerNoAnswer):
        await api.expire_silence("abc")
    assert [r.split(b" ", 2)[:2] for r in received] == [
        [b"POST", b"/api/v2/silences"],
        [b"DELETE", b"/api/v2/silence/abc"],
    ]


async def test_a_read_never_answered_is_plainly_unreachable(silent_server: tuple[int, list[bytes]]) -> None:
    """A GET that timed out changed nothing: AlertmanagerUnreachable, not the unknown-outcome kind."""
    port, _ = silent_server
    api = AlertmanagerApi(f"http://127.0.0.1:{port}", timeout_s=0.3)
    with pytest.raises(AlertmanagerUnreachable) as caught:
        await api.silences()
    assert not isinstance(caught.value, AlertmanagerNoAnswer)
    assert str(caught.value) == "Alertmanager unreachable: no answer within 0.3 s"


async def test_a_change_that_could_not_connect_is_plainly_unreachable() -> None:
    """Connection refused: nothing was sent, so a POST is AlertmanagerUnreachable, not unknown."""
    port = free_port()
    api = AlertmanagerApi(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(AlertmanagerUnreachable) as caught:
        await create(api)
    assert not isinstance(caught.value, AlertmanagerNoAnswer)
    assert str(caught.value) == f"Alertmanager unreachable: cannot connect to 127.0.0.1:{port}"
