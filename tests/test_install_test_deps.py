"""scripts/install-test-deps (run by make test and .ci/run), with stand-ins for id, sudo and apt-get."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.places import ROOT

SCRIPT = ROOT / "scripts" / "install-test-deps"
PACKAGES = "prometheus-alertmanager prometheus podman runc debootstrap faketime npm postgresql"


def run(
    tmp_path: Path, *, uid: int, ci: str | None, tools: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The script on a PATH of stand-ins: ``id -u`` says ``uid``, sudo and apt-get log, ``tools`` exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    stubs = {
        "id": f"echo {uid}\n",
        "sudo": f'echo "sudo $*" >> {log}\n"$@"\n',
        "apt-get": f'echo "apt-get $*" >> {log}\n',
    }
    stubs |= {tool: "exit 0\n" for tool in tools}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}", encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    # PostgreSQL is found by its binaries under READYBOT_PG_ROOT: none there unless "postgresql" is a tool.
    pg_root = tmp_path / "postgresql"
    if "postgresql" in tools:
        (pg_root / "15" / "bin").mkdir(parents=True)
        (pg_root / "15" / "bin" / "initdb").write_text("", encoding="utf-8")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "READYBOT_PG_ROOT": str(pg_root)} | (
        {"CI": ci} if ci is not None else {}
    )
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def test_not_root_outside_ci_installs_nothing_and_prints_the_command_once(tmp_path: Path) -> None:
    """Without root or CI: no apt-get, exit 0, and one line with the sudo apt-get command for all packages."""
    result = run(tmp_path, uid=1000, ci=None)
    assert result.returncode == 0
    assert calls(tmp_path) == []
    command = f"sudo apt-get update && sudo apt-get install -y --no-install-recommends {PACKAGES}"
    assert result.stderr.count(command) == 1
    assert "the image test (tests/deploy/test_image.py) will skip" in result.stderr
    assert "no kubectl" in result.stderr


def test_as_root_it_installs_what_is_missing_with_apt_get(tmp_path: Path) -> None:
    """As root: apt-get update, then apt-get install of every missing package, without sudo."""
    result = run(tmp_path, uid=0, ci=None)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == [
        "apt-get update -qq",
        f"apt-get -qq install -y --no-install-recommends {PACKAGES}",
    ]


def test_under_ci_without_root_it_uses_sudo(tmp_path: Path) -> None:
    """CI=true and not root: the same apt-get calls through sudo, as .ci/run always did."""
    result = run(tmp_path, uid=1000, ci="true")
    assert result.returncode == 0, result.stderr
    assert [line for line in calls(tmp_path) if line.startswith("sudo ")] == [
        "sudo apt-get update -qq",
        f"sudo apt-get -qq install -y --no-install-recommends {PACKAGES}",
    ]


def test_nothing_missing_is_quiet(tmp_path: Path) -> None:
    """With every tool on the PATH, kubectl too, and root: no apt-get and no message."""
    tools = (
        "prometheus-alertmanager",
        "prometheus",
        "podman",
        "runc",
        "debootstrap",
        "faketime",
        "npm",
        "kubectl",
        "postgresql",
    )
    result = run(tmp_path, uid=0, ci=None, tools=tools)
    assert (result.returncode, result.stdout, result.stderr, calls(tmp_path)) == (0, "", "", [])


def test_postgresql_is_looked_for_under_usr_lib_postgresql_not_on_path(tmp_path: Path) -> None:
    """Every other tool present, no initdb under the PostgreSQL root: only postgresql is installed."""
    tools = ("prometheus-alertmanager", "prometheus", "podman", "runc", "debootstrap", "faketime", "npm")
    result = run(tmp_path, uid=0, ci=None, tools=(*tools, "kubectl"))
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == [
        "apt-get update -qq",
        "apt-get -qq install -y --no-install-recommends postgresql",
    ]
