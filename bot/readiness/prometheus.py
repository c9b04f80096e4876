"""A small client for Prometheus' HTTP API: instant queries and the loaded alerting rules.

Every call has a timeout. Failures become two errors whose messages are safe
to show in the room: ``PrometheusUnreachable`` (network, timeout, 5xx, an
answer that is not Prometheus') and ``PrometheusRejected`` (4xx: a query
Prometheus cannot parse, with Prometheus' own explanation).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.errors import UserError

_MAX_ERROR_CHARS = 300


class PrometheusError(UserError):
    """Any failure of a Prometheus call."""


class PrometheusUnreachable(PrometheusError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Prometheus unreachable: {reason}")


class PrometheusRejected(PrometheusError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Prometheus refused the query: {reason}")


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]
    value: float

    def describe(self) -> str:
        shown = ",".join(f'{name}="{value}"' for name, value in sorted(self.labels.items()))
        number = f"{self.value:g}" if math.isfinite(self.value) else str(self.value)
        return f"{{{shown}}} {number}"


@dataclass(frozen=True, slots=True)
class AlertingRule:
    name: str
    query: str
    group: str
    health: str


class PrometheusApi:
    """One Prometheus, reached at ``base_url`` (its external URL, route prefix included)."""

    def __init__(
        self, base_url: str, *, timeout_s: float, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._session = session

    async def query(self, expr: str) -> list[Sample]:
        """An instant query (``GET /api/v1/query``); a scalar answer is one sample without labels."""
        data = await self._get("/api/v1/query", {"query": expr})
        result_type = data.get("resultType")
        result = data.get("result")
        if result_type == "scalar" and isinstance(result, list):
            return [Sample({}, _number(result))]
        if result_type == "vector" and isinstance(result, list):
            return [
                Sample(
                    {str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                    _number(item.get("value")),
                )
                for item in result
                if isinstance(item, dict)
            ]
        if result_type == "matrix" and isinstance(result, list):
            # A range selector was queried: take each series' newest point.
            return [
                Sample(
                    {str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                    _number((item.get("values") or [[0, "NaN"]])[-1]),
                )
                for item in result
                if isinstance(item, dict)
            ]
        raise PrometheusUnreachable(f"an answer of type {result_type!r} cannot be compared")

    async def alerting_rules(self) -> list[AlertingRule]:
        """Every alerting rule Prometheus has loaded (``GET /api/v1/rules?type=alert``)."""
        data = await self._get("/api/v1/rules", {"type": "alert"})
        rules: list[AlertingRule] = []
        for group in data.get("groups") or []:
            for rule in group.get("rules") or []:
                if rule.get("type") == "alerting":
                    rules.append(
                        AlertingRule(
                            name=str(rule.get("name", "")),
                            query=str(rule.get("query", "")),
                            group=str(group.get("name", "")),
                            health=str(rule.get("health", "unknown")),
                        )
                    )
        return rules

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            if self._session is not None:
                raw, status = await self._fetch(self._session, url, params)
            else:
                async with aiohttp.ClientSession(timeout=self._timeout) as session:
                    raw, status = await self._fetch(session, url, params)
        except TimeoutError:
            raise PrometheusUnreachable(f"no answer within {self._timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as error:
            raise PrometheusUnreachable(f"cannot connect to {error.host}:{error.port}") from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as error:
            raise PrometheusUnreachable(type(error).__name__) from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise PrometheusUnreachable(f"HTTP {status}, and the answer is not JSON") from None
        if not isinstance(body, dict):
            raise PrometheusUnreachable("unexpected answer")
        if status >= 500:
            raise PrometheusUnreachable(f"HTTP {status}: {_error_text(body)}")
        if status >= 400 or body.get("status") != "success":
            raise PrometheusRejected(_error_text(body))
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusUnreachable("unexpected answer: no data")
        return data

    async def _fetch(
        self, session: aiohttp.ClientSession, url: str, params: dict[str, str]
    ) -> tuple[bytes, int]:
        async with session.get(url, params=params, timeout=self._timeout) as response:
            return await response.read(), response.status


def _number(value: object) -> float:
    # Prometheus sends [timestamp, "value"], the value as a string ("NaN", "+Inf" included).
    if isinstance(value, list) and len(value) == 2:
        try:
            return float(value[1])
        except (TypeError, ValueError):
            return math.nan
    return math.nan


def _error_text(body: dict[str, Any]) -> str:
    text = str(body.get("error") or body.get("errorType") or "no reason given")
    return " ".join(text.split())[:_MAX_ERROR_CHARS]
