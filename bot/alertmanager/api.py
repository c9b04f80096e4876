"""A small client for Alertmanager's API v2: alerts, silences, status.

Every call has a timeout. Failures become two errors whose messages are safe
to show in the room: ``AlertmanagerUnreachable`` (network, timeout, 5xx) and
``AlertmanagerRejected`` (4xx, with Alertmanager's own explanation). A change
that was sent but never answered (timeout, lost connection) raises
``AlertmanagerNoAnswer``, a kind of unreachable whose outcome is unknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.alertmanager.matchers import Matcher
from bot.alertmanager.models import (
    Alert,
    AlertmanagerNoAnswer,
    AlertmanagerRejected,
    AlertmanagerUnreachable,
    Silence,
)

__all__ = [
    "Alert",
    "AlertmanagerApi",
    "AlertmanagerNoAnswer",
    "AlertmanagerRejected",
    "AlertmanagerUnreachable",
    "Silence",
]

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 300


class AlertmanagerApi:
    """One Alertmanager, reached at ``base_url`` (its external URL, route prefix included)."""

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s

    async def alerts(
        self,
        filters: Sequence[Matcher] = (),
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
    ) -> list[Alert]:
        """Alerts Alertmanager holds now, narrowed by ``filters`` (matchers) and state."""
        params: list[tuple[str, str]] = [
            ("active", _flag(active)),
            ("silenced", _flag(silenced)),
            ("inhibited", _flag(inhibited)),
        ]
        params.extend(("filter", str(matcher)) for matcher in filters)
        data = await self._request("GET", "/api/v2/alerts", params=params)
        return [_alert(item) for item in _list(data)]

    async def silences(self) -> list[Silence]:
        """Every silence Alertmanager knows, expired ones included."""
        data = await self._request("GET", "/api/v2/silences")
        return [_silence(item) for item in _list(data)]

    async def create_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """Create a silence; return its id."""
        body = {
            "matchers": [matcher.to_api() for matcher in matchers],
            "startsAt": _timestamp(starts_at),
            "endsAt": _timestamp(ends_at),
            "createdBy": created_by,
            "comment": comment,
        }
        data = await self._request("POST", "/api/v2/silences", body=body)
        silence_id = data.get("silenceID") if isinstance(data, dict) else None
        if not isinstance(silence_id, str):
            raise AlertmanagerUnreachable("unexpected answer to a new silence")
        return silence_id

    async def expire_silence(self, silence_id: str) -> None:
        """Expire (end now) the silence ``silence_id``."""
        await self._request("DELETE", f"/api/v2/silence/{quote(silence_id, safe='')}")

    async def status(self) -> dict[str, Any]:
        """``GET /api/v2/status``: version, cluster, uptime and the loaded configuration."""
        data = await self._request("GET", "/api/v2/status")
        if not isinstance(data, dict):
            raise AlertmanagerUnreachable("unexpected answer to a status request")
        return data

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: object = None,
    ) -> Any:
        url = f"{self.base_url}{path}"
        try:
            # A session per call: commands are rare, and nothing is left to close at shutdown.
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.request(method, url, params=list(params), json=body) as response,
            ):
                raw = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            # Never connected: nothing was sent, whatever the method.
            raise AlertmanagerUnreachable(f"cannot connect to {exc.host}:{exc.port}") from None
        except aiohttp.ConnectionTimeoutError:
            raise AlertmanagerUnreachable(f"cannot connect within {self._timeout_s:g} s") from None
        except TimeoutError:
            raise _no_answer(method, f"no answer within {self._timeout_s:g} s") from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise _no_answer(method, type(exc).__name__) from None
        if status == 500 and b"not found" in raw:
            # Alertmanager 0.25 answers an unknown silence id with a 500.
            raise AlertmanagerRejected(404, _error_text(raw))
        if status >= 500:
            log.warning("alertmanager %s %s: HTTP %d", method, path, status)
            raise AlertmanagerUnreachable(f"HTTP {status}: {_error_text(raw)}")
        if status >= 400:
            raise AlertmanagerRejected(status, _error_text(raw))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise AlertmanagerUnreachable("the answer was not JSON") from None


def _no_answer(method: str, reason: str) -> AlertmanagerUnreachable:
    """A read that got no answer changed nothing; a change that got none may have been made."""
    if method in ("GET", "HEAD"):
        return AlertmanagerUnreachable(reason)
    return AlertmanagerNoAnswer(reason)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise AlertmanagerUnreachable("unexpected answer: a time is missing")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _list(data: object) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise AlertmanagerUnreachable("unexpected answer: not a list")
    return data


def _alert(item: dict[str, Any]) -> Alert:
    status = item.get("status") or {}
    return Alert(
        fingerprint=str(item.get("fingerprint", "")),
        labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
        starts_at=_parse_time(item.get("startsAt")),
        state=str(status.get("state", "unprocessed")),
        silenced_by=tuple(status.get("silencedBy") or ()),
        inhibited_by=tuple(status.get("inhibitedBy") or ()),
    )


def _silence(item: dict[str, Any]) -> Silence:
    return Silence(
        id=str(item.get("id", "")),
        matchers=tuple(Matcher.from_api(m) for m in item.get("matchers") or ()),
        starts_at=_parse_time(item.get("startsAt")),
        ends_at=_parse_time(item.get("endsAt")),
        created_by=str(item.get("createdBy", "")),
        comment=str(item.get("comment", "")),
        state=str((item.get("status") or {}).get("state", "")),
    )


def _error_text(raw: bytes) -> str:
    """Alertmanager's explanation: a JSON string, an object with ``message``, or plain text."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    if isinstance(data, dict):
        data = data.get("message") or data.get("error") or text
    message = " ".join(str(data).split())
    return message[:_MAX_ERROR_CHARS] or "no reason given"
