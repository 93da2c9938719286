"""The real ``scanner`` processes of a simulation: ``scanner run`` instances (started, killed with
SIGKILL, started again) and ``scanner backfill`` runs beside them, each logging to a file of its
own that a failing run shows the end of."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scanner.testkit.settings import CHAIN
from tests.ops.support import SCANNER, json_lines, scanner_env, write_config

#: ``scanner`` with each range's events stored as its plan makes them (:mod:`tests.sim.streamed`)
STREAMED = [sys.executable, str(Path(__file__).with_name("streamed.py"))]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def gave_up(self) -> bool:
        """A backfill that stopped on a node it could not reach (exit 1), or that a lagging
        node refused to start (its end past the node's head: exit 2), with one line saying so:
        what docs/operations.md promises; the operator runs it again."""
        last = self.tail(600).strip().splitlines()[-1:] or [""]
        if self.name == "run" or not last[0].startswith("scanner: "):
            return False
        code = self.popen.poll()
        return code == 1 or (code == 2 and "past the node's head" in last[0])

    def tail(self, chars: int = 2500) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


@dataclass
class Fleet:
    """Every process the simulation started, and what became of them."""

    workdir: Path
    db_url: str
    config: Path
    procs: list[Proc] = field(default_factory=list)
    started: int = 0  # processes so far (numbers their logs)
    streamed: bool = False  # every process runs tests/sim/streamed.py instead of ``scanner``

    @classmethod
    def make(
        cls,
        workdir: Path,
        db_url: str,
        rpc_url: str,
        tokens: list[tuple[str, str, int]],
        chain: str,
        *,
        streamed: bool = False,
    ) -> Fleet:
        config = write_config(
            workdir / "scanner.toml",
            rpc_url,
            tokens,
            confirmations=4,
            poll_interval=0.1,
            batch_size=8,
            extra_top="shutdown_timeout = 3.0\n[cluster]\nlease_seconds = 2.0",
            extra_chain=chain,
        )
        return cls(workdir, db_url, config, streamed=streamed)

    def _spawn(self, name: str, args: list[str]) -> Proc:
        self.started += 1
        log = self.workdir / f"{self.started:03d}-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [*(STREAMED if self.streamed else [SCANNER]), *args, "--config", str(self.config)],
                env=scanner_env(self.db_url),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def run(self) -> Proc:
        return self._spawn("run", ["run"])

    def backfill(self, start: int, end: int, *, dry_run: bool) -> Proc:
        args = ["backfill", "--chain", CHAIN, "--from-block", str(start), "--to-block", str(end)]
        return self._spawn(
            "dry-run" if dry_run else "backfill", args + (["--dry-run"] if dry_run else [])
        )

    def runners(self) -> list[Proc]:
        return [p for p in self.procs if p.name == "run" and p.alive()]

    def backfills(self) -> list[Proc]:
        return [p for p in self.procs if p.name != "run" and p.alive()]

    def kill9(self, proc: Proc) -> None:
        proc.killed = True
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(10)

    def stop_all(self) -> list[str]:
        """SIGTERM every live process; what did not exit 0 on it (then SIGKILLed)."""
        problems = []
        live = [p for p in self.procs if p.alive()]
        for proc in live:
            proc.popen.send_signal(signal.SIGTERM)
        for proc in live:
            try:
                code = proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9(proc)
                problems.append(f"{proc.log.name}: still running 15 s after SIGTERM")
                continue
            if code != 0:
                problems.append(f"{proc.log.name}: exit {code} on SIGTERM\n{proc.tail()}")
        return problems

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                self.kill9(proc)

    def problems(self) -> list[str]:
        """Processes that ended on their own with an error, and every traceback logged."""
        out = []
        for proc in self.procs:
            code = proc.popen.poll()
            if code not in (None, 0) and not proc.killed and not proc.gave_up():
                out.append(f"{proc.log.name}: exited {code} on its own\n{proc.tail()}")
            if "Traceback" in proc.log.read_text(encoding="utf-8", errors="replace"):
                out.append(f"{proc.log.name}: a traceback\n{proc.tail(6000)}")
        return out

    def events(self, name: str) -> list[dict[str, object]]:
        """The JSON log records called ``name`` of every process."""
        found = []
        for proc in self.procs:
            text_ = proc.log.read_text(encoding="utf-8", errors="replace")
            found += [r for r in json_lines(text_) if r.get("event") == name]
        return found
