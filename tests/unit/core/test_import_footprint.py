"""What importing the bot loads: PostgreSQL's driver only when the store asks for it."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import bot.app, nio, peewee
loaded_early = "psycopg" in sys.modules
import psycopg
print(loaded_early, psycopg.__name__)
"""


def test_bot_and_nio_do_not_load_psycopg_but_it_still_imports() -> None:
    """Importing the bot and nio leaves psycopg unloaded, and a later `import psycopg` still works."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "psycopg"]
