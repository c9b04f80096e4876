"""The upstream test data in tests/upstream/ is what its SOURCES.md says, and what ../shared holds."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.places import UPSTREAM, shared_path


def sources() -> dict[str, tuple[int, str | None]]:
    """``local file → (bytes, git blob id or None)`` from the table in tests/upstream/SOURCES.md."""
    rows = {}
    for line in (UPSTREAM / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        # | `local file` | bytes | repo | path | commit | blob | license | what it is |
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) == 8 and cells[0].startswith("`"):
            blob = cells[5] if re.fullmatch(r"[0-9a-f]{40}", cells[5]) else None
            rows[cells[0].strip("`")] = (int(cells[1]), blob)
    return rows


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def data_files() -> list[str]:
    return sorted(
        str(p.relative_to(UPSTREAM)) for p in UPSTREAM.rglob("*") if p.is_file() and p.name != "SOURCES.md"
    )


def test_every_data_file_has_a_row_in_sources_and_every_row_a_file() -> None:
    """SOURCES.md lists exactly the files in tests/upstream/ (14 of them)."""
    assert sorted(sources()) == data_files()
    assert len(data_files()) == 14


@pytest.mark.parametrize("name", data_files())
def test_a_data_file_has_the_size_and_git_blob_id_sources_gives(name: str) -> None:
    """The copy is byte for byte the upstream blob (or, for the hand-extracted Falco events, its size)."""
    size, blob = sources()[name]
    path = UPSTREAM / name
    assert path.stat().st_size == size
    if blob is not None:
        assert git_blob_id(path) == blob


def test_the_copies_equal_the_teams_fixtures_in_shared() -> None:
    """Each file in tests/upstream/ equals ../shared/fixtures/<same path> (CI; a skip without ../shared)."""
    shared = shared_path("fixtures")
    different = [
        name for name in data_files() if (shared / name).read_bytes() != (UPSTREAM / name).read_bytes()
    ]
    assert not different
