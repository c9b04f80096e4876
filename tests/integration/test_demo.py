"""``readybot demo`` (``make demo``) as a person runs it: the banner's tour, read on Element's crypto.

The demo is started as a process, as the README says; its two people log in
with Element's 2026 crypto (matrix-js-sdk, Rust crypto, own device
cross-signed, "exclude insecure devices" on) using the passwords the banner
prints, and walk the banner's tour. Ctrl-C must leave no process and no file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.demo.synapse import find_synapse_python
from tests.integration.element import (
    ELEMENT_MISSING,
    ElementEvent,
    ElementPerson,
    find_element_runtime,
)
from tests.places import in_ci

pytestmark = [pytest.mark.timeout(240), pytest.mark.integration, pytest.mark.slow]

READY_TARGET_S = 15.0
BANNER_END = "press Ctrl-C to stop"
# The tour at a tenth of its pace: the alert group resolves ~6.5 s after the first command.
PACE = "0.1"
WAIT_S = 60.0


@dataclass
class Demo:
    process: asyncio.subprocess.Process
    tmp: Path
    lines: list[str]
    ready_after_s: float

    def value(self, label: str) -> str:
        """A banner field: ``operator   : @operator:localhost   password: …`` → its text after the colon."""
        for line in self.lines:
            if line.strip().startswith(label) and ":" in line:
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no {label!r} line in the banner:\n" + "\n".join(self.lines))

    def account(self, label: str) -> tuple[str, str]:
        match = re.fullmatch(r"(@\S+)\s+password: (\S+)", self.value(label))
        assert match, self.value(label)
        return match[1], match[2]


def _skip_or_fail(reason: str) -> None:
    (pytest.fail if in_ci() else pytest.skip)(reason)


async def _read_lines(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode(errors="replace").rstrip("\n"))


def _processes_mentioning(path: Path) -> list[str]:
    """Processes whose command line names ``path`` (Synapse's and Alertmanager's do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(path) in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    if find_synapse_python() is None:
        _skip_or_fail("Synapse is not installed (uv sync --extra demo)")
    readybot = Path(sys.executable).parent / "readybot"
    demo_tmp = tmp_path / "tmp"
    demo_tmp.mkdir()
    env = os.environ | {"TMPDIR": str(demo_tmp), "PYTHONUNBUFFERED": "1"}
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(readybot),
        "demo",
        "--tour-pace",
        PACE,
        stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "demo.log").open("wb"),
        env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    reader = asyncio.create_task(_read_lines(process.stdout, lines))
    try:
        async with asyncio.timeout(60):
            while not any(BANNER_END in line for line in lines):
                assert process.returncode is None, (tmp_path / "demo.log").read_text()[-3000:]
                await asyncio.sleep(0.05)
        ready_after_s = time.monotonic() - began
        yield Demo(process, demo_tmp, lines, ready_after_s)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.wait_for(reader, 5)


@pytest.fixture
async def element_people(tmp_path: Path) -> AsyncIterator[list[ElementPerson]]:
    runtime = find_element_runtime()
    if runtime is None:
        _skip_or_fail(ELEMENT_MISSING)
    assert runtime is not None
    people: list[ElementPerson] = []
    for name in ("operator", "approver"):
        people.append(await ElementPerson.start(runtime, tmp_path / "element" / f"{name}.log"))
    try:
        yield people
    finally:
        for person in people:
            await person.close()


async def element_2026(person: ElementPerson, homeserver: str, user_id: str, password: str) -> None:
    """Logged in as Element runs today: own device cross-signed, only cross-signed devices trusted."""
    await person.login(homeserver, user_id, password)
    status = await person.bootstrap_cross_signing()
    assert status["device_signed_by_owner"], status
    await person.set_isolation("only_signed")


def from_bot(bot: str, test: Callable[[str, ElementEvent], bool]) -> Callable[[ElementEvent], bool]:
    """A bot message, decrypted, whose text (an edit's new text) passes ``test``."""

    def matches(event: ElementEvent) -> bool:
        if event.sender != bot or event.type != "m.room.message" or event.decryption_failure:
            return False
        new = event.content.get("m.new_content") or {}
        return test(str(new.get("body") or event.content.get("body") or ""), event)

    return matches


