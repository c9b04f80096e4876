"""Build and run the Dockerfile with podman, offline from any container registry.

No registry is reachable here, so the Dockerfile's ``FROM`` image cannot be
pulled. A stand-in is made with debootstrap: Debian bookworm with Debian's
Python 3.11 and pip, tagged with the ``FROM`` name, which lets the build's own
steps run (pip and uv still fetch packages from PyPI). Everything happens in a
private podman storage under a temporary directory, so the stand-in never
shadows the real base image in the user's own storage.

The debootstrap result is cached as a tarball (``$READYBOT_IMAGE_CACHE``, else
``$XDG_CACHE_HOME/readybot``, else ``~/.cache/readybot``): a local re-run
skips the ~1 minute debootstrap. CI starts clean and builds it.

Machine facts this works around (FACTS.md, and what was seen here):

- crun fails on this kernel's cgroups: runc is used (``--runtime runc``).
- RUN steps use ``--isolation chroot``, which needs no OCI runtime at all.
- ``podman run`` needs ``--ulimit nproc=4096:4096``, and its default open-files
  limit (1048576) exceeds the hard limit here ("error setting rlimit type 7"):
  the limit is set to the current process's hard limit.
- Debian's pip refuses system-wide installs (PEP 668); the python image's pip
  does not. The stand-in drops ``EXTERNALLY-MANAGED`` to behave like it.
- HTTPS here goes through an egress proxy whose CA only the host's bundle
  has: the stand-in carries the host's ``/etc/ssl/certs/ca-certificates.crt``
  and points ``SSL_CERT_FILE``/``PIP_CERT`` at it (a real base image needs neither).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.helpers import ROOT

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump when the stand-in recipe changes, so cached tarballs are rebuilt.
RECIPE = "2"
# What a debootstrap root holds that an image does not need (smaller, faster import).
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt/archives")


def cache_dir() -> Path:
    explicit = os.environ.get("READYBOT_IMAGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "readybot"


def from_images(dockerfile: Path) -> list[str]:
    """The external images the Dockerfile's stages start from (not earlier stages)."""
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if not match:
            continue
        image, stage = match.group(1), match.group(2)
        if image.lower() not in stages and image not in images:
            images.append(image)
        if stage:
            stages.add(stage.lower())
    return images


def qualified(image: str) -> str:
    """``python:3.11-slim`` -> ``docker.io/library/python:3.11-slim``, as podman resolves short names."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def standin_tarball(log: list[str]) -> Path:
    """The stand-in root filesystem as a tarball, from the cache or made now with debootstrap."""
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
    key = hashlib.sha256("\0".join((RECIPE, SUITE, MIRROR, *PACKAGES)).encode() + ca).hexdigest()[:16]
    cached = cache_dir() / f"standin-{SUITE}-{key}.tar"
    if cached.exists():
        log.append(f"stand-in base: cached {cached}")
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="readybot-standin-", dir=cached.parent) as work:
        rootfs = Path(work) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            timeout=900,
        )
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        if ca:
            (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca)
        for part in TRIM:
            shutil.rmtree(rootfs / part, ignore_errors=True)
        partial = Path(work) / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], timeout=300)
        partial.replace(cached)
    log.append(f"stand-in base: debootstrap {SUITE} in {time.monotonic() - started:.0f} s -> {cached}")
    return cached


def run(argv: Sequence[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


@dataclass
class Podman:
    """podman on a private storage under ``home``."""

    home: Path

    def argv(self, *args: str) -> list[str]:
        runtime = ["--runtime", "runc"] if shutil.which("runc") else []
        return [
            "podman",
            "--root",
            str(self.home / "storage"),
            "--runroot",
            str(self.home / "run"),
            *runtime,
            *args,
        ]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), timeout=timeout, check=check)

    def run_flags(self) -> list[str]:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = hard if hard != resource.RLIM_INFINITY else 65536
        return ["--ulimit", "nproc=4096:4096", "--ulimit", f"nofile={nofile}:{nofile}"]

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self("rmi", "--all", "--force", timeout=120, check=False)
        with contextlib.suppress(Exception):
            run(self.argv("system", "reset", "--force"), timeout=120, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class BuiltImage:
    podman: Podman
    tag: str
    log: list[str]


@contextlib.contextmanager
def built_image(home: Path, tag: str = "localhost/readybot:image-test") -> Iterator[BuiltImage]:
    """The Dockerfile built on the stand-in base, in a private storage removed afterwards."""
    podman = Podman(home)
    log: list[str] = []
    try:
        tarball = standin_tarball(log)
        started = time.monotonic()
        changes = [
            "ENV LANG=C.UTF-8",
            f"ENV SSL_CERT_FILE={HOST_CA_BUNDLE}",
            f"ENV PIP_CERT={HOST_CA_BUNDLE}",
            'CMD ["python3"]',
        ]
        flags = [flag for change in changes for flag in ("--change", change)]
        for image in from_images(ROOT / "Dockerfile"):
            podman("import", *flags, str(tarball), qualified(image), timeout=300)
        log.append(f"import: {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        podman(
            "build",
            "--isolation",
            "chroot",
            "--pull=never",
            "--tag",
            tag,
            "--file",
            str(ROOT / "Dockerfile"),
            str(ROOT),
            timeout=900,
        )
        log.append(f"build: {time.monotonic() - started:.0f} s")
        yield BuiltImage(podman, tag, log)
    finally:
        podman.destroy()
