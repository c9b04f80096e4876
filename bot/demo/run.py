"""``readybot demo``: a throwaway Synapse, two people, an encrypted room, a simulated cluster and the bot.

Needs no configuration: everything lives in a temporary directory (or the
given ``workdir``, which is kept and reused on the next run) and only
127.0.0.1 is used. Beside Synapse it runs the stand-ins the tests use: the
Kubernetes API server (``bot.demo.kube``) seeded with a small platform
(``bot.demo.world``), the Argo CD controller (``bot.demo.argocd``), a real
Alertmanager when one is installed, and a scripted tour of alerts, Falco
events, a failed backup and the Watchdog (``bot.demo.tour``). The bot is
configured as a user would configure it for such a cluster: every
capability on, no demo code inside a feature.
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

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    RoomCreateError,
    RoomPreset,
    RoomVisibility,
)

from bot.demo.alertmanager import AlertmanagerError, AlertmanagerServer, find_alertmanager
from bot.demo.argocd import ApplicationController
from bot.demo.kube.apiserver import FakeApiServer
from bot.demo.synapse import (
    SYNAPSE_MISSING,
    SynapseError,
    SynapseServer,
    find_synapse_python,
    free_port,
    port_is_free,
)
from bot.demo.tour import SOURCE, SOURCE_LABEL, Sink, Tour, TourTiming, alertmanager_config
from bot.demo.world import ARGOCD_NAMESPACE, GATED_APPS, VELERO_NAMESPACE, seed
from config.settings import Settings

log = logging.getLogger(__name__)

# Same meanings as bot.cli's exit codes (not imported: the CLI imports us).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_UNAVAILABLE = 69

BOT_LOCALPART = "readybot"
OPERATOR_LOCALPART = "operator"
APPROVER_LOCALPART = "approver"
ROOM_NAME = "readybot alerts"
# The room's alias is #readybot-demo:<server name>: clients that address rooms by alias can send there.
ROOM_ALIAS_LOCALPART = "readybot-demo"
_STATE_FILE = "demo.json"
_SYNAPSE_WATCH_INTERVAL_S = 1.0
# The dead-man's switch: a source silent this long is down (the Watchdog beats every 10 s).
_DEADMAN_THRESHOLD_S = 60.0


@dataclass(frozen=True)
class DemoState:
    """What a kept workdir remembers, so a second run reuses users and room."""

    bot_user_id: str
    bot_password: str
    operator_user_id: str
    operator_password: str
    room_id: str
    port: int
    # Empty in a workdir kept from before the approver existed: made on the next run.
    approver_user_id: str = ""
    approver_password: str = ""


@dataclass
class World:
    """The stand-ins beside the bot, and what the bot needs to know of them."""

    kube: FakeApiServer
    kubeconfig: Path
    sink: Sink
    bot_port: int
    tokens: dict[str, str]
    alertmanager: AlertmanagerServer | None = None
    alertmanager_problem: str = ""

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.bot_port}"

    async def close(self) -> None:
        if self.alertmanager is not None:
            await asyncio.to_thread(self.alertmanager.stop)
        await asyncio.to_thread(self.kube.stop)
        await self.sink.stop()


async def run_demo(
    workdir: Path | None = None,
    *,
    stop: asyncio.Event | None = None,
    outage: bool = False,
    timing: TourTiming | None = None,
) -> int:
    """Run the demo until ``stop`` is set (or SIGINT/SIGTERM without one); returns an exit code.

    ``outage``: the Watchdog stops after a while, so the dead-man's switch raises
    its alarm in the room and on the second channel. ``timing``: the tour's pace.
    """
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
            return await _run(server, base, kept, stop_event, outage, timing or TourTiming())
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


async def _run(
    server: SynapseServer,
    base: Path,
    kept: DemoState | None,
    stop: asyncio.Event,
    outage: bool,
    timing: TourTiming,
) -> int:
    # Blocking on purpose, before anything else runs on the loop: start()
    # from the main thread gives Synapse (and Alertmanager) the parent-death
    # signal, so they cannot outlive a killed demo.
    server.start()
    log.info("Synapse answered after %.1f s", server.last_start_seconds or 0.0)
    if stop.is_set():
        return EXIT_OK
    world = await _start_world(base)
    try:
        state = await _prepare(server, base, kept)
        settings = _bot_settings(server, base, state, world)
        _print_banner(server, state, world, outage)
        return await _run_bot(server, settings, world, stop, outage, timing)
    finally:
        await world.close()


async def _start_world(base: Path) -> World:
    """The cluster stand-ins, the second channel and, when installed, Alertmanager."""
    sink = Sink()
    await sink.start()
    kube = FakeApiServer()
    await kube.astart()
    seed(kube.store)
    kubeconfig = await asyncio.to_thread(
        kube.write_kubeconfig, base / "kubeconfig", namespace=ARGOCD_NAMESPACE
    )
    tokens = {"alertmanager": secrets.token_urlsafe(18), "falco": secrets.token_urlsafe(18)}
    world = World(kube, kubeconfig, sink, free_port(), tokens)
    if find_alertmanager() is None:
        world.alertmanager_problem = "not installed"
        return world
    try:
        config = alertmanager_config(world.bot_url, tokens["alertmanager"], sink.url)
        alertmanager = AlertmanagerServer(base / "alertmanager", config)
        # From the main thread (see _run); it answers within a second or two.
        alertmanager.start()
        world.alertmanager = alertmanager
    except (AlertmanagerError, OSError) as error:
        log.warning("the demo runs without Alertmanager: %s", error)
        world.alertmanager_problem = "did not start (see the log above)"
    return world


async def _run_bot(
    server: SynapseServer,
    settings: Settings,
    world: World,
    stop: asyncio.Event,
    outage: bool,
    timing: TourTiming,
) -> int:
    # Imported here: `readybot demo` must be able to report a missing Synapse
    # without importing (and configuring) the whole bot.
    from bot.app import run_app

    tour = Tour(world.bot_url, world.tokens, world.kube.store, world.alertmanager, timing, outage)
    controller = ApplicationController(world.kube.store, ARGOCD_NAMESPACE)
    helpers = [
        asyncio.create_task(_stop_if_synapse_dies(server, stop), name="synapse-watch"),
        asyncio.create_task(tour.run(stop), name="demo-tour"),
        asyncio.create_task(controller.serve(stop), name="argocd-stand-in"),
    ]
    try:
        await run_app(settings, stop=stop)
    except Exception:  # includes the ExceptionGroup of the bot's TaskGroup
        log.exception("the bot stopped on an error")
        return EXIT_FAILURE
    finally:
        stop.set()
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
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
    known = {f.name for f in dataclasses.fields(DemoState)}
    return DemoState(**{k: v for k, v in data.items() if k in known})


def _save_state(base: Path, state: DemoState) -> None:
    path = base / _STATE_FILE
    path.write_text(json.dumps(asdict(state)), encoding="utf-8")
    path.chmod(0o600)  # it holds passwords


async def _prepare(server: SynapseServer, base: Path, kept: DemoState | None) -> DemoState:
    """Users and the encrypted room: created on the first run, reused after."""
    if kept is not None:
        state = dataclasses.replace(kept, port=server.port)
    else:
        passwords = [secrets.token_urlsafe(18) for _ in range(3)]
        bot_user_id, operator_user_id, approver_user_id = await asyncio.gather(
            *(
                asyncio.to_thread(server.register_user, localpart, password)
                for localpart, password in zip(
                    (BOT_LOCALPART, OPERATOR_LOCALPART, APPROVER_LOCALPART), passwords, strict=True
                )
            )
        )
        room_id = await _create_room(
            server, base, operator_user_id, passwords[1], [bot_user_id, approver_user_id]
        )
        state = DemoState(
            bot_user_id,
            passwords[0],
            operator_user_id,
            passwords[1],
            room_id,
            server.port,
            approver_user_id,
            passwords[2],
        )
        await _join(server, approver_user_id, passwords[2], room_id)
    if not state.approver_user_id:  # a workdir kept from before the approver existed
        password = secrets.token_urlsafe(18)
        approver = await asyncio.to_thread(server.register_user, APPROVER_LOCALPART, password)
        await _invite(server, state.operator_user_id, state.operator_password, state.room_id, approver)
        await _join(server, approver, password, state.room_id)
        state = dataclasses.replace(state, approver_user_id=approver, approver_password=password)
    await asyncio.to_thread(_save_state, base, state)
    return state


async def _join(server: SynapseServer, user_id: str, password: str, room_id: str) -> None:
    """As that person: join the room they were invited to (no device stays behind)."""
    client = AsyncClient(server.base_url, user_id)
    try:
        login = await client.login(password, device_name="readybot demo setup")
        if not isinstance(login, LoginResponse):
            raise SynapseError(f"{user_id} could not log in: {login}")
        joined = await client.join(room_id)
        if not isinstance(joined, JoinResponse):
            raise SynapseError(f"{user_id} could not join the room: {joined}")
        await client.logout()
    finally:
        await client.close()


async def _invite(server: SynapseServer, user_id: str, password: str, room_id: str, invitee: str) -> None:
    client = AsyncClient(server.base_url, user_id)
    try:
        login = await client.login(password, device_name="readybot demo setup")
        if not isinstance(login, LoginResponse):
            raise SynapseError(f"{user_id} could not log in: {login}")
        await client.room_invite(room_id, invitee)
        await client.logout()
    finally:
        await client.close()


async def _create_room(
    server: SynapseServer, base: Path, operator_id: str, operator_password: str, invite: list[str]
) -> str:
    """As the operator: a private, encrypted room with an alias, the bot and the approver invited."""
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
            invite=invite,
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


def _bot_settings(server: SynapseServer, base: Path, state: DemoState, world: World) -> Settings:
    """The bot's configuration for this little platform: every capability on."""
    room = state.room_id
    people = {"users": [state.operator_user_id, state.approver_user_id]}
    alertmanager_url = world.alertmanager.base_url if world.alertmanager is not None else None
    return Settings.model_validate(
        {
            "matrix": {
                "homeserver": server.base_url,
                "user_id": state.bot_user_id,
                "password": state.bot_password,
                "store_dir": base / "bot" / "crypto",
                "rooms": [room],
                "invite_from": [state.operator_user_id],
            },
            "http": {"host": "127.0.0.1", "port": world.bot_port, "hook_tokens": world.tokens},
            "store": {"path": base / "bot" / "readybot.sqlite3"},
            # The demo's Synapse has open rate limits: no need to ration messages.
            "alertmanager": {
                "enabled": True,
                "default_rooms": [room],
                "api_url": alertmanager_url,
                "send_budget": {"burst": 50, "per_minute": 600},
            },
            "deadman": {
                "source_label": SOURCE_LABEL,
                "expected_sources": [SOURCE],
                "threshold_s": _DEADMAN_THRESHOLD_S,
                "check_interval_s": 5,
                "secondary": {"url": f"{world.sink.url}/alarms", "timeout_s": 2},
            },
            "falco": {
                "enabled": True,
                "min_priority": "notice",
                "default_rooms": [room],
                "edit_interval_s": 2,
                "send_budget": {"burst": 50, "per_minute": 600},
            },
            "kubernetes": {
                "enabled": True,
                "in_cluster": False,
                "kubeconfig": world.kubeconfig,
                "request_timeout_s": 5,
            },
            "velero": {"enabled": True, "namespace": VELERO_NAMESPACE, "rooms": [room]},
            "readiness": {"enabled": True, "alertmanager_url": alertmanager_url, "digest_schedule": None},
            "approvals": {
                "apps": {
                    name: {"namespace": ARGOCD_NAMESPACE, "requesters": people, "approvers": people}
                    for name in GATED_APPS
                },
                "poll_interval_s": 1.0,
            },
        }
    )


