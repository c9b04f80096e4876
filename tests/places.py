"""Where tests find their material: the repository itself, or ``../shared`` beside the clone.

Everything ``make test`` needs is written in the repository (``tests/samples.py``
holds events and objects shaped as the upstream components write them;
``tests/kube/crds.py`` the resource definitions). Only the tests that check the
project *against* the team's material in ``../shared`` (the operators' plan, the
upstream CRDs, payloads and objects) read it, through ``shared_path`` or
``upstream``: without ``../shared`` they skip, naming it, and under CI (where
``../shared`` is beside the clone) they fail instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def in_ci() -> bool:
    """``CI`` is set to something truthy (CI runs ``.ci/run`` with ``CI=true``)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def shared_path(relative: str) -> Path:
    """``../shared/<relative>``; a skip when it is missing, a failure when it is missing under CI."""
    path = SHARED / relative
    if path.exists():
        return path
    reason = f"needs ../shared/{relative} beside the repository (no {path})"
    if in_ci():
        pytest.fail(f"{reason}: CI must have ../shared beside the clone", pytrace=False)
    pytest.skip(f"{reason}; runs in CI")


def upstream(relative: str) -> Path:
    """An upstream fixture, ``../shared/fixtures/<relative>`` (skip without it; fail in CI)."""
    return shared_path(f"fixtures/{relative}")


def upstream_files(folder: str, pattern: str) -> list[Path]:
    """The upstream fixtures in a folder, for parametrising; [] when ../shared is not there.

    A test parametrised over an empty list would pass without running: pair
    it with ``upstream(folder)`` in the test body, which skips or fails.
    """
    path = SHARED / "fixtures" / folder
    return sorted(path.glob(pattern)) if path.is_dir() else []
