"""``readybot demo``: a throwaway Synapse, a person, an encrypted room and the bot.

Needs no configuration: everything lives in a temporary directory (or the
given ``workdir``, which is kept and reused on the next run) and only
127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, LoginResponse, RoomCreateError, RoomPreset, RoomVisibility

from bot.demo.synapse import SYNAPSE_MISSING, SynapseError, SynapseServer, find_synapse_python, port_is_free
from config.settings import Settings

log = logging.getLogger(__name__)

# Same meanings as bot.cli's exit codes (not imported: the CLI imports us).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_UNAVAILABLE = 69

BOT_LOCALPART = "readybot"
OPERATOR_LOCALPART = "operator"
ROOM_NAME = "readybot alerts"
# The room's alias is #readybot-demo:<server name>: clients that address rooms by alias can send there.
ROOM_ALIAS_LOCALPART = "readybot-demo"
_STATE_FILE = "demo.json"
_SYNAPSE_WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class DemoState:
    """What a kept workdir remembers, so a second run reuses users and room."""

    bot_user_id: str
    bot_password: str
    operator_user_id: str
    operator_password: str
    room_id: str
    port: int


async def run_demo(workdir: Path | None = None, *, stop: asyncio.Event | None = None) -> int:
    """Run the demo until ``stop`` is set (or SIGINT/SIGTERM without one); returns an exit code."""
    if find_synapse_python() is None:
        print(SYNAPSE_MISSING, file=sys.stderr)
        return EXIT_UNAVAILABLE
    base, temp_dir = _make_base(workdir)
    kept = _load_state(base)
    # A kept workdir gets its old port back when it can: the person's client
    # and the bot's stored session (keyed by homeserver URL) stay valid.
    port = kept.port if kept is not None and kept.port and port_is_free(kept.port) else None
    with _stop_on_signals(stop) as stop_event:
        server = SynapseServer(base / "synapse", port=port, open_rate_limits=True)
        try:
            return await _run(server, base, kept, stop_event)
        except SynapseError as error:
            print(f"readybot demo: {error}", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            server.stop()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)


def _make_base(workdir: Path | None) -> tuple[Path, Path | None]:
    """The directory to work in, and the temporary one to remove afterwards (if any)."""
    if workdir is None:
        temp_dir = Path(tempfile.mkdtemp(prefix="readybot-demo-"))
        return temp_dir, temp_dir
    base = workdir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    return base, None


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event | None) -> Iterator[asyncio.Event]:
    """The caller's stop event, or one set by SIGINT/SIGTERM for the duration."""
    if stop is not None:
        yield stop
        return
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not possible off the main thread or on some platforms: then the
        # caller stops us by cancelling.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, event.set)
            installed.append(sig)
    try:
        yield event
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _run(server: SynapseServer, base: Path, kept: DemoState | None, stop: asyncio.Event) -> int:
    # Blocking on purpose, before anything else runs on the loop: start()
    # from the main thread gives Synapse the parent-death signal, so it
    # cannot outlive a killed demo.
    server.start()
    log.info("Synapse answered after %.1f s", server.last_start_seconds or 0.0)
    if stop.is_set():
        return EXIT_OK
    state = await _prepare(server, base, kept)
    settings = _bot_settings(server, base, state)
    _print_banner(server, state)

    # Imported here: `readybot demo` must be able to report a missing Synapse
    # without importing (and configuring) the whole bot.
    from bot.app import run_app

    watcher = asyncio.create_task(_stop_if_synapse_dies(server, stop), name="synapse-watch")
    try:
        await run_app(settings, stop=stop)
    except Exception:  # includes the ExceptionGroup of the bot's TaskGroup
        log.exception("the bot stopped on an error")
        return EXIT_FAILURE
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if not server.is_running:
        print("readybot demo: Synapse stopped unexpectedly; see " + str(server.log_path), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def _stop_if_synapse_dies(server: SynapseServer, stop: asyncio.Event) -> None:
    # Without a homeserver the bot would retry forever; end the demo instead.
    # Polled: a Popen child has no awaitable exit, and a thread blocked in
    # wait() could not be cancelled.
    while server.is_running:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _SYNAPSE_WATCH_INTERVAL_S)
            return
    stop.set()


