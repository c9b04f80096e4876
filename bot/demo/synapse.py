"""A throwaway Synapse homeserver on 127.0.0.1.

Used by ``readybot demo``, the integration tests and the benchmarks. The server
runs as a child process with SQLite in a work directory; everything it needs
(signing key, shared secret) is generated once and kept in that directory, so a
restart (or a second ``SynapseServer`` on the same directory) sees the same
users, rooms and keys.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

SYNAPSE_MISSING = "Synapse is not installed: run `uv sync --extra demo` (or set READYBOT_SYNAPSE_PYTHON)"
SYNAPSE_PYTHON_ENV = "READYBOT_SYNAPSE_PYTHON"

_LOOPBACK = "127.0.0.1"
_SECRETS_FILE = "readybot-synapse-secrets.json"
_CONFIG_FILE = "homeserver.yaml"
_LOG_CONFIG_FILE = "log_config.yaml"
_LOG_FILE = "homeserver.log"
_OUTPUT_FILE = "synapse-output.log"
_POLL_INTERVAL_S = 0.05
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Wide enough that no test or demo ever meets a limit, small enough to stay
# well inside the floats/ints Synapse parses.
_OPEN = {"per_second": 100_000, "burst_count": 1_000_000}

# Every rate limiter Synapse 1.163 reads from its configuration
# (synapse/config/ratelimiting.py). Unknown keys are ignored by Synapse, so a
# limiter renamed upstream would silently fall back to its default: keep this
# list in step when upgrading.
_OPEN_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _OPEN,
    "rc_registration": _OPEN,
    "rc_registration_token_validity": _OPEN,
    "rc_login": {"address": _OPEN, "account": _OPEN, "failed_attempts": _OPEN},
    "rc_admin_redaction": _OPEN,
    "rc_joins": {"local": _OPEN, "remote": _OPEN},
    "rc_joins_per_room": _OPEN,
    "rc_key_requests": _OPEN,
    "rc_3pid_validation": _OPEN,
    "rc_invites": {"per_room": _OPEN, "per_user": _OPEN, "per_issuer": _OPEN},
    "rc_third_party_invite": _OPEN,
    "rc_media_create": _OPEN,
    "rc_presence": {"per_user": _OPEN},
    "rc_delayed_event_mgmt": _OPEN,
    "rc_room_creation": _OPEN,
    "rc_reports": _OPEN,
    "rc_user_directory": _OPEN,
    "rc_profile": _OPEN,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 1_000_000,
        "sleep_delay": 1,
        "reject_limit": 1_000_000,
        "concurrent": 1_000,
    },
}

# Servers still running when the interpreter exits are stopped here; the
# parent-death signal covers the cases where atexit never runs (SIGKILL).
_live_servers: weakref.WeakSet[SynapseServer] = weakref.WeakSet()


class SynapseError(RuntimeError):
    """Synapse is missing, failed to start, or refused a request."""


def find_synapse_python() -> str | None:
    """The interpreter that can run ``python -m synapse.app.homeserver``, if any.

    This interpreter first (the ``demo`` extra installs Synapse next to the
    bot), else ``$READYBOT_SYNAPSE_PYTHON`` (Synapse kept in its own venv).
    """
    if importlib.util.find_spec("synapse") is not None:
        return sys.executable
    return os.environ.get(SYNAPSE_PYTHON_ENV) or None


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = _LOOPBACK) -> bool:
    """Whether ``port`` can be bound right now (e.g. to reuse a kept demo's port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Synapse (Twisted) does, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # Every request goes to 127.0.0.1: never let an http_proxy variable in the
    # environment route it elsewhere.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parent_death_preexec(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` for Popen: the child dies with SIGTERM when ``parent_pid`` (the caller) dies."""

    def preexec() -> None:
        _parent_death(parent_pid)

    return preexec


def _parent_death(parent_pid: int) -> None:
    """Runs in the forked child: die with SIGTERM when the parent dies."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died between fork() and prctl(): the signal would
    # then never come, so check by hand.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _random_signing_key() -> str:
    # Synapse's inline format: "<algorithm> <key id> <unpadded base64 seed>".
    seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"ed25519 a_test {seed}"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except FileNotFoundError:
        return ""


class SynapseServer:
    """One Synapse process on 127.0.0.1, its state in ``workdir``.

    The port is chosen once (a free one unless given) and kept across
    restarts, so clients configured with ``base_url`` keep working.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        server_name: str = "localhost",
        open_rate_limits: bool = True,
        python: str | None = None,
    ) -> None:
        resolved_python = python or find_synapse_python()
        if resolved_python is None:
            raise SynapseError(SYNAPSE_MISSING)
        self._python = resolved_python
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port = port if port is not None else free_port()
        self._server_name = server_name
        self._open_rate_limits = open_rate_limits
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        # How long the last start() took until Synapse answered, for reports.
        self.last_start_seconds: float | None = None
        self._secrets = self._load_or_create_secrets()
        self.config_path = self.workdir / _CONFIG_FILE
        self.log_path = self.workdir / _LOG_FILE
        self.output_path = self.workdir / _OUTPUT_FILE
        self._write_config()

    # -- configuration -------------------------------------------------------

    def _load_or_create_secrets(self) -> dict[str, str]:
        # Kept in the workdir so a restart keeps the server's identity: a new
        # signing key or macaroon secret would invalidate every access token.
        path = self.workdir / _SECRETS_FILE
        if path.exists():
            loaded: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
        created = {
            "signing_key": _random_signing_key(),
            "registration_shared_secret": secrets.token_urlsafe(32),
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
        }
        path.write_text(json.dumps(created), encoding="utf-8")
        path.chmod(0o600)
        return created

    def _write_config(self) -> None:
        log_config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "plain",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
        }
        log_config_path = self.workdir / _LOG_CONFIG_FILE
        log_config_path.write_text(yaml.safe_dump(log_config), encoding="utf-8")

        config: dict[str, Any] = {
            "server_name": self._server_name,
            "pid_file": str(self.workdir / "homeserver.pid"),
            "report_stats": False,
            "signing_key": self._secrets["signing_key"],
            "registration_shared_secret": self._secrets["registration_shared_secret"],
            "macaroon_secret_key": self._secrets["macaroon_secret_key"],
            "form_secret": self._secrets["form_secret"],
            "enable_registration": False,
            "database": {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}},
            "listeners": [
                {
                    "port": self._port,
                    "bind_addresses": [_LOOPBACK],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    # "client" includes /_synapse/admin (shared-secret registration).
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            # The default (12) costs ~0.3 s per login; these are throwaway users.
            "bcrypt_rounds": 4,
            "media_store_path": str(self.workdir / "media_store"),
            "log_config": str(log_config_path),
            "enable_metrics": False,
            "url_preview_enabled": False,
        }
        if self._open_rate_limits:
            config.update(_OPEN_RATE_LIMITS)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.config_path.chmod(0o600)

    # -- properties ----------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{_LOOPBACK}:{self._port}"

    @property
    def server_name(self) -> str:
        return self._server_name

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self._server_name}"

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start Synapse and return once it answers ``/_matrix/client/versions``."""
        if self.is_running:
            return
        # Reap a process that died by itself (and close its output file).
        self.stop()
        self._output = self.output_path.open("ab")
        # The parent-death signal fires when the *thread* that forked dies, not
        # the process: set it only from the main thread, or a server started
        # from a worker thread would vanish when that thread ends. atexit and
        # stop() cover the other cases.
        preexec = None
        if threading.current_thread() is threading.main_thread() and sys.platform == "linux":
            preexec = parent_death_preexec(os.getpid())

        started = time.monotonic()
        self._process = subprocess.Popen(
            [self._python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches the bot, which
            # then stops Synapse in order, instead of both dying at once.
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - only prctl and getppid, no locks
        )
        _live_servers.add(self)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.last_start_seconds = time.monotonic() - started

    def _wait_ready(self, deadline: float) -> None:
        opener = _no_proxy_opener()
        url = f"{self.base_url}/_matrix/client/versions"
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise SynapseError(f"Synapse exited with code {code} during start-up:\n{self._log_tail()}")
            with contextlib.suppress(OSError), opener.open(url, timeout=1) as response:
                if response.status == 200:
                    return
            if time.monotonic() >= deadline:
                raise SynapseError(f"Synapse did not answer {url} in time:\n{self._log_tail()}")
            time.sleep(_POLL_INTERVAL_S)

    def _log_tail(self) -> str:
        parts = []
        for path in (self.output_path, self.log_path):
            tail = _tail(path)
            if tail.strip():
                parts.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(parts) or "(no log output)"

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        process, self._process = self._process, None
        _live_servers.discard(self)
        if process is not None and process.poll() is None:
            # The process leads its own group (start_new_session): signal the
            # group so nothing it spawned outlives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def restart(self, timeout: float = 30) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- admin API -----------------------------------------------------------

    def register_user(self, localpart: str, password: str, *, admin: bool = False) -> str:
        """Create a user with the shared-secret admin API; returns the full user id."""
        opener = _no_proxy_opener()
        url = f"{self.base_url}/_synapse/admin/v1/register"
        # S310: the URL is always http://127.0.0.1:<port>, built above.
        nonce = self._request_json(opener, urllib.request.Request(url))["nonce"]  # noqa: S310
        mac = hmac.new(
            self._secrets["registration_shared_secret"].encode(),
            b"\x00".join(
                [nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]
            ),
            hashlib.sha1,
        ).hexdigest()
        body = json.dumps(
            {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac}
        ).encode()
        request = urllib.request.Request(  # noqa: S310
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        user_id: str = self._request_json(opener, request)["user_id"]
        return user_id

    @staticmethod
    def _request_json(opener: urllib.request.OpenerDirector, request: urllib.request.Request) -> Any:
        try:
            with opener.open(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise SynapseError(f"{request.get_method()} {request.full_url}: {error.code} {detail}") from error


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live_servers):
        server.stop()
