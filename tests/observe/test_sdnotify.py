from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from scanner.observe.sdnotify import SystemdNotifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def test_sends_each_notification(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    try:
        assert notifier.enabled
        notifier.ready()
        notifier.status("scanning eth at 123\nand base")
        notifier.watchdog()
        notifier.stopping()
        received = [sock.recv(4096) for _ in range(4)]
    finally:
        notifier.close()
    assert received == [
        b"READY=1",
        b"STATUS=scanning eth at 123 and base",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


def test_abstract_socket() -> None:
    name = f"ctrip-scanner-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        notifier.close()
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "2000000"})
    with structlog.testing.capture_logs() as events:
        notifier.ready()
        notifier.watchdog()
        notifier.status("x")
        notifier.stopping()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert events == []


def test_watchdog_interval_is_half_of_watchdog_usec(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier(env).watchdog_interval == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": "1"}, pid=42).watchdog_interval is None
    assert SystemdNotifier({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_interval == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "s")}).watchdog_interval is None


def test_send_failure_is_logged_once_and_never_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with structlog.testing.capture_logs() as events:
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    notifier.close()
    assert [e["event"] for e in events] == ["sd_notify_failed"]
    assert events[0]["error"] == "FileNotFoundError"


def test_unsupported_address_is_logged_and_ignored() -> None:
    with structlog.testing.capture_logs() as events:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"})
        notifier.ready()
    assert not notifier.enabled
    assert [e["event"] for e in events] == ["sd_notify_failed"]


async def test_run_watchdog_pings_while_alive(tmp_path: Path) -> None:
    path = tmp_path / "wd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000"})
        alive = True
        task = asyncio.create_task(notifier.run_watchdog(lambda: alive))
        loop = asyncio.get_running_loop()
        try:
            for _ in range(2):
                assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 2) == b"WATCHDOG=1"
            alive = False
            await asyncio.sleep(0.05)
            while True:  # drain what was sent before alive turned false
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    break
            await asyncio.sleep(0.05)
            with pytest.raises(BlockingIOError):
                sock.recv(4096)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            notifier.close()


async def test_run_watchdog_returns_without_a_watchdog() -> None:
    await asyncio.wait_for(SystemdNotifier({}).run_watchdog(), 1)
