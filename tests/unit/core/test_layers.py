"""The layering rule: commands reach the outside world only through services."""

from __future__ import annotations

import subprocess
import sys

ADAPTER_LIBRARIES = ("nio", "aiohttp", "kubernetes")


def test_commands_import_no_matrix_http_or_kubernetes_library() -> None:
    """Importing every command module loads neither nio, aiohttp nor kubernetes."""
    probe = (
        "import sys, commands; commands.load_all(); "
        f"print(sorted(m for m in {ADAPTER_LIBRARIES!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
