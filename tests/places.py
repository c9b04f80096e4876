"""Where tests find their material: the repository's own copies, or ``../shared`` beside the clone.

Everything ``make test`` needs is in the repository (``tests/upstream/`` holds
the upstream events, policies and Applications; ``tests/kube/crds.py`` the
resource definitions). Only the tests that check the project *against* the
team's material in ``../shared`` (the operators' plan, the upstream CRDs) read
it, through ``shared_path``: without ``../shared`` they skip, naming it, and
under CI (where ``../shared`` is beside the clone) they fail instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "tests" / "upstream"
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
