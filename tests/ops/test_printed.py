"""What the ``scanner`` command prints for a person, as real processes: what a node says is shown
escaped (it cannot clear the screen or fake a line), a key in a host name is hidden, and an error
that is not the scanner's own is one scrubbed line plus a log record, exit 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from scanner.devchain.node import free_port
from tests.e2e.harness import Harness
from tests.ops.support import json_lines, run_cli, scanner_env, write_config
from tests.support.proxy import ThreadedProxy

pytestmark = pytest.mark.slow
SQLITE_ONLY = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
HOST_KEY = "9f3c2a71b8e04d5f9a6c1e2b7d8f0a34"  # a provider key as a host label (rivet-style)
PASSWORD = "pw9Kq2LxVt7Rz4Nb"
# A hostile node's error text: clear the screen, home the cursor, print a fake verdict.
FAKE = "\x1b[2J\x1b[Hanvil: ok (chain id 31337)\ncheck: ok\r\u202e"


def everything(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def person_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines beside the JSON log records."""
    lines = everything(result).splitlines()
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("{")]


@SQLITE_ONLY
async def test_what_a_node_says_is_printed_escaped(h: Harness, db_url: str, tmp_path: Path) -> None:
    tp = ThreadedProxy(h.chain.url)
    tp.start()
    try:
        tp.proxy.rpc_error("eth_chainId", FAKE)
        tp.proxy.rpc_error("eth_blockNumber", FAKE)
        config = write_config(tmp_path / "scanner.toml", tp.url, [("USDT", h.token, 6)])
        env = scanner_env(db_url)
        check, backfill = await asyncio.gather(
            asyncio.to_thread(run_cli, ["check", "--config", str(config)], env),
            asyncio.to_thread(
                run_cli,
                [
                    *("backfill", "--config", str(config), "--chain", "anvil"),
                    *("--from-block", "0", "--to-block", "1"),
                ],
                env,
            ),
        )
    finally:
        tp.stop()
    assert check.returncode == 1 and backfill.returncode == 1, everything(check)
    for result in (check, backfill):
        shown = everything(result)
        assert not any(c in shown for c in "\x1b\r\u202e"), repr(shown)
        assert "\\x1b[2J\\x1b[H" in shown  # what the node sent is shown, escaped
    lines = check.stdout.splitlines()
    assert "check: ok" not in lines and lines[-1] == "check: 1 problem(s)", lines
    (problem,) = [ln for ln in lines if ln.startswith("problem:")]
    assert "\\x0acheck: ok\\x0d\\u202e" in problem
    (said,) = person_lines(backfill)
    assert said.startswith("scanner: ") and "\\x1b[2J" in said


@SQLITE_ONLY
async def test_a_key_in_a_host_name_is_never_printed(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    """The provider's key is the first label of the host (no such host here: the lookup
    fails); every line names the host with that label hidden, and keeps the rest."""
    url = f"http://{HOST_KEY}.eth.rpc.invalid:{free_port()}/"
    config = write_config(tmp_path / "scanner.toml", url, [("USDT", h.token, 6)], level="debug")
    env = scanner_env(db_url)
    check = run_cli(["check", "--config", str(config)], env)
    backfill = run_cli(
        [
            *("backfill", "--config", str(config), "--chain", "anvil"),
            *("--from-block", "0", "--to-block", "1"),
        ],
        env,
    )
    assert check.returncode == 1 and backfill.returncode == 1, everything(check)
    for result in (check, backfill):
        assert HOST_KEY not in everything(result)
        assert HOST_KEY[:12] not in everything(result) and HOST_KEY[-12:] not in everything(result)
    (problem,) = [ln for ln in check.stdout.splitlines() if ln.startswith("problem:")]
    assert "http://***.eth.rpc.invalid:" in problem, problem
    assert "http://***.eth.rpc.invalid:" in person_lines(backfill)[0]


def test_an_unexpected_error_is_one_scrubbed_line_and_a_log_record(tmp_path: Path) -> None:
    """A database URL whose options the driver cannot take raises a ValueError, not an error of
    the scanner's own: the last handler logs it (with its traceback, in the log format, scrubbed)
    and says it in one line, exit 1."""
    url = f"postgresql://scanner:{PASSWORD}@127.0.0.1:1/payments?prepared_statement_cache_size=x"
    config = write_config(tmp_path / "scanner.toml", "http://127.0.0.1:1", [])
    env = scanner_env(None, ENV="production", DATABASE_URL=url)
    result = run_cli(["migrate", "--config", str(config), "current"], env)
    shown = everything(result)
    assert result.returncode == 1, shown
    assert "Traceback" not in shown and PASSWORD not in shown, shown
    (line,) = person_lines(result)
    assert line.startswith("scanner: unexpected ValueError: invalid literal for int()"), line
    (record,) = [r for r in json_lines(result.stderr) if r.get("event") == "command_crashed"]
    assert record["level"] == "error" and record["error"] == "ValueError"
    assert record["exception"][0]["exc_type"] == "ValueError"  # the traceback, as data


def test_a_port_out_of_range_is_a_configuration_error(tmp_path: Path) -> None:
    """Port 99999 used to reach the socket (an OverflowError, a traceback): it is refused with
    the settings, exit 2, naming the key and not the URL's secret."""
    url = f"http://127.0.0.1:99999/v3/{HOST_KEY}"
    config = write_config(tmp_path / "scanner.toml", url, [])
    result = run_cli(["check", "--config", str(config)], scanner_env("sqlite:///:memory:"))
    shown = everything(result)
    assert result.returncode == 2, shown
    assert "Traceback" not in shown and HOST_KEY not in shown, shown
    (line,) = person_lines(result)
    assert "chains[0].rpc_urls" in line and "Port out of range 0-65535" in line, line
