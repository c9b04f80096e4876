"""The fuzz targets, defined once: a Hypothesis strategy and a check that raises on a broken property.

The CI tests (``tests/fuzz/test_*.py``) and the long run (``bench/fuzz.py``)
both drive these through ``@given``, so a case the bench finds can be
replayed as an ``@example`` in the tests without translating it.

Properties (issue 8): whatever arrives,
- a chat command gets a result, a usage or a permission answer, never an
  exception and never "internal error";
- a webhook answer is 2xx or 4xx, never 5xx, and the server raises nothing;
- a rendered event, sent as an encrypted edit, stays under 65,536 bytes and
  rendering raises nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st

from bot.outbox import OutboxKind, build_event

T = TypeVar("T")

# Matrix's limit on a whole event (the spec's "65536 bytes"), what the checks compare to.
EVENT_LIMIT = 65_536


class PropertyViolated(AssertionError):
    """A target's property does not hold for a case (as opposed to a crash of the code under test)."""


@dataclass
class Target:
    """One thing to fuzz: what to generate, what must hold, and how to release what the check opened."""

    name: str
    summary: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    close: Callable[[], None] = field(default=lambda: None)
    # One line of what the cases reached (answers by status, outcomes), for the bench's report.
    stats: Callable[[], str] = field(default=lambda: "")


def encrypted_edit_size(content: dict[str, Any], kind: OutboxKind = OutboxKind.EDIT) -> int:
    """Bytes of the event carrying ``content`` in an encrypted room, the worst case.

    As the existing size tests measure it (tests/unit/alertmanager/test_alert_relay.py):
    the content built as the outbox sends it (an edit carries the text twice),
    with the longest event and room ids, ASCII-escaped JSON as nio sends it,
    base64'd by Megolm (4/3), plus 2,000 bytes for the encrypted envelope.
    """
    _, event = build_event(kind, content, "$" + "x" * 254, "$" + "y" * 254)
    plaintext = len(json.dumps({"type": "m.room.message", "content": event, "room_id": "!" + "r" * 254}))
    return plaintext * 4 // 3 + 4 + 2_000


def check_event_size(content: dict[str, Any], what: str, kind: OutboxKind = OutboxKind.EDIT) -> None:
    size = encrypted_edit_size(content, kind)
    if size >= EVENT_LIMIT:
        raise PropertyViolated(f"{what}: {size} bytes as an encrypted {kind.value}, limit {EVENT_LIMIT}")


class LoopHost:
    """One event loop kept across cases: a new loop per case would cost more than most checks.

    Async state (a store, an HTTP server) is opened lazily on the host's loop
    by ``setup`` and released by ``close``; the checks stay synchronous
    functions, which is what ``@given`` drives.
    """

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coro)

    def close(self, cleanup: Coroutine[Any, Any, None] | None = None) -> None:
        if self._runner is None:
            if cleanup is not None:
                cleanup.close()
            return
        if cleanup is not None:
            self._runner.run(cleanup)
        self._runner.close()
        self._runner = None


def all_targets() -> list[Target]:
    """Every target, in the order the bench runs them (imported here so each module stays small)."""
    from tests.fuzz.fuzz_commands import COMMANDS
    from tests.fuzz.fuzz_renderers import RENDERERS
    from tests.fuzz.fuzz_webhooks import WEBHOOKS

    return [COMMANDS, WEBHOOKS, *RENDERERS]


def target(name: str) -> Target:
    for candidate in all_targets():
        if candidate.name == name:
            return candidate
    raise KeyError(name)