def _load_state(base: Path) -> DemoState | None:
    path = base / _STATE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("port", 0)  # written before ports were kept: pick a new one
    return DemoState(**data)


def _save_state(base: Path, state: DemoState) -> None:
    path = base / _STATE_FILE
    path.write_text(json.dumps(asdict(state)), encoding="utf-8")
    path.chmod(0o600)  # it holds passwords


async def _prepare(server: SynapseServer, base: Path, kept: DemoState | None) -> DemoState:
    """Users and the encrypted room: created on the first run, reused after."""
    if kept is not None:
        state = dataclasses.replace(kept, port=server.port)
    else:
        bot_password = secrets.token_urlsafe(18)
        operator_password = secrets.token_urlsafe(18)
        bot_user_id = await asyncio.to_thread(server.register_user, BOT_LOCALPART, bot_password)
        operator_user_id = await asyncio.to_thread(
            server.register_user, OPERATOR_LOCALPART, operator_password
        )
        room_id = await _create_room(server, base, operator_user_id, operator_password, bot_user_id)
        state = DemoState(
            bot_user_id, bot_password, operator_user_id, operator_password, room_id, server.port
        )
    await asyncio.to_thread(_save_state, base, state)
    return state


async def _create_room(
    server: SynapseServer, base: Path, operator_id: str, operator_password: str, bot_id: str
) -> str:
    """As the operator: a private, encrypted room with an alias and the bot invited."""
    store = base / "operator-store"
    await asyncio.to_thread(store.mkdir, exist_ok=True)
    client = AsyncClient(
        server.base_url,
        operator_id,
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
    )
    try:
        login = await client.login(operator_password, device_name="readybot demo setup")
        if not isinstance(login, LoginResponse):
            raise SynapseError(f"the operator could not log in: {login}")
        if client.should_upload_keys:
            await client.keys_upload()
        response = await client.room_create(
            visibility=RoomVisibility.private,
            alias=ROOM_ALIAS_LOCALPART,
            name=ROOM_NAME,
            topic="Alerts and commands for readybot (demo). Try !help",
            preset=RoomPreset.private_chat,
            invite=[bot_id],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        if isinstance(response, RoomCreateError):
            raise SynapseError(f"the operator could not create the room: {response}")
        room_id: str = response.room_id
        # The person logs in from their own client; a setup device left behind
        # would only collect room keys nobody ever reads.
        await client.logout()
        return room_id
    finally:
        await client.close()


def _bot_settings(server: SynapseServer, base: Path, state: DemoState) -> Settings:
    return Settings.model_validate(
        {
            "matrix": {
                "homeserver": server.base_url,
                "user_id": state.bot_user_id,
                "password": state.bot_password,
                "store_dir": base / "bot" / "crypto",
                "rooms": [state.room_id],
                "invite_from": [state.operator_user_id],
            },
            # Port 0: the OS picks a free one, so two demos never collide.
            "http": {"host": "127.0.0.1", "port": 0},
            "store": {"path": base / "bot" / "readybot.sqlite3"},
        }
    )


def _print_banner(server: SynapseServer, state: DemoState) -> None:
    lines = [
        "",
        "readybot demo",
        f"  homeserver : {server.base_url}   (server name: {server.server_name})",
        f"  log in as  : {state.operator_user_id}",
        f"  password   : {state.operator_password}",
        f"  room       : {ROOM_NAME!r} #{ROOM_ALIAS_LOCALPART}:{server.server_name} {state.room_id}",
        "               (encrypted; you created it; the bot is invited)",
        f"  bot        : {state.bot_user_id}",
        "",
        "  Point any Matrix client (e.g. Element, custom homeserver) at the URL above,",
        "  log in, open the room and type !help.",
        "",
        "press Ctrl-C to stop",
        "",
    ]
    print("\n".join(lines), flush=True)
