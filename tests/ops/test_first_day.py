"""A new operator's first day, as real processes: which database a command uses, what it needs
from the environment, an unmigrated database, options where a user types them, output meant for
a person, and the messages of the usual mistakes."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from scanner.cli import build_parser
from scanner.db import migrate
from scanner.secrets import redact_url
from tests.ops.support import json_lines, run_cli, scanner_env, write_config

pytestmark = [pytest.mark.slow, pytest.mark.long(60)]
UNREACHABLE = "http://127.0.0.1:1"
HOOK = '[[webhooks]]\nurl = "http://127.0.0.1:1/hooks"\nsecret_env = "SHOP_HOOK_SECRET"\n'
PASSWORD = "s3cretpass"  # the test server trusts local connections: any password is accepted


def _with_password(url: str) -> tuple[str, str]:
    """A PostgreSQL URL with a password in it (and that password); SQLite's as it is."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url, PASSWORD
    if parsed.password is None:
        parsed = parsed.set(password=PASSWORD)
    return parsed.render_as_string(hide_password=False), str(parsed.password)


def _events(stderr: str) -> dict[str, dict[str, Any]]:
    return {str(e.get("event")): e for e in json_lines(stderr)}


def _run(*runs: tuple[list[str], dict[str, str]]) -> Any:
    async def all_of() -> list[Any]:
        return await asyncio.gather(*(asyncio.to_thread(run_cli, a, e) for a, e in runs))

    return asyncio.run(all_of())


def test_every_command_names_its_database_and_an_unused_database_url_is_a_warning(
    db_url: str, tmp_path: Path
) -> None:
    """``DATABASE_URL`` is read in production only: elsewhere it is set and not used, loudly."""
    config = write_config(tmp_path / "s.toml", UNREACHABLE, [])
    unused = "postgresql://shop:hunter2pass@db.example/shop"
    used, password = _with_password(db_url)
    env = scanner_env(used, DATABASE_URL=unused, ENV="development")
    upgraded, current = _run(
        (["migrate", "upgrade", "--config", str(config)], env),
        (["migrate", "current"], scanner_env(used)),
    )
    assert upgraded.returncode == 0 and current.returncode == 0, upgraded.stderr + current.stderr
    events = _events(upgraded.stderr)
    in_use = events["database_in_use"]
    assert (in_use["source"], in_use["env"], in_use["level"]) == (
        "DATABASE_URL_DEV",
        "development",
        "info",
    )
    assert in_use["database"] == redact_url(used)  # the URL in use, its password hidden
    for output in (upgraded.stderr, upgraded.stdout, current.stderr, current.stdout):
        assert password not in output
    ignored = events["database_url_ignored"]
    assert ignored["level"] == "warning"
    assert "read only when ENV=production" in ignored["reason"]
    assert "DATABASE_URL_DEV" in ignored["reason"]
    assert "hunter2pass" not in upgraded.stderr + upgraded.stdout
    assert "database_url_ignored" not in current.stderr  # DATABASE_URL unset: nothing to say
    assert _events(current.stderr)["database_in_use"]["source"] == "DATABASE_URL_DEV"


def test_a_command_reads_only_the_settings_it_needs(db_url: str, tmp_path: Path) -> None:
    """``status`` sends no webhook: a webhook secret missing from its environment is no error;
    ``check`` names it; ``deliver`` (which signs) refuses to start without it."""
    config = write_config(tmp_path / "s.toml", UNREACHABLE, [], extra_top=HOOK)
    env = scanner_env(db_url)
    status, check, deliver = _run(
        (["status", "--json", "--config", str(config)], env),
        (["check", "--config", str(config)], env),
        (["deliver", "--config", str(config)], env),
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["chain"] == "anvil"
    assert check.returncode == 1
    assert "problem: webhooks[0].secret_env: environment variable SHOP_HOOK_SECRET is not set" in (
        check.stdout
    )
    assert deliver.returncode == 2 and "SHOP_HOOK_SECRET is not set" in deliver.stderr


def test_an_unmigrated_database_is_one_sentence_and_nothing_is_created(
    empty_db_url: str, db_backend: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "s.toml", UNREACHABLE, [])
    url, password = _with_password(empty_db_url)
    env = scanner_env(url)
    status, check, current = _run(
        (["status", "--config", str(config)], env),
        (["check", "--config", str(config)], env),
        (["migrate", "current"], env),
    )
    missing = "the schema is missing: run `scanner migrate upgrade`"
    assert status.returncode == 3 and missing in status.stderr, status.stderr
    assert check.returncode == 1 and missing in check.stdout, check.stdout
    assert current.returncode == 0 and current.stdout.startswith("<none> (head is ")
    for result in (status, check, current):
        assert "OperationalError" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        assert password not in result.stderr + result.stdout  # redacted on both databases
        assert _events(result.stderr)["database_in_use"]["database"] == redact_url(url)
    if db_backend == "sqlite":
        assert not (tmp_path / "empty.db").exists()  # no command created the file
    upgraded = run_cli(["migrate", "upgrade"], env)
    head = migrate.head_revision()
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"schema upgraded from <none> to {head} (head)")
    again = run_cli(["migrate", "upgrade"], env)
    assert again.stdout.strip().endswith(f"schema already at {head} (head); nothing to do")


