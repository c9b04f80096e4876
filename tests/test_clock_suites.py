"""The list of clock suites in tests/conftest.py names files that exist."""

from __future__ import annotations

from tests.conftest import CLOCK_SUITES


def test_every_clock_suite_exists() -> None:
    """A moved or renamed test file would silently drop out of CI's faketime run: every path must exist."""
    missing = [str(path) for path in CLOCK_SUITES if not path.is_file()]
    assert missing == []
