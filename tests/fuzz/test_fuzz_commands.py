"""Fuzz: any chat command line gets a result, a usage or a permission answer, never an internal error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings

from tests.fuzz.conftest import FUZZ
from tests.fuzz.fuzz_commands import ADMIN, COMMANDS, GUEST


@pytest.fixture(scope="module", autouse=True)
def _close_store() -> Iterator[None]:
    yield
    COMMANDS.close()


@settings(FUZZ, max_examples=500)
@given(COMMANDS.strategy)
@example((ADMIN, '!silence job=~"(" 2h'))  # an invalid regex matcher: a usage answer, not a crash
@example((ADMIN, "!falco mute " + "x" * 5_000 + " 2h"))
@example((GUEST, "!readiness status 1.3.1"))
@example((ADMIN, "!help " + "\u0000" * 100))
def test_any_command_line_is_answered_without_an_internal_error(case: tuple[str, str]) -> None:
    """Any line after the prefix: audited once, ok/usage/denied/refused/unknown, the answer fits an event."""
    COMMANDS.check(case)
