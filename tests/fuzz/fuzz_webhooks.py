"""Fuzz target ``webhooks``: any request to /hooks/alertmanager and /hooks/falco, over real HTTP.

The bot's HTTP app (``build_http_app``: token check, body limit, routing)
with the real handlers and relays behind them (Alertmanager relay with the
dead-man's switch, Falco relay, one real SQLite store), served by aiohttp on
127.0.0.1 and called by an aiohttp client: a handler that raised would be
answered 500 by aiohttp's server, which the check sees as it would be seen
by Alertmanager.

Bodies are (a) the real upstream payloads with random damage (values of
random types, keys dropped or added, anywhere in the document), (b) arbitrary
JSON documents, (c) arbitrary bytes, (d) the known hostile shapes (deep
nesting, numbers with thousands of digits, invalid UTF-8, bodies over the
limit); with random methods, content types and tokens, and to either hook.

Property: every answer is 2xx or 4xx, never 5xx (the store is healthy, so
not even a 503), and the client sees a complete response.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bot.alertmanager.relay import AlertRelay
from bot.alertmanager.render import AlertRenderer
from bot.alertmanager.store import AlertGroupRepo
from bot.alertmanager.webhook import alertmanager_handler
from bot.deadman.switch import DeadmansSwitch
from bot.falco.relay import FalcoMetrics, FalcoRelay
from bot.falco.render import FalcoRenderer
from bot.falco.store import FalcoRepo
from bot.falco.webhook import WebhookMetrics, falco_handler
from bot.http.server import Health, build_http_app
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store import Database
from config.alertmanager import AlertmanagerSettings
from config.deadman import DeadmanSettings
from config.falco import FalcoSettings
from tests.fuzz.targets import LoopHost, PropertyViolated, Target
from tests.samples import FALCO_EVENTS

ROOT = Path(__file__).resolve().parents[2]
AM_PAYLOADS = ROOT / "tests" / "payloads" / "alertmanager"
ROOM = "!alerts:example.org"
TOKENS = {"alertmanager": "am-token-0123456789", "falco": "falco-token-0123456789"}
# The unit tests' limit: small enough that bodies over it are cheap to generate.
MAX_BODY_BYTES = 65_536
_CASES_PER_STORE = 2_000


def _documents(paths: list[Path]) -> list[dict[str, Any]]:
    """Every JSON object in the files: one per file, or one per line of a JSON Lines file."""
    found: list[dict[str, Any]] = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        try:
            found.append(json.loads(text))
        except json.JSONDecodeError:
            found += [json.loads(line) for line in text.splitlines() if line.strip()]
    return [doc for doc in found if isinstance(doc, dict)]


AM_DOCUMENTS = _documents(sorted(AM_PAYLOADS.glob("*.json")))
FALCO_DOCUMENTS = [dict(event) for event in FALCO_EVENTS.values()]


@dataclass(frozen=True)
class Request:
    hook: str
    method: str
    content_type: str
    token: str
    body: bytes

    def __repr__(self) -> str:  # what a failure report shows: short enough to read
        shown = self.body if len(self.body) <= 400 else self.body[:400] + b"..."
        return (
            f"Request(hook={self.hook!r}, method={self.method!r}, content_type={self.content_type!r}, "
            f"token={self.token!r}, body[{len(self.body)}]={shown!r})"
        )


@dataclass
class _Stack:
    directory: Path
    db: Database
    server: TestServer
    session: aiohttp.ClientSession
    cases: int = 0


class _ServerErrors(logging.Handler):
    """What aiohttp's server logged with a 500: a failure then names the exception, not only the status."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.last = f"{type(error).__name__}: {str(error)[:200]}" if error else record.getMessage()


