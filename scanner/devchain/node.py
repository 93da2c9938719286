"""One anvil node as a child process on 127.0.0.1, and JSON-RPC to it.

`Anvil.start()` (or `await Anvil.astart()`) runs a node and waits until it answers; `rpc` and
`rpc_batch` call it, raising :class:`scanner.errors.RpcResponseError` with the node's message.
What runs on the node lives beside this module: `actions` (sending, blocks, time, reorgs) and
`contracts` (the committed test contracts, ERC-20 calls, bulk chains).

The node is started with ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: it dies when the
*thread* that started it exits, so start it from a long-lived thread (the main
thread or the event-loop thread), never from a short-lived worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from scanner.errors import RpcResponseError

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_ANVIL = REPO_ROOT / "devchain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
JSON_HEADERS = {"Content-Type": "application/json"}

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.02
PORT_RETRIES = 3

_PR_SET_PDEATHSIG = 1


class AnvilStartError(Exception):
    """anvil (the local dev chain) is not installed, exited, or did not answer in time: the
    demo's and the tests' trouble, outside the scanner's error tree."""


# --------------------------------------------------------------------------- process


def find_anvil() -> str:
    """Path of the anvil binary: $ANVIL_BIN, the npm copy in devchain/, or PATH."""
    env = os.environ.get("ANVIL_BIN")
    if env:
        return env
    if NPM_ANVIL.is_file():
        return str(NPM_ANVIL)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilStartError(
        f"anvil not found: set ANVIL_BIN, or run `npm ci --prefix devchain` "
        f"(expected {NPM_ANVIL}), or put anvil on PATH"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the child when the parent thread exits."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # parent already gone before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening(pid: int, port: int) -> bool:
    """Process `pid` has a listening TCP socket on `port` (not checked off Linux).

    Guards against a lost port race: a node that failed to bind must not be taken
    for ready because another process answers on that port.
    """
    if sys.platform != "linux":
        return True
    try:
        inodes = _socket_inodes(pid)
    except OSError:
        return False
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    for table in (t for t in tables if t.exists()):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "0A" and local_port == port and fields[9] in inodes:
                return True
    return False


def _anvil_args(
    *,
    chain_id: int = 31337,
    block_time: float | None = None,
    extra_args: Sequence[str] = (),
    load_state: str | None = None,
    dump_state: str | None = None,
) -> list[str]:
    """anvil's command-line options (the keywords :meth:`Anvil.start` takes beside ``port``)."""
    args = ["--chain-id", str(chain_id), "--silent"]
    if block_time is not None:
        args += ["--block-time", f"{block_time:g}"]
    if load_state is not None:
        args += ["--load-state", load_state]
    if dump_state is not None:
        args += ["--dump-state", dump_state]
    return args + list(extra_args)


def _rpc_payload(request_id: int, method: str, params: Sequence[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}


def _rpc_result(method: str, reply: Mapping[str, Any]) -> Any:
    error = reply.get("error")
    if error is not None:
        code, message = int(error.get("code", 0)), str(error.get("message", error))
        raise RpcResponseError(
            f"{method}: {message} (code {code})",
            method=method,
            code=code,
            data=error.get("data"),
        )
    return reply.get("result")


class Anvil:
    """One anvil node, a child process listening on 127.0.0.1. Use `Anvil.start()`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self._process = process
        self._port = port
        self._workdir = workdir
        self._client = httpx.Client(headers=JSON_HEADERS, timeout=60.0)
        self._ids = itertools.count(1)

    # ---- lifecycle

    @classmethod
    def start(
        cls, *, port: int | None = None, ready_timeout: float = START_TIMEOUT_S, **options: Any
    ) -> Self:
        """Start a node and wait until it answers `eth_chainId`; ``options``: `_anvil_args`."""
        args = cls._args(**options)
        attempts = 1 if port is not None else PORT_RETRIES
        for attempt in range(attempts):
            node = cls._spawn(port if port is not None else free_port(), args)
            try:
                node.wait_ready(ready_timeout)
                return node
            except AnvilStartError:
                lost_race = node._lost_port_race()
                node.stop()
                if not lost_race or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    async def astart(
        cls, *, port: int | None = None, ready_timeout: float = START_TIMEOUT_S, **options: Any
    ) -> Self:
        """Like `start`, without blocking the event loop while the node boots.

        The process is spawned in the calling (event-loop) thread so PDEATHSIG is tied to it.
        """
        args = cls._args(**options)
        node = cls._spawn(port if port is not None else free_port(), args)
        try:
            await node.await_ready(ready_timeout)
        except BaseException:
            node.stop()
            raise
        return node

    @classmethod
    def _args(cls, **options: Any) -> list[str]:
        return _anvil_args(**options)

    @classmethod
    def _command(cls, port: int, args: Sequence[str]) -> list[str]:
        return [find_anvil(), "--host", "127.0.0.1", "--port", str(port), *args]

    @classmethod
    def _spawn(cls, port: int, args: Sequence[str]) -> Self:
        workdir = Path(tempfile.mkdtemp(prefix="anvil-"))
        cmd = cls._command(port, args)
        with open(workdir / "anvil.log", "wb") as log:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return cls(process, port, workdir)

    def _raise_if_hopeless(self, deadline: float) -> None:
        """While the node does not answer yet: raise if it died or time is up."""
        if self._process.poll() is not None:
            raise AnvilStartError(
                f"anvil exited with code {self._process.returncode}:\n{self.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise AnvilStartError(f"anvil did not answer on {self.url} in time:\n{self.log_tail()}")

    def _lost_port_race(self) -> bool:
        """Someone else took the free port we picked before anvil bound it."""
        return self._process.poll() is not None and "Address already in use" in self.log_tail()

    def _answers(self) -> bool:
        """This process (not another on the same port) listens and answers `eth_chainId`."""
        if not _listening(self.pid, self._port):
            return False
        try:
            self.rpc("eth_chainId")
        except httpx.TransportError:
            return False
        return True

    def wait_ready(self, ready_timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + ready_timeout
        while not self._answers():
            self._raise_if_hopeless(deadline)
            time.sleep(POLL_INTERVAL_S)

    async def await_ready(self, ready_timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + ready_timeout
        while not await asyncio.to_thread(self._answers):
            self._raise_if_hopeless(deadline)
            await asyncio.sleep(POLL_INTERVAL_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (lets --dump-state write), SIGKILL after `timeout`; return the exit code."""
        self._client.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)
        return self._process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # ---- properties

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self._workdir / "anvil.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    # ---- JSON-RPC

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; raise `RpcResponseError` with the node's message on error."""
        response = self._client.post(self.url, json=_rpc_payload(next(self._ids), method, params))
        return _rpc_result(method, response.json())

    def rpc_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Many calls in one HTTP request; results in call order.

        anvil runs the calls of a batch concurrently: do not rely on their order
        (e.g. a send and an `evm_mine` in one batch).
        """
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        payload = [
            _rpc_payload(i, method, params) for i, (method, params) in zip(ids, calls, strict=True)
        ]
        replies = {reply["id"]: reply for reply in self._client.post(self.url, json=payload).json()}
        return [
            _rpc_result(method, replies[i]) for i, (method, _params) in zip(ids, calls, strict=True)
        ]
