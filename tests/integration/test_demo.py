"""``readybot demo`` (``make demo``): the room it makes is the README's, reachable by its alias."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    JoinedMembersResponse,
    LoginResponse,
    RoomGetStateResponse,
    RoomResolveAliasResponse,
)

from bot.demo.run import run_demo
from bot.demo.synapse import find_synapse_python
from tests.places import in_ci

pytestmark = pytest.mark.timeout(90)


async def _wait_for(path: Path, task: asyncio.Task[int], timeout_s: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(path.exists):
        assert not task.done(), f"the demo ended early with {task.result()}"
        assert loop.time() < deadline, f"no {path.name} after {timeout_s} s"
        await asyncio.sleep(0.2)


async def test_the_demo_room_is_owned_by_the_person_has_the_alias_and_the_bot_joins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The person created the room, #readybot-demo:localhost names it, the bot joins, the banner says so."""
    if find_synapse_python() is None:
        (pytest.fail if in_ci() else pytest.skip)("Synapse is not installed (uv sync --extra demo)")
    stop = asyncio.Event()
    demo = asyncio.create_task(run_demo(tmp_path, stop=stop))
    try:
        await _wait_for(tmp_path / "demo.json", demo)
        state = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
        client = AsyncClient(f"http://127.0.0.1:{state['port']}", state["operator_user_id"])
        try:
            assert isinstance(await client.login(state["operator_password"]), LoginResponse)
            resolved = await client.room_resolve_alias("#readybot-demo:localhost")
            assert isinstance(resolved, RoomResolveAliasResponse), resolved
            assert resolved.room_id == state["room_id"]
            room_state = await client.room_get_state(state["room_id"])
            assert isinstance(room_state, RoomGetStateResponse)
            (create,) = [event for event in room_state.events if event["type"] == "m.room.create"]
            assert create["sender"] == state["operator_user_id"]
            members: list[str] = []
            for _ in range(100):  # the bot accepts the invitation once it has started
                joined = await client.joined_members(state["room_id"])
                assert isinstance(joined, JoinedMembersResponse)
                members = [member.user_id for member in joined.members]
                if state["bot_user_id"] in members:
                    break
                await asyncio.sleep(0.2)
            assert state["bot_user_id"] in members
        finally:
            await client.close()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            assert await asyncio.wait_for(demo, 30) == 0
    banner = capsys.readouterr().out
    assert "#readybot-demo:localhost" in banner
    assert "you created it; the bot is invited" in banner