class WebhookHarness:
    """The HTTP app on 127.0.0.1 with a fresh store every few thousand cases."""

    def __init__(self) -> None:
        self._host = LoopHost()
        self._stack: _Stack | None = None
        # Answers by status, so a run shows that it reached the handlers (200s), not only the 4xx paths.
        self.statuses: Counter[int] = Counter()
        self._errors = _ServerErrors()
        server_log = logging.getLogger("aiohttp.server")
        server_log.addHandler(self._errors)
        # Reported through the failure itself; the traceback per case would drown the run's output.
        server_log.propagate = False

    def check(self, request: Request) -> None:
        self._host.run(self._check(request))

    def close(self) -> None:
        self._host.close(self._drop())

    async def _check(self, request: Request) -> None:
        stack = await self._current()
        url = stack.server.make_url(f"/hooks/{request.hook}")
        headers = {"Authorization": f"Bearer {request.token}"}
        if request.content_type:
            headers["Content-Type"] = request.content_type
        self._errors.last = None
        async with stack.session.request(request.method, url, data=request.body, headers=headers) as answer:
            await answer.read()
            self.statuses[answer.status] += 1
            if answer.status >= 500:
                raise PropertyViolated(
                    f"answered {answer.status} to {request.method} /hooks/{request.hook}"
                    f" (server: {self._errors.last or 'no exception logged'})"
                )

    async def _current(self) -> _Stack:
        if self._stack is not None and self._stack.cases >= _CASES_PER_STORE:
            await self._drop()
        if self._stack is None:
            self._stack = await _open_stack()
        self._stack.cases += 1
        return self._stack

    async def _drop(self) -> None:
        if self._stack is not None:
            await self._stack.session.close()
            await self._stack.server.close()
            await self._stack.db.close()
            shutil.rmtree(self._stack.directory, ignore_errors=True)
            self._stack = None


