"""The image builds from the Dockerfile and runs as the Deployment runs it.

Slow (about 2 minutes from a clean machine, well under one with the stand-in
base cached): needs root, podman, runc and debootstrap (.ci/run installs
them), and PyPI for the build's own ``pip``/``uv`` steps. See
``tests/deploy/image.py`` for how the unreachable base image is stood in for.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.helpers import BASE, OVERLAY, ROOT, only, render
from tests.deploy.image import BuiltImage, built_image
from tests.places import in_ci

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

PASSWORD = "image-test-password"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    """The image, built once for this module on the stand-in base, removed afterwards."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        reason = (
            "the image test needs podman, runc, debootstrap and root "
            f"(missing here: {', '.join(missing)}; as root: apt-get install podman runc debootstrap)"
        )
        (pytest.fail if in_ci() else pytest.skip)(reason)
    started = time.monotonic()
    with built_image(tmp_path_factory.mktemp("podman")) as built:
        built.log.append(f"image ready after {time.monotonic() - started:.0f} s")
        print("\n".join(built.log))
        yield built


def _deployment_user() -> tuple[int, int]:
    pod = only(render(OVERLAY), "Deployment", "readybot")["spec"]["template"]["spec"]["securityContext"]
    return int(pod["runAsUser"]), int(pod["runAsGroup"])


def test_image_reports_the_project_version(image: BuiltImage) -> None:
    """`readybot --version` in the image prints the version pyproject.toml declares."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    result = image.podman(
        "run", "--rm", *image.podman.run_flags(), "--network", "none", image.tag, "--version"
    )
    assert result.stdout.strip() == f"readybot {version}"


def test_image_checks_the_example_configuration_with_a_password_from_the_environment(
    image: BuiltImage,
) -> None:
    """`readybot check-config` accepts config/example.yaml with the password in an environment variable."""
    result = image.podman(
        "run",
        "--rm",
        *image.podman.run_flags(),
        "--network",
        "none",
        "--env",
        f"READYBOT_MATRIX__PASSWORD={PASSWORD}",
        "--volume",
        f"{ROOT / 'config' / 'example.yaml'}:/etc/readybot/config.yaml:ro",
        image.tag,
        "check-config",
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "configuration OK" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_image_runs_as_the_non_root_user_the_deployment_names(image: BuiltImage) -> None:
    """The image's USER is the Deployment's uid:gid; a process in the image runs with that non-zero uid."""
    uid, gid = _deployment_user()
    config = json.loads(image.podman("image", "inspect", image.tag).stdout)[0]["Config"]
    assert config["User"] == f"{uid}:{gid}"
    result = image.podman(
        "run",
        "--rm",
        *image.podman.run_flags(),
        "--network",
        "none",
        "--entrypoint",
        "python3",
        image.tag,
        "-c",
        "import os; print(os.getuid(), os.getgid())",
    )
    assert result.stdout.split() == [str(uid), str(gid)]
    assert uid != 0


def _pod_like(image: BuiltImage, tmp_path: Path, config: Path, *extra: str) -> list[str]:
    """`podman run` flags mirroring the Deployment: its user, read-only root, no capabilities, the mounts."""
    uid, gid = _deployment_user()
    secrets = tmp_path / "secrets"
    state = tmp_path / "state"
    secrets.mkdir()
    state.mkdir()
    for name, value in {
        "matrix__password": PASSWORD,
        "http__hook_tokens__alertmanager": "am-token",
        "http__hook_tokens__falco": "falco-token",
    }.items():
        (secrets / name).write_text(value + "\n", encoding="utf-8")
        (secrets / name).chmod(0o444)
    os.chown(state, uid, gid)  # what fsGroup does for the volume
    return [
        "run",
        *image.podman.run_flags(),
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",  # noqa: S108 - a tmpfs inside the container, as the pod's emptyDir
        "--user",
        f"{uid}:{gid}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{config}:/etc/readybot/config.yaml:ro",
        "--volume",
        f"{secrets}:/etc/readybot/secrets:ro",
        "--volume",
        f"{state}:/var/lib/readybot/state",
        *extra,
        image.tag,
    ]


def test_image_accepts_the_rendered_overlay_configuration_and_secret_files(
    image: BuiltImage, tmp_path: Path
) -> None:
    """check-config passes on the overlay's ConfigMap with secrets as files, under the pod's restrictions."""
    config_map = next(
        o
        for o in render(OVERLAY)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("readybot-config")
    )
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    result = image.podman(*_pod_like(image, tmp_path, config, "--rm"), "check-config", check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_image_serves_health_on_a_read_only_root_and_stops_cleanly_on_sigterm(
    image: BuiltImage, tmp_path: Path
) -> None:
    """`run` as in the pod: /healthz 200, /readyz 503 (no homeserver), state written, SIGTERM exits 0."""
    name = f"readybot-image-test-{os.getpid()}"
    # The base configuration; no cluster and no homeserver here (--network none).
    flags = _pod_like(image, tmp_path, BASE / "config.yaml", "--detach", "--name", name)
    flags[-1:-1] = ["--env", "READYBOT_KUBERNETES__ENABLED=false"]
    image.podman(*flags, "run", "--config", "/etc/readybot/config.yaml")
    try:
        probe = (
            "import urllib.request, urllib.error\n"
            "for path in ('/healthz', '/readyz'):\n"
            "    try:\n"
            "        r = urllib.request.urlopen('http://127.0.0.1:8080' + path, timeout=3)\n"
            "        print(path, r.status, r.read().decode().strip())\n"
            "    except urllib.error.HTTPError as e:\n"
            "        print(path, e.code, e.read().decode().strip())\n"
        )
        deadline = time.monotonic() + 60
        answer = ""
        while time.monotonic() < deadline:
            result = image.podman("exec", name, "python3", "-c", probe, check=False)
            answer = result.stdout
            if result.returncode == 0 and "/healthz 200" in answer:
                break
            time.sleep(1)
        assert "/healthz 200 ok" in answer, answer + image.podman("logs", name, check=False).stderr
        assert "/readyz 503 not ready: first sync with the homeserver not done" in answer
        assert (tmp_path / "state" / "readybot.sqlite3").exists()
        stopped = time.monotonic()
        image.podman("stop", "--time", "30", name, timeout=60)
        took = time.monotonic() - stopped
        state = json.loads(image.podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, image.podman("logs", name, check=False).stderr[-3000:]
        assert took < 15, f"SIGTERM took {took:.1f} s (grace: 30 s)"
    finally:
        image.podman("rm", "--force", name, check=False)
