"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, 127.0.0.1, a free port.

Debian's ``postgresql`` package puts its binaries in
``/usr/lib/postgresql/<major>/bin`` (not on PATH); ``find_pg_bin`` globs for
them (``READYBOT_PG_BIN`` names another directory). PostgreSQL refuses to run
as root, and the tests run as root here and in CI: then the server runs as an
unprivileged user (``postgres`` when it exists, else ``nobody``) through
``setpriv``, and its directory belongs to that user.

Its directory is made with ``tempfile.mkdtemp`` under the system temp dir
(world-traversable), not pytest's private 0700 one, so that user can reach it.
The server trusts local connections (it listens on 127.0.0.1 only and lives
as long as the test session). ``template`` is migrated once per session
where the fixtures want it, so each test's fresh database is a cheap
``CREATE DATABASE … TEMPLATE``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.places import in_ci

POSTGRESQL_MISSING = (
    "PostgreSQL is not installed: apt-get install postgresql (its binaries are looked for in "
    "/usr/lib/postgresql/*/bin, or set READYBOT_PG_BIN)"
)


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding initdb, or ``READYBOT_PG_BIN``."""
    override = os.environ.get("READYBOT_PG_BIN")
    candidates = [Path(override)] if override else []
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for path in [*candidates, *found]:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def require_pg_bin() -> Path:
    """The binaries' directory; a skip when PostgreSQL is missing, a failure under CI."""
    path = find_pg_bin()
    if path is not None:
        return path
    if in_ci():
        pytest.fail(f"{POSTGRESQL_MISSING}: CI must run the store tests against PostgreSQL", pytrace=False)
    pytest.skip(POSTGRESQL_MISSING)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server: ``start()``, ``url(dbname)``, ``create_database()``, ``stop()``."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.data = workdir / "data"
        self.socket_dir = workdir / "socket"
        self.port = _free_port()
        self.user = "readybot"
        self._run_as: list[str] = []

    def _prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        name = "postgres"
        try:
            pwd.getpwnam(name)
        except KeyError:
            name = "nobody"
        entry = pwd.getpwnam(name)
        for path in (self.workdir, self.data, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            "--",
        ]

    def _run(self, *argv: str) -> None:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self.workdir)}
        result = subprocess.run(
            [*self._run_as, *argv], capture_output=True, text=True, timeout=120, env=env, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr[-2000:]}")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._run_as = self._prefix()
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        # fsync off: a test server need not survive a power cut, and it saves seconds.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.workdir / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> None:
        self._run(
            str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(dbname), "-c", sql
        )

    def create_database(self, template: str = "template0") -> str:
        """A fresh, empty database (or a copy of ``template``); returns its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def stop(self) -> None:
        """Stop at once (SIGQUIT: immediate shutdown; nothing here needs to survive) and delete it all."""
        try:
            pid = int((self.data / "postmaster.pid").read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