async def _open_stack() -> _Stack:
    directory = Path(tempfile.mkdtemp(prefix="readybot-fuzz-webhooks-"))
    db = await Database.open(directory / "readybot.sqlite3", migrations=MIGRATIONS)
    outbox = Outbox(db, clock=db.clock)
    templates = Templates()
    metrics = Metrics()
    am_settings = AlertmanagerSettings.model_validate({"enabled": True, "default_rooms": [ROOM]})
    switch = DeadmansSwitch(
        DeadmanSettings(),
        db=db,
        outbox=outbox,
        templates=templates,
        rooms=[ROOM],
        clock=db.clock,
        started_at=db.clock(),
    )
    alerts = AlertRelay(
        db=db,
        outbox=outbox,
        repo=AlertGroupRepo(db),
        renderer=AlertRenderer(templates, am_settings),
        settings=am_settings,
        clock=db.clock,
        heartbeats=switch,
    )
    await alerts.load()
    falco = FalcoRelay(
        db=db,
        outbox=outbox,
        repo=FalcoRepo(db),
        renderer=FalcoRenderer(templates),
        settings=FalcoSettings.model_validate({"enabled": True, "default_rooms": [ROOM]}),
        clock=db.clock,
        metrics=FalcoMetrics(CollectorRegistry()),
    )
    await falco.load()
    app = build_http_app(
        metrics=metrics,
        health=Health(store_open=True, first_sync_done=True),
        hook_tokens={name: SecretStr(token) for name, token in TOKENS.items()},
        hooks={
            "alertmanager": alertmanager_handler(alerts),
            "falco": falco_handler(falco, WebhookMetrics(metrics.registry)),
        },
        max_body_bytes=MAX_BODY_BYTES,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    return _Stack(directory, db, server, session)


# --- what is sent -------------------------------------------------------------------------------

_any_char = st.characters(codec="utf-8", exclude_categories=["Cs"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and Infinity too: Python's json reads them
    st.text(_any_char, max_size=60),
    st.sampled_from(
        [
            "",
            "firing",
            "resolved",
            "4",
            "Critical",
            "Warning",
            "emergency",
            "0001-01-01T00:00:00Z",
            "2026-11-25T10:00:00Z",
            "9999-12-31T23:59:59.999999999-23:59",
            "0001-01-01T00:00:00+23:59",
            "2026-02-30T00:00:00Z",
            "1e309",
            "Test rule",
            "Watchdog",
            " ",
            "\u0000",
        ]
    ),
)
# Text of any size: label values and Falco outputs are whatever the sender writes.
_texts = st.one_of(
    st.text(_any_char, max_size=100),
    st.builds(lambda chunk, n: chunk * n, st.text(_any_char, min_size=1, max_size=8), st.integers(1, 6_000)),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(_any_char, max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every container in the document, as the path to it (the root is ())."""
    found = [prefix]
    children = document.items() if isinstance(document, dict) else enumerate(document)
    for key, value in children:
        if isinstance(value, dict | list):
            found += _paths(value, (*prefix, key))
    return found


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@st.composite
def _damaged(draw: st.DrawFn, documents: list[dict[str, Any]]) -> Any:
    """A real payload with a few random changes anywhere in it: structured, often valid, often wrong.

    A change either keeps the type (new text for a string, so the payload
    may stay valid and reach the relay and the renderer) or breaks it (a
    value of any type, a key dropped or added).
    """
    document = json.loads(json.dumps(draw(st.sampled_from(documents))))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        container = _at(document, draw(st.sampled_from(_paths(document))))
        keys = list(container.keys() if isinstance(container, dict) else range(len(container)))
        texts = [key for key in keys if isinstance(container[key], str)]
        actions = ["retext"] * 4 * bool(texts) + ["set", "drop"] * bool(keys) + ["add"]
        action = draw(st.sampled_from(actions))
        if action == "retext":
            container[draw(st.sampled_from(texts))] = draw(_texts)
        elif action == "set":
            container[draw(st.sampled_from(keys))] = draw(_json)
        elif action == "drop":
            del container[draw(st.sampled_from(keys))]
        elif isinstance(container, dict):
            container[draw(st.text(_any_char, max_size=20))] = draw(_texts if draw(st.booleans()) else _json)
        else:
            container.append(draw(_json))
    return document


def _encode(document: Any, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


_hostile = st.one_of(
    st.integers(min_value=33, max_value=5_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=33, max_value=5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    # Python refuses to read integers over 4,300 digits (CVE-2020-10735): not a JSONDecodeError.
    st.integers(min_value=4_000, max_value=20_000).map(lambda n: b'{"version": ' + b"7" * n + b"}"),
    st.integers(min_value=1, max_value=MAX_BODY_BYTES // 8 + 10).map(
        lambda n: b'{"x": "' + b"12345678" * n + b'"}'
    ),
    st.binary(min_size=1, max_size=64).map(lambda b: b'{"receiver": "' + b + b'"}'),
)

_other_body = st.one_of(st.builds(_encode, _json, st.booleans()), st.binary(max_size=2_000), _hostile)
_method = st.sampled_from(["POST"] * 30 + ["GET", "PUT", "DELETE", "PATCH"])
_content_type = st.sampled_from(
    ["application/json"] * 30 + ["", "text/plain", "application/json; charset=latin-1", "multipart/form-data"]
)


@st.composite
def _request(draw: st.DrawFn) -> Request:
    """Mostly a hook's own (damaged) payload with its token; sometimes anything to anywhere."""
    hook = draw(st.sampled_from(["alertmanager"] * 10 + ["falco"] * 10 + ["nosuchhook"]))
    own = {"alertmanager": AM_DOCUMENTS, "falco": FALCO_DOCUMENTS}.get(hook, AM_DOCUMENTS)
    body = draw(
        st.one_of(
            *[st.builds(_encode, _damaged(own), st.booleans())] * 4,
            st.builds(_encode, _damaged(AM_DOCUMENTS + FALCO_DOCUMENTS), st.booleans()),
            _other_body,
        )
    )
    token = draw(st.sampled_from([TOKENS.get(hook, "")] * 15 + [*TOKENS.values(), "", "wrong", "é"]))
    return Request(hook, draw(_method), draw(_content_type), token, body)


WEBHOOKS_HARNESS = WebhookHarness()
WEBHOOKS = Target(
    name="webhooks",
    summary="any request to /hooks/alertmanager and /hooks/falco over HTTP: 2xx or 4xx, never 5xx",
    strategy=_request(),
    check=WEBHOOKS_HARNESS.check,
    close=WEBHOOKS_HARNESS.close,
    stats=lambda: "answers " + ", ".join(f"{k}: {v}" for k, v in sorted(WEBHOOKS_HARNESS.statuses.items())),
)
