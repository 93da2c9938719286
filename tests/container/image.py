"""The project's container image, built and run on a machine without a Docker engine.

``.ci/container-image`` builds the unchanged ``Dockerfile`` with podman (``--isolation chroot``,
a base image from Debian's packages). No OCI runtime works here, so a
"container" is what podman gives without one: ``podman create`` makes the image's writable layer
and ``podman mount`` shows its root; commands run in that root through ``chroot`` as the image's
``USER``, with the image's ``Env``, ``WorkingDir`` and ``Entrypoint``, and nothing of the host's
environment. The root shares the host's network, as ``--network host`` would: the test
PostgreSQL and anvil are at 127.0.0.1.

What ``docker run -v ./scanner.toml:/etc/scanner/scanner.toml:ro`` does is done by copying the
file into the container's layer, owned by root and read-only: the scanner's user sees what it
would see through the mount; the layer goes with the container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / ".ci" / "container-image"
# One tag per checkout: test runs of two checkouts on one machine never use each other's image.
TAG = f"localhost/ctrip-scanner:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
BASE = "docker.io/library/python:3.11-slim"
CACHE = Path(os.environ.get("CTRIP_IMAGE_CACHE", "/var/cache/ctrip-scanner"))
BUILD_TIMEOUT_S = 300
CONTAINER_PREFIX = "ctrip-scanner-test-"


def unusable_reason() -> str | None:
    """Why the image cannot be built and run here (None: it can)."""
    if os.geteuid() != 0:
        return "building and running the image needs root (podman's store, chroot)"
    for tool, package in (("podman", "podman"), ("chroot", "coreutils")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package: {package}; .ci/run installs it)"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[-300:]}"
    base = subprocess.run(["podman", "image", "exists", BASE], capture_output=True, timeout=60)
    cached = any(CACHE.glob("base-*.tar"))
    if base.returncode != 0 and not cached and shutil.which("debootstrap") is None:
        return "no python:3.11-slim base and no debootstrap to make one (Debian: debootstrap)"
    return None


def build(tag: str = TAG) -> str:
    """Build the image (cached after the first run); its id."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), tag],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise AssertionError(f"the image build failed:\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


def inspect(ref: str) -> dict[str, Any]:
    out = subprocess.run(
        ["podman", "image", "inspect", ref], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    data: list[dict[str, Any]] = json.loads(out)
    return data[0]


@dataclass(frozen=True)
class ImageConfig:
    """What a container engine takes from the image to start it."""

    user: str
    env: dict[str, str]
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    stop_signal: str

    @classmethod
    def of(cls, ref: str) -> ImageConfig:
        image = inspect(ref)
        config = image["Config"]
        return cls(
            user=config.get("User") or "root",
            env=dict(item.partition("=")[::2] for item in config.get("Env") or []),
            workdir=config.get("WorkingDir") or "/",
            entrypoint=config.get("Entrypoint") or [],
            cmd=config.get("Cmd") or [],
            healthcheck=(image.get("Healthcheck") or {}).get("Test") or [],
            stop_signal=config.get("StopSignal") or "SIGTERM",
        )


def _passwd_ids(root: Path, user: str) -> tuple[int, int, str]:
    """``USER name[:group]`` resolved in the image's own /etc/passwd: uid, gid, home."""
    name, _, group = user.partition(":")
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name or fields[2] == name:
            uid, gid, home = int(fields[2]), int(fields[3]), fields[5]
            break
    else:
        raise AssertionError(f"USER {name} is not in the image's /etc/passwd")
    if group:
        for line in (root / "etc/group").read_text().splitlines():
            fields = line.split(":")
            if group in (fields[0], fields[2]):
                gid = int(fields[2])
    return uid, gid, home


class Container:
    """The image's root, writable, with commands run in it as the image's user."""

    def __init__(self, name: str, root: Path, config: ImageConfig) -> None:
        self.name, self.root, self.config = name, root, config
        self.uid, self.gid, self.home = _passwd_ids(root, config.user)

    def mount_file(self, source: Path, target: str) -> None:
        """``-v source:target:ro``: the file at ``target``, root's, readable by everyone."""
        path = self.root / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        os.chown(path, 0, 0)
        path.chmod(0o444)

    def argv(self, command: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """``chroot`` into the root as the image's user, in its WORKDIR, with only its
        environment (and ``env``, as ``-e``), then exec ``command``."""
        environment = {"HOME": self.home, "HOSTNAME": self.name, **self.config.env, **env}
        return [
            "chroot",
            f"--userspec={self.uid}:{self.gid}",
            str(self.root),
            "/usr/bin/env",
            "-i",
            *(f"{k}={v}" for k, v in environment.items()),
            "/bin/sh",
            "-c",
            'cd "$0" && exec "$@"',
            self.config.workdir,
            *command,
        ]

    def scanner(self, args: Sequence[str] = ()) -> list[str]:
        """What ``docker run IMAGE ARGS`` runs: the entrypoint, then ARGS or the image's CMD."""
        return [*self.config.entrypoint, *(args or self.config.cmd)]

    def run(
        self, command: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def healthcheck(self, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK (``CMD`` form), run in the container as the engine does."""
        kind, *command = self.config.healthcheck
        assert kind == "CMD", self.config.healthcheck
        return self.run(command, env, timeout=10.0)


def _podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _remove(name: str) -> None:
    for args in (("umount", name), ("rm", "--force", name)):
        subprocess.run(["podman", *args], capture_output=True, timeout=60, check=False)


def remove_stale_containers() -> None:
    """Containers left by test processes that died before their clean-up."""
    names = _podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"name={CONTAINER_PREFIX}")
    for name in names.split():
        pid = name.removeprefix(CONTAINER_PREFIX).partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove(name)


@contextmanager
def container(ref: str = TAG) -> Iterator[Container]:
    """A fresh container of ``ref`` (``podman create``, no OCI runtime), removed on the way out."""
    name = f"{CONTAINER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _podman("create", "--no-healthcheck", "--name", name, ref)
    try:
        root = Path(_podman("mount", name))
        yield Container(name, root, ImageConfig.of(ref))
    finally:
        _remove(name)


class Process:
    """A command running in a container; output to files (a pipe nobody reads would block)."""

    def __init__(self, argv: list[str]) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="container-proc-"))
        with open(self.logs / "out", "wb") as out, open(self.logs / "err", "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )

    def output(self) -> str:
        return "".join(
            (self.logs / f).read_text(encoding="utf-8", errors="replace") for f in ("out", "err")
        )

    def stop(self, sig: str) -> int:
        """Send the image's STOPSIGNAL to the process itself (the chroot execs down to it)."""
        self.proc.send_signal(signal.Signals[sig])
        return self.proc.wait(timeout=45)

    def close(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.logs, ignore_errors=True)


@contextmanager
def running(box: Container, command: Sequence[str], env: Mapping[str, str]) -> Iterator[Process]:
    process = Process(box.argv(command, env))
    try:
        yield process
    finally:
        process.close()


def image_size(ref: str) -> int:
    return int(inspect(ref)["Size"])


def walk_names(root: Path, top: str) -> Iterator[Path]:
    """Every path under ``root/top`` (not following links), relative to ``root``."""
    for dirpath, dirnames, filenames in os.walk(root / top.lstrip("/")):
        for entry in (*dirnames, *filenames):
            yield (Path(dirpath) / entry).relative_to(root)
