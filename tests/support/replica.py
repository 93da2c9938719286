"""A replicated PostgreSQL on loopback, as gateways run it: a primary, a streaming standby, and
one address in front that follows the primary (a TCP forwarder standing for a virtual IP).

- :class:`Cluster`: a PostgreSQL server of its own (``initdb`` in a temporary directory, run as
  the ``postgres`` user when the tests run as root), started, stopped ``-m immediate`` (a crash),
  promoted.
- :class:`Forward`: a TCP forwarder on a port of its own: ``point(port)`` moves the address (and
  drops every connection through it, as a moved virtual IP does); ``cut()`` drops them and holds
  new ones back until the next ``point``. The standby replicates through one, so a test can make
  it fall behind.
- :func:`replicated_pair`: both clusters and both forwarders, torn down on the way out.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from scanner.devchain.node import free_port
from tests.support.wait import until_sync

PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(os.listdir("/usr/lib/postgresql"))[-1]
        if Path("/usr/lib/postgresql").is_dir()
        else "-"
    )
    / "bin"
)


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_basebackup").exists()


def _as_postgres(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    return subprocess.run(command, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


@dataclass
class Cluster:
    data: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def init(cls, root: Path) -> Cluster:
        cluster = cls(root / "primary", free_port())
        _as_postgres(
            [str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(cluster.data)]
        )
        cluster.configure()
        return cluster

    def configure(self) -> None:
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.data}'\nfsync = off\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "wal_receiver_timeout = 2s\nwal_retrieve_retry_interval = 200ms\n"
            )

    def start(self) -> None:
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data / "log"),
                "-w",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        with suppress(subprocess.CalledProcessError):
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def promote(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "promote"])

    def standby_of(self, through: int, root: Path) -> Cluster:
        """A streaming standby of this cluster, replicating through port ``through``."""
        standby = Cluster(root / "standby", free_port())
        _as_postgres(
            [
                str(PG_BIN / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(through),
                "-U",
                "postgres",
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
            ]
        )
        standby.configure()
        return standby


class Forward:
    """A TCP forwarder: every connection to ``port`` goes on to the port it points at."""

    def __init__(self, target: int | None) -> None:
        self.port = free_port()
        self._target = target
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def point(self, target: int) -> None:
        """Move the address: connections through the old target are dropped."""
        self._drop()
        with self._lock:
            self._target = target

    def cut(self) -> None:
        """Drop every connection; new ones are refused until the next :meth:`point`."""
        with self._lock:
            self._target = None
        self._drop()

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()

    def _drop(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                target = self._target
            if target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class ReplicatedPair:
    primary: Cluster
    standby: Cluster
    address: Forward  # what the scanner and the gateway connect to
    replication: Forward  # what the standby streams through

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.address.port}/{database}"


def wait_replayed(pair: ReplicatedPair, timeout: float = 30.0) -> None:
    """Until the standby has replayed everything the primary has written."""
    query = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication"
    until_sync(
        lambda: _psql(pair.primary.port, query).strip() == "0",
        timeout,
        "the standby caught up",
        0.1,
    )


def _psql(port: int, query: str) -> str:
    return _as_postgres(
        [
            str(PG_BIN / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-At",
            "-c",
            query,
        ]
    ).stdout


@contextmanager
def replicated_pair() -> Iterator[ReplicatedPair]:
    root = Path(tempfile.mkdtemp(prefix="scanner-replica-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    primary = Cluster.init(root)
    primary.start()
    replication = Forward(primary.port)
    standby: Cluster | None = None
    address = Forward(primary.port)
    try:
        standby = primary.standby_of(replication.port, root)
        standby.start()
        pair = ReplicatedPair(primary, standby, address, replication)
        wait_replayed(pair)
        yield pair
    finally:
        address.close()
        replication.close()
        for cluster in (standby, primary):
            if cluster is not None:
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
