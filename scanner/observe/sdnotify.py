"""The systemd notification protocol (``sd_notify``), without libsystemd.

Built from an environment mapping: ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and ``WATCHDOG_USEC`` (with ``WATCHDOG_PID``, when set, naming this process). Without
them every method does nothing, so the same code runs under systemd, in a container, in tests.
A send that fails is logged once (``sd_notify_failed``) and never raised: notifications must not
take the scanner down.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog


def _address(raw: str | None) -> str | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    return raw if raw.startswith("/") else None


def _watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 1_000_000


class SystemdNotifier:
    """Tells systemd the service is ready, stopping, alive, or what it is doing."""

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        raw = environ.get("NOTIFY_SOCKET")
        self._address = _address(raw)
        self._watchdog = _watchdog_seconds(environ, os.getpid() if pid is None else pid)
        self._socket: socket.socket | None = None
        self._failure_logged = False
        self._log = structlog.get_logger(__name__)
        if raw and self._address is None:
            self._failed(ValueError("unsupported NOTIFY_SOCKET address"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, None without a watchdog."""
        if self._watchdog is None or not self.enabled:
            return None
        return self._watchdog / 2

    def ready(self) -> None:
        self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify("STATUS=" + " ".join(text.splitlines()))

    def notify(self, message: str) -> None:
        """Send one datagram of ``KEY=value`` lines; never raises."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            self._failed(exc)

    async def run_watchdog(self, alive: Callable[[], bool] = lambda: True) -> None:
        """Send ``WATCHDOG=1`` every :attr:`watchdog_interval` while ``alive()``; cancel to stop.

        Returns at once without a watchdog. Pass ``lambda: health.healthy()[0]`` so that a
        stalled chain stops the pings and systemd restarts the service.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            if alive():
                self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _failed(self, exc: Exception) -> None:
        if self._failure_logged:
            return
        self._failure_logged = True
        self._log.warning(
            "sd_notify_failed",
            socket=(self._address or "").replace("\0", "@"),
            error=type(exc).__name__,
            message=str(exc),
        )
