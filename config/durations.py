"""Durations as people type them: ``30m``, ``2h``, ``1d``, ``1h30m``.

The same syntax is used in the configuration (``silence_default_duration: 2h``)
and in chat (``!silence … 2h``), so it lives here, below both.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

# Largest unit first, as Prometheus and Alertmanager write durations.
UNITS: dict[str, int] = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_SHAPE = re.compile(r"(?:\d+[wdhms])+")
_PART = re.compile(r"(\d+)([wdhms])")
DURATION_HINT = "a duration such as 30m, 2h, 1d or 1h30m"


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` → 90 minutes. Raises ``ValueError`` naming the expected shape.

    Units must appear at most once and largest first (``1h30m``, not
    ``30m1h``): a typo such as ``1m1h`` is more likely than that intent.
    """
    cleaned = text.strip().lower()
    if not _SHAPE.fullmatch(cleaned):
        raise ValueError(f"not {DURATION_HINT}")
    order = list(UNITS)
    seconds = 0
    last = -1
    for amount, unit in _PART.findall(cleaned):
        position = order.index(unit)
        if position <= last:
            raise ValueError(f"units out of order or repeated; write {DURATION_HINT}")
        last = position
        seconds += int(amount) * UNITS[unit]
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | float) -> str:
    """The two largest non-zero units, compact: ``2h``, ``1h30m``, ``5m12s``, ``0s``."""
    seconds = round(value.total_seconds() if isinstance(value, timedelta) else value)
    seconds = max(seconds, 0)
    parts: list[str] = []
    for unit, size in UNITS.items():
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
        if len(parts) == 2:
            break
    return "".join(parts) or "0s"


def _coerce(value: object) -> object:
    # Strings use the chat syntax; bare numbers (YAML `90`, an env var "90") are seconds.
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(stripped))
        return parse_duration(stripped)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


# A settings field holding a duration: "2h" or 7200 in YAML / environment.
Duration = Annotated[timedelta, BeforeValidator(_coerce), AfterValidator(_positive)]