def _print_banner(server: SynapseServer, state: DemoState, world: World, outage: bool) -> None:
    alias = f"#{ROOM_ALIAS_LOCALPART}:{server.server_name}"
    if world.alertmanager is not None:
        alerts = f"Alertmanager on {world.alertmanager.base_url} (silences work: !silence, 🔕)"
    else:
        alerts = (
            f"Alertmanager {world.alertmanager_problem}: alerts go to the bot's webhook directly;"
            " !alerts, !silence and 🔕 say it is not configured"
            " (apt-get install prometheus-alertmanager to have them)"
        )
    watchdog = (
        "--outage: the Watchdog stops 20 s after start; the alarm follows about 90 s later"
        if outage
        else "the Watchdog beats every 10 s (readybot demo --outage stops it)"
    )
    lines = [
        "",
        "readybot demo: a throwaway homeserver, a simulated cluster and the bot with every capability on",
        "",
        f"  homeserver : {server.base_url}   (server name: {server.server_name})",
        f"  room       : {alias}   {ROOM_NAME!r}, encrypted ({state.room_id})",
        f"  operator   : {state.operator_user_id}   password: {state.operator_password}",
        f"  approver   : {state.approver_user_id}   password: {state.approver_password}",
        f"  bot        : {state.bot_user_id}   (its device is cross-signed)",
        f"  cluster    : SIMULATED: a Kubernetes API stand-in on {world.kube.url} (Argo CD, Velero,",
        "               Kyverno, Cilium, Trivy, Falco, OpenCost objects); an Argo CD controller",
        "               stand-in carries out syncs, nothing is deployed",
        f"  alerts     : {alerts}",
        f"  watchdog   : {watchdog}",
        f"  2nd channel: {world.sink.url}/alarms (what it receives is printed here)",
        f"  metrics    : {world.bot_url}/metrics",
        "",
        "Try, in order:",
        f"   1. log in as operator and open {alias} (Element: see below)",
        "   2. !readiness status     the production-readiness scorecard of the simulated cluster",
        "   3. !sync cilium          asks to sync a gated Argo CD app: the bot posts a prompt",
        "   4. log in as approver (a second client or browser profile) and react ✅ to the prompt",
        "   5. watch the prompt follow the (simulated) sync to Succeeded; !apps lists the apps",
        "   6. !alerts               the tour starts with your first command: an alert group fires",
        "                            5 s later and resolves a minute after, Falco events and a",
        "                            failed backup arrive meanwhile",
        "   7. 🔕 on an alert message silences that group in Alertmanager; !silences",
        "   8. !backups              Velero: last night's daily backup failed, the weekly partially",
        "   9. !falco mutes          a burst of Falco events arrives as one counted message;",
        '                            !falco mute "Terminal shell in container" 1h',
        "  10. !watchdog             the dead-man's switch on the Watchdog",
        f"  11. curl {world.bot_url}/metrics",
        "",
        "Element Web or Desktop: Sign in → Edit (homeserver) → the homeserver URL above, then the",
        "user and password; open the room from the invite list or by its alias. Element's 2026",
        'default ("exclude insecure devices") reads the bot: its device is cross-signed.',
        "",
        "press Ctrl-C to stop (everything stops, the demo's files are removed)",
        "",
    ]
    print("\n".join(lines), flush=True)