def _arguments(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, Any]]:
    """Every (command path, argument) of the parser, recursively."""
    out: list[tuple[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _arguments(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            out.append((path, action))
    return out


def test_options_go_where_a_user_types_them_and_every_argument_has_help(
    db_url: str, tmp_path: Path
) -> None:
    parser = build_parser()
    undocumented = [(path, a.dest) for path, a in _arguments(parser, "scanner") if not a.help]
    assert undocumented == []
    for args in (["migrate", "current", "--config", "F"], ["migrate", "--config", "F", "current"]):
        assert parser.parse_args(args).config == "F"
    assert parser.parse_args(["webhooks", "--config", "F", "list"]).config == "F"
    assert parser.parse_args(["webhooks", "list", "--config", "F"]).config == "F"

    config = write_config(tmp_path / "s.toml", UNREACHABLE, [])
    after, top_help, status_help = _run(
        (["migrate", "current", "--config", str(config)], scanner_env(db_url)),
        (["--help"], scanner_env()),
        (["status", "--help"], scanner_env()),
    )
    assert after.returncode == 0 and after.stdout.endswith("(head)\n"), after.stderr
    for shown in (top_help, status_help):
        for variable in ("SCANNER_CONFIG", "ENV", "DATABASE_URL", "DATABASE_URL_DEV"):
            assert f"\n  {variable} " in shown.stdout


def test_one_off_commands_print_what_was_asked_without_library_noise(
    db_url: str, tmp_path: Path
) -> None:
    """At ``level = "debug"`` the scanner's own debug events show; SQLAlchemy's, aiosqlite's,
    asyncpg's and Alembic's only when named in ``SCANNER_DEBUG_LOGGERS``."""
    config = write_config(tmp_path / "s.toml", UNREACHABLE, [], level="debug")
    named = scanner_env(db_url, SCANNER_DEBUG_LOGGERS="sqlalchemy.engine")
    quiet, loud = _run(
        (["status", "--config", str(config)], scanner_env(db_url)),
        (["status", "--config", str(config)], named),
    )
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    loggers = {str(e.get("logger")) for e in json_lines(quiet.stderr)}
    noisy = ("sqlalchemy", "aiosqlite", "asyncpg", "alembic")
    assert not [name for name in loggers if name.startswith(noisy)], loggers
    assert "Context impl" not in quiet.stderr
    assert quiet.stdout.split()[0] == "chain"  # the table, on stdout
    assert "sqlalchemy.engine.Engine" in {str(e.get("logger")) for e in json_lines(loud.stderr)}


def test_status_without_a_chain_says_so(db_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text('[logging]\nformat = "json"\n', encoding="utf-8")
    (result,) = _run((["status", "--config", str(empty)], scanner_env(db_url)))
    assert result.returncode == 2 and result.stdout == ""
    assert f"no [[chains]] configured in {empty}: no chain to show" in result.stderr


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("url", "starts"),
    [
        ("localhost:8545", "'localhost'"),
        ("mainnet.infura.io/v3/0123abcdkey", "'mainnet.infura.io'"),
        ("wss://eth.example/KEY0123", "'wss'"),
    ],
)
def test_an_rpc_url_without_http_says_what_is_wrong_without_its_secret(
    db_url: str, tmp_path: Path, url: str, starts: str
) -> None:
    config = write_config(tmp_path / "s.toml", url, [])
    (result,) = _run((["check", "--config", str(config)], scanner_env(db_url)))
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "chains[0].rpc_urls: RPC URL must start with http:// or https://" in message
    assert f"this one starts with {starts}" in message
    assert "Value error" not in message and ":///***" not in message
    assert "0123" not in message  # the key in the path never shows
