"""The HTTP side: /healthz, /readyz, /metrics and the authenticated /hooks/<name> prefix.

Every /hooks request is authenticated before routing, so an unauthenticated
caller learns nothing (not even which hooks exist): 401 for all of them. A
hook with no token configured is closed, never open.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from bot.http.common import BODY_LIMIT, body_too_large
from bot.metrics import Metrics

log = logging.getLogger(__name__)

HookHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Set on an authenticated hook request: the scope of the token that matched,
# e.g. "team-a" for `http.hook_tokens["alertmanager/team-a"]`, or None for
# the hook-wide token `http.hook_tokens["alertmanager"]`. A hook whose payload
# names a sender (Alertmanager's receiver) refuses a scoped token for another.
TOKEN_SCOPE = web.RequestKey("token_scope", object)
UNSCOPED = None
# /metrics waits at most this long for values read at scrape time (the
# outbox depth comes from the store). Behind a locked store that read queues
# behind writers each waiting out the busy timeout, and the scrape would time
# out just when the store-fault counters matter; they are served without it.
METRICS_REFRESH_TIMEOUT_S = 2.0
# What a standby replica answers on /readyz and to a webhook (503: Alertmanager retries).
STANDBY = "standby: not the leader"


@dataclass
class Health:
    """What /readyz reports; the app flips these as it starts."""

    store_open: bool = False
    first_sync_done: bool = False
    reasons: list[str] = field(default_factory=list)
    # None: one replica, always acting. With ha.enabled: whether this replica
    # leads; a standby is not ready, so a Service sends webhooks to the leader.
    leader: bool | None = None

    @property
    def standby(self) -> bool:
        return self.leader is False

    def problems(self) -> list[str]:
        problems = []
        if self.standby:
            problems.append(STANDBY)
        if not self.store_open:
            problems.append("store not open")
        if not self.first_sync_done:
            problems.append("first sync with the homeserver not done")
        return problems


def build_http_app(
    *,
    metrics: Metrics,
    health: Health,
    hook_tokens: Mapping[str, SecretStr],
    hooks: Mapping[str, HookHandler],
    max_body_bytes: int,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
    refresh_timeout_s: float = METRICS_REFRESH_TIMEOUT_S,
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        problems = health.problems()
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ready\n")

    async def metrics_view(_: web.Request) -> web.Response:
        if refresh_metrics is not None:
            try:
                await asyncio.wait_for(refresh_metrics(), refresh_timeout_s)
            except TimeoutError:
                log.warning(
                    "metrics not refreshed within %g s (store busy); serving the last values",
                    refresh_timeout_s,
                )
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def hook(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        matched, scope = _match_token(request, name, hook_tokens)
        if not matched:
            log.info("refused unauthenticated request to /hooks/%s from %s", name, request.remote)
            return _problem(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        request[TOKEN_SCOPE] = scope
        if health.standby:
            # Nothing is accepted here: the leader's store is the one truth,
            # and a 503 makes the sender retry (the Service finds the leader).
            return _problem(503, STANDBY, headers={"Retry-After": "1"})
        handler = hooks.get(name)
        if handler is None:
            return _problem(404, f"no hook named {name!r}")
        request[BODY_LIMIT] = max_body_bytes
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _problem(413, body_too_large(max_body_bytes))
        return await handler(request)

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_route("*", "/hooks/{name}", hook)
    return app


def _match_token(request: web.Request, hook: str, tokens: Mapping[str, SecretStr]) -> tuple[bool, str | None]:
    """Whether the bearer token is one of the hook's; and the scope of the one that matched."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return False, None
    matched: tuple[bool, str | None] = (False, None)
    for key, expected in tokens.items():
        owner, _, scope = key.partition("/")
        if owner != hook:
            continue
        # Constant-time, and every candidate is compared: timing reveals nothing.
        if hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
            matched = (True, scope or None)
    return matched


def _problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": detail}, status=status, headers=headers)