def reply_to(command: str) -> Callable[[str, ElementEvent], bool]:
    def test(_: str, event: ElementEvent) -> bool:
        return event.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == command

    return test


def edit_of(event_id: str, text: str) -> Callable[[str, ElementEvent], bool]:
    def test(body: str, event: ElementEvent) -> bool:
        relates = event.content.get("m.relates_to", {})
        return relates.get("rel_type") == "m.replace" and relates.get("event_id") == event_id and text in body

    return test


def starts(text: str) -> Callable[[str, ElementEvent], bool]:
    def test(body: str, event: ElementEvent) -> bool:
        return "m.new_content" not in event.content and text in body

    return test


async def test_the_demo_tour_works_for_two_element_people_and_ctrl_c_leaves_nothing(
    demo: Demo, element_people: list[ElementPerson], record_property: Callable[[str, object], None]
) -> None:
    """Element-2026 people walk the tour: scorecard, sync, alert, Falco, backups; Ctrl-C leaves nothing."""
    record_property("demo_ready_s", round(demo.ready_after_s, 2))
    # The target is 15 s on an idle machine; twice that here, where other tests share the cores.
    assert demo.ready_after_s <= READY_TARGET_S * 2, f"banner after {demo.ready_after_s:.1f} s"
    homeserver = demo.value("homeserver").split()[0]
    room = re.search(r"\((![^)]+)\)", demo.value("room"))
    assert room and "#readybot-demo:localhost" in demo.value("room")
    room_id = room[1]
    bot = demo.value("bot").split()[0]
    assert "SIMULATED" in demo.value("cluster")
    operator, approver = element_people
    await asyncio.gather(
        element_2026(operator, homeserver, *demo.account("operator")),
        element_2026(approver, homeserver, *demo.account("approver")),
    )

    async def ask(person: ElementPerson, command: str, expect: Callable[[str], bool]) -> ElementEvent:
        sent = await person.send_text(room_id, command, wait_members=[bot])
        answer = await person.wait_for(
            from_bot(bot, reply_to(sent)), room_id=room_id, timeout=WAIT_S, what=f"the answer to {command}"
        )
        assert answer.shield is not None and answer.shield.colour == "none", answer.shield
        assert expect(answer.body or ""), answer.body
        return answer

    # The scorecard of the seeded cluster: passes, failures, unknowns (no Prometheus) and manual checks.
    card = await ask(operator, "!readiness status", lambda body: "checked criteria pass" in body)
    assert all(icon in (card.body or "") for icon in ("✅", "❌")), card.body

    # The gate: the operator asks, the approver's ✅ starts the (simulated) sync, the prompt follows it.
    prompt = await ask(operator, "!sync cilium", lambda body: "Sync request" in body)
    await approver.react(room_id, prompt.event_id, "✅")
    await operator.wait_for(
        from_bot(bot, edit_of(prompt.event_id, "✅ Synced")),
        room_id=room_id,
        timeout=WAIT_S,
        what="the prompt edited to the sync's success",
    )
    await ask(approver, "!apps", lambda body: "simulated" in body and "argocd/cilium · Synced" in body)

    # The tour (it started with the first command): an alert group fires, then is edited to resolved.
    group = await operator.wait_for(
        from_bot(bot, starts("KubePodCrashLooping")), room_id=room_id, timeout=WAIT_S, what="the alert group"
    )
    assert "FIRING" in (group.body or ""), group.body
    await operator.wait_for(
        from_bot(bot, edit_of(group.event_id, "RESOLVED")),
        room_id=room_id,
        timeout=WAIT_S,
        what="the alert group edited to resolved",
    )
    # 20 shell events in one pod: one message, its count edited up to ×20 (or posted so at once).
    await operator.wait_for(
        from_bot(bot, lambda body, _: "Terminal shell in container" in body and "×20" in body),
        room_id=room_id,
        timeout=WAIT_S,
        what="the Falco message counting 20 events",
    )
    await ask(approver, "!backups", lambda body: "velero-daily-cluster" in body and "Failed" in body)

    demo.process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(demo.process.wait(), 30) == 0
    assert _processes_mentioning(demo.tmp) == []
    assert list(demo.tmp.iterdir()) == []
