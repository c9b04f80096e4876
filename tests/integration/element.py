"""A person on Element's own crypto stack: matrix-js-sdk with its Rust crypto, in Node 22.

matrix-nio (``people.Person``) is not what the bot's users run. An
``ElementPerson`` is a Node process (``tests/element/person.mjs``) holding one
matrix-js-sdk client with the Rust crypto in memory, driven over JSON lines:
requests on its stdin, answers and every timeline event it sees on its stdout,
its logs in a file. A test can then ask what Element's crypto would show: the
shield of an event, why it could not be decrypted, whether a device is
cross-signed.

``tests/element/README.md`` says how the Node side is installed (``make element-deps``).
"""

# Explicit timeouts (as in people.py) so a timeout can say what was awaited.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from .people import Account

ELEMENT_DIR = Path(__file__).resolve().parent.parent / "element"
PERSON_SCRIPT = ELEMENT_DIR / "person.mjs"
NODE_MODULES = ELEMENT_DIR / "node_modules"
# The npm package "node" puts its binary here; .bin/node is the link npm makes to it.
_NODE_CANDIDATES = (NODE_MODULES / "node" / "bin" / "node", NODE_MODULES / ".bin" / "node")
NODE_MAJOR = 22
ELEMENT_MISSING = (
    "the Element person (matrix-js-sdk in Node 22) is not installed: run `make element-deps` "
    "(npm ci --prefix tests/element)"
)

DEFAULT_TIMEOUT_S = 15.0
# Login includes starting the Rust crypto (loading its WebAssembly) and the first sync.
LOGIN_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 5.0
# One protocol line holds one event: far below this, but content is the sender's choice.
_LINE_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class ElementRuntime:
    """Where the Node 22 binary and the person program are."""

    node: Path
    script: Path


@functools.cache
def find_element_runtime() -> ElementRuntime | None:
    """The installed Node 22 and matrix-js-sdk under tests/element, or None when not installed."""
    if not (NODE_MODULES / "matrix-js-sdk" / "package.json").is_file():
        return None
    for node in _NODE_CANDIDATES:
        if not os.access(node, os.X_OK):
            continue
        try:
            version = subprocess.run(
                [str(node), "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        # "v22.23.3": the SDK refuses older Node (it needs >= 22).
        if version.startswith("v") and int(version[1:].split(".")[0]) >= NODE_MAJOR:
            return ElementRuntime(node, PERSON_SCRIPT)
    return None


class ElementPersonError(RuntimeError):
    """The Node program refused a request or died."""


@dataclass(frozen=True)
class Shield:
    """The shield Element shows next to an encrypted event."""

    colour: str  # "none" | "grey" | "red"
    reason: str | None  # an EventShieldReason name, e.g. "UNSIGNED_DEVICE"; None when colour is none


@dataclass(frozen=True)
class ElementEvent:
    """A timeline event as the Element person saw it (decrypted where it could be)."""

    room_id: str
    event_id: str
    sender: str
    type: str  # the decrypted type; the wire type (m.room.encrypted) when decryption failed
    content: dict[str, Any]
    encrypted: bool
    decryption_failure: str | None  # a DecryptionFailureCode, e.g. "UNSIGNED_SENDER_DEVICE"
    shield: Shield | None  # None for a clear event or one that could not be decrypted
    sender_device: str | None
    sender_curve25519: str | None
    origin_server_ts: int
    state_key: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ElementEvent:
        shield = data.get("shield")
        return cls(
            room_id=data["room_id"],
            event_id=data["event_id"],
            sender=data["sender"],
            type=data["type"],
            content=dict(data.get("content") or {}),
            encrypted=bool(data["encrypted"]),
            decryption_failure=data.get("decryption_failure"),
            shield=Shield(shield["colour"], shield.get("reason")) if shield else None,
            sender_device=data.get("sender_device"),
            sender_curve25519=data.get("sender_curve25519"),
            origin_server_ts=int(data.get("origin_server_ts") or 0),
            state_key=data.get("state_key"),
        )

    @property
    def body(self) -> str | None:
        body = self.content.get("body")
        return body if isinstance(body, str) else None


ElementPredicate = Callable[[ElementEvent], bool]


def element_event_is(event_id: str, *, decrypted: bool | None = None) -> ElementPredicate:
    """Match one event by id; ``decrypted=True`` only once it was decrypted, False only as a failure.

    The same event id can be reported twice: as a decryption failure, then
    decrypted once its room key arrived.
    """

    def matches(event: ElementEvent) -> bool:
        if event.event_id != event_id:
            return False
        return decrypted is None or (event.decryption_failure is None) == decrypted

    return matches


class ElementFactory(Protocol):
    """What the ``element_factory`` fixture gives a test."""

    def __call__(
        self, prefix: str = "element", *, account: Account | None = None
    ) -> Awaitable[ElementPerson]: ...


class ElementPerson:
    """One matrix-js-sdk client (one device, Rust crypto in memory) in a Node process.

    Create with ``await ElementPerson.start(...)`` then ``await login(...)``;
    always ``await close()``.
    """

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path, log_file: IO[bytes]) -> None:
        self._process = process
        self.log_path = log_path
        self._log_file = log_file
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[ElementEvent] = []
        self._changed = asyncio.Condition()
        self._exited: str | None = None
        self._reader = asyncio.create_task(self._read(), name=f"element person {process.pid}")
        self.user_id = ""
        self.device_id = ""
        self.password = ""

    # -- lifecycle -----------------------------------------------------------

    @classmethod
    async def start(
        cls, runtime: ElementRuntime, log_path: Path, *, env: Mapping[str, str] | None = None
    ) -> ElementPerson:
        """Start the Node program (not logged in yet); its logs go to ``log_path``."""
        await asyncio.to_thread(log_path.parent.mkdir, parents=True, exist_ok=True)
        log_file = await asyncio.to_thread(log_path.open, "wb")
        try:
            process = await asyncio.create_subprocess_exec(
                str(runtime.node),
                str(runtime.script),
                cwd=str(runtime.script.parent),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # A file, not a pipe: the SDK logs a lot, and a pipe nobody
                # drains would stall the process once it filled up.
                stderr=log_file,
                env={**os.environ, **(env or {})},
                limit=_LINE_LIMIT,
            )
        except BaseException:
            log_file.close()
            raise
        return cls(process, log_path, log_file)

    async def login(
        self, homeserver: str, user_id: str, password: str, *, timeout: float = LOGIN_TIMEOUT_S
    ) -> str:
        """Log in with a password as a new device and wait for the first sync; returns the device id."""
        answer = await self.request(
            "login", timeout=timeout, homeserver=homeserver, user_id=user_id, password=password
        )
        self.user_id = str(answer["user_id"])
        self.device_id = str(answer["device_id"])
        self.password = password
        return self.device_id

    async def close(self) -> None:
        """Ask the program to stop, kill it if it does not; never raises."""
        process = self._process
        if process.returncode is None and self._exited is None:
            with contextlib.suppress(Exception):
                await self.request("stop", timeout=_STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            if process.stdin is not None:
                process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        self._log_file.close()

    # -- the protocol ----------------------------------------------------------

    async def request(self, op: str, *, timeout: float = DEFAULT_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        """Send one request and return its answer (without id/ok); raises ElementPersonError if refused."""
        if self._exited is not None:
            raise ElementPersonError(f"{self._who()}: {op}: the program has exited ({self._exited})")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n")
            await stdin.drain()
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            raise TimeoutError(
                f"{self._who()}: no answer to {op} within {timeout} s; log tail:\n{self.log_tail()}"
            ) from None
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ElementPersonError(f"{self._who()}: {op}: the program is gone: {error}") from error
        finally:
            self._pending.pop(request_id, None)
        if not answer.pop("ok", False):
            raise ElementPersonError(f"{self._who()}: {op} failed: {answer.get('error')}")
        answer.pop("id", None)
        return answer

    async def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    raise ValueError(f"not a protocol line: {line[:200]!r}") from None
                if "event" in message:
                    async with self._changed:
                        self._events.append(ElementEvent.from_json(message["event"]))
                        self._changed.notify_all()
                    continue
                future = self._pending.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)
            self._exited = f"exit status {await self._process.wait()}"
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a line that is not the protocol: the program is broken
            self._exited = f"unreadable output: {error!r}"
        gone = ElementPersonError(f"{self._who()}: the program stopped ({self._exited})")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(gone)
        async with self._changed:
            self._changed.notify_all()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the program logged (its stderr), for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _who(self) -> str:
        return f"Element person {self.user_id or '(not logged in)'}"

    # -- waiting -------------------------------------------------------------

    def mark(self) -> int:
        """A position in the received events; pass as ``since`` to see only later ones."""
        return len(self._events)

    @property
    def events(self) -> list[ElementEvent]:
        """A copy of every event reported so far, oldest first (an event id may repeat, re-decrypted)."""
        return list(self._events)

    async def wait_for(
        self,
        predicate: ElementPredicate,
        *,
        room_id: str | None = None,
        since: int = 0,
        timeout: float = DEFAULT_TIMEOUT_S,
        what: str = "a matching event",
    ) -> ElementEvent:
        """The first event (at or after position ``since``) that matches ``predicate``."""
        index = since
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    while index < len(self._events):
                        event = self._events[index]
                        index += 1
                        if (room_id is None or event.room_id == room_id) and predicate(event):
                            return event
                    if self._exited is not None:
                        raise ElementPersonError(f"{self._who()}: the program stopped ({self._exited})")
                    await self._changed.wait()
        except TimeoutError:
            recent = "\n  ".join(_describe(event) for event in self._events[-8:]) or "(nothing)"
            raise TimeoutError(
                f"{self._who()} saw no {what} within {timeout} s; last events:\n  {recent}"
            ) from None

    # -- acting (each is one request; see tests/element/person.mjs) ------------

    async def bootstrap_cross_signing(self, *, reset: bool = False) -> dict[str, Any]:
        """Make and upload cross-signing keys and sign this device with them; answers its own status.

        ``reset``: new keys even if there are some (the upload then needs the password).
        """
        return await self.request("bootstrap_cross_signing", timeout=LOGIN_TIMEOUT_S, reset=reset)

    async def bootstrap_secret_storage(self) -> str:
        """Secret storage with a new recovery key holding the cross-signing keys; returns the key."""
        answer = await self.request("bootstrap_secret_storage", timeout=LOGIN_TIMEOUT_S)
        if not answer.get("ready"):
            raise ElementPersonError(f"{self._who()}: secret storage is not ready: {answer}")
        return str(answer["recovery_key"])

    async def set_isolation(self, mode: str) -> None:
        """ "only_signed" (Element's "exclude insecure devices") or "all" (the legacy mode)."""
        await self.request("set_isolation", mode=mode)

    async def create_room(
        self, name: str = "readybot test (Element)", *, encrypted: bool = True, invite: Iterable[str] = ()
    ) -> str:
        """A private room, encrypted from its creation unless told otherwise; returns its id."""
        answer = await self.request("create_room", name=name, encrypted=encrypted, invite=list(invite))
        return str(answer["room_id"])

    async def join(self, room_id: str) -> None:
        """Join (e.g. after an invite) and wait until the sync shows it."""
        await self.request("join", room_id=room_id)

    async def wait_joined(self, room_id: str, user_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Until this client sees ``user_id`` joined: send after this so their devices get the room key."""
        timeout_ms = int(timeout * 1000)
        await self.request(
            "wait_joined", timeout=timeout + 1, room_id=room_id, user_id=user_id, timeout_ms=timeout_ms
        )

    async def send_text(
        self, room_id: str, body: str, *, msgtype: str = "m.text", wait_members: Iterable[str] = ()
    ) -> str:
        """Send a message (the SDK encrypts it in an encrypted room); returns its event id."""
        for member in wait_members:
            await self.wait_joined(room_id, member)
        answer = await self.request("send_text", room_id=room_id, body=body, msgtype=msgtype)
        return str(answer["event_id"])

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        """Annotate ``event_id`` with ``key`` as Element does; returns the reaction's event id."""
        answer = await self.request("react", room_id=room_id, event_id=event_id, key=key)
        return str(answer["event_id"])

    async def user_cross_signed(self, user_id: str) -> dict[str, Any]:
        """What the Rust crypto knows of ``user_id``'s identity (has keys, verified, needs approval)."""
        return await self.request("user_cross_signed", user_id=user_id)

    async def device_info(self, user_id: str, device_id: str) -> dict[str, Any]:
        """What the Rust crypto thinks of one device (``signed_by_owner``, ``cross_signing_verified``…)."""
        return await self.request("device_info", user_id=user_id, device_id=device_id)

    async def account_data(self, event_type: str) -> dict[str, Any] | None:
        """This user's account data of ``event_type`` as the server holds it (None if unset)."""
        content = (await self.request("account_data", type=event_type))["content"]
        return dict(content) if content is not None else None

    async def own_status(self) -> dict[str, Any]:
        """This device's cross-signing status (``cross_signing_ready``, ``device_signed_by_owner``…)."""
        return await self.request("own_status")


def _describe(event: ElementEvent) -> str:
    what = event.decryption_failure or (f"{event.body!r:.120}" if event.body is not None else "")
    return f"{event.room_id} {event.type} {event.event_id} from {event.sender}: {what}"
