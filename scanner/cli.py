"""The ``scanner`` command: parse arguments, build settings once, call in.

Exit codes: 0 done; 1 a runtime failure; 2 bad configuration or usage; 3 the database schema is
not at this code's revision (behind with migrate_on_start off, or unknown / newer).

Everything printed for a person is scrubbed of secrets and escaped (:func:`printable`): a node's
or a database's text cannot move the cursor or fake a line. :func:`main` is the last handler: an
error that is not a :class:`ScannerError` (a bug, a library's surprise) is logged with its
traceback through the log pipeline (scrubbed, in the log format) and said in one line, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

import structlog

from scanner import __version__
from scanner.config import LoggingSettings, Settings, load_settings
from scanner.errors import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    ScannerError,
)
from scanner.observe.logging import configure_logging
from scanner.runtime import tune_gc
from scanner.secrets import Scrubber, printable


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with the message, as configuration errors do."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"scanner: error: {printable(message)}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


ENVIRONMENT = """environment:
  SCANNER_CONFIG            the TOML config file when --config is not given
  ENV                       development (default), production or testing
  DATABASE_URL              the PostgreSQL URL, read only when ENV=production
  DATABASE_URL_DEV          the database otherwise (default: sqlite:///./scanner.db)
  SCANNER_LOG_LEVEL         debug, info, warning or error ([logging] level)
  SCANNER_LOG_FORMAT        auto, json or console ([logging] format)
  SCANNER_DEBUG_LOGGERS     libraries whose debug logs to show, e.g. sqlalchemy.engine,httpx
  SCANNER_METRICS_ADDR      host:port of /metrics ([metrics] host and port)
  SCANNER_MIGRATE_ON_START  true or false ([migrate_on_start])

exit codes: 0 ok, 1 runtime failure, 2 configuration or usage, 3 schema version."""


def _config_arg(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """``--config`` where a user types it: on the command and (``nested``) on its actions too,
    where it does not overwrite one given before the action."""
    default = argparse.SUPPRESS if nested else None
    parser.add_argument(
        "--config", default=default, help="TOML config file (default: $SCANNER_CONFIG)"
    )


def _webhook_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``scanner deliver`` and ``scanner webhooks list | redeliver | test``."""
    deliver = sub.add_parser("deliver", help="deliver webhooks from the outbox until stopped")
    _config_arg(deliver)
    webhooks = sub.add_parser("webhooks", help="webhook deliveries: list, redeliver, test")
    wsub = webhooks.add_subparsers(dest="action", required=True, parser_class=_Parser)
    _config_arg(webhooks)
    listing = wsub.add_parser("list", help="the newest deliveries first")
    listing.add_argument(
        "--status", choices=["pending", "delivered", "failed"], help="only deliveries in it"
    )
    listing.add_argument("--limit", type=int, default=50, help="at most N rows (default 50)")
    listing.add_argument("--json", action="store_true", help="every column, as JSON")
    again = wsub.add_parser("redeliver", help="send a delivery's event again, as a new delivery")
    again.add_argument("delivery_id", help="the delivery's id (webhooks list)")
    probe = wsub.add_parser("test", help="send a signed test event now")
    probe.add_argument("--endpoint", type=int, required=True, help="index in [[webhooks]], from 0")
    probe.add_argument("--json", action="store_true", help="the outcome as JSON")
    for action in (listing, again, probe):
        _config_arg(action, nested=True)


def _backfill_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    backfill = sub.add_parser("backfill", help="scan a fixed block range once")
    _config_arg(backfill)
    backfill.add_argument("--chain", required=True, help="the [[chains]] name to read")
    backfill.add_argument("--from-block", type=int, required=True, help="first block, inclusive")
    backfill.add_argument("--to-block", type=int, required=True, help="last block, inclusive")
    backfill.add_argument("--dry-run", action="store_true", help="report, write nothing")
    backfill.add_argument(
        "--job-size",
        type=int,
        help="cut the range into jobs of N blocks that several processes share (PostgreSQL)",
    )


def _rewind_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    rewind = sub.add_parser(
        "rewind", help="resume a chain halted by a deep reorg: undo blocks above N, rescan"
    )
    _config_arg(rewind)
    rewind.add_argument("--chain", required=True, help="the halted chain's name")
    rewind.add_argument(
        "--to-block", type=int, required=True, help="keep blocks up to N, undo and rescan above"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scanner",
        description="Watches EVM chains for the payments a gateway is waiting for.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scanner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="scan every configured chain until stopped")
    _config_arg(run)

    _backfill_parser(sub)
    status = sub.add_parser("status", help="each chain's head, cursor, lag, open payments")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="every column, as JSON")

    check = sub.add_parser("check", help="validate config, database and RPC endpoints")
    _config_arg(check)

    _rewind_parser(sub)

    _webhook_parsers(sub)

    demo = sub.add_parser("demo", help="local anvil chain + demo token + simulated gateway")
    demo.add_argument("--payments", type=int, default=3, help="payments to create (default 3)")
    demo.add_argument("--seconds", type=float, default=60.0, help="how long to run (0: forever)")
    demo.add_argument(
        "--chain", choices=("anvil", "tron"), default="anvil", help="tron: a java-tron simulator"
    )

    _migrate_parsers(sub)
    for command in sub.choices.values():  # every command's --help: the environment, exit codes
        command.epilog = ENVIRONMENT
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _migrate_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    migrate = sub.add_parser("migrate", help="database migrations (Alembic)")
    _config_arg(migrate)
    msub = migrate.add_subparsers(dest="action", required=True, parser_class=_Parser)
    up = msub.add_parser("upgrade", help="bring the schema to this version's (or REVISION)")
    up.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    down = msub.add_parser("downgrade", help="step the schema back (before running older code)")
    down.add_argument("revision", nargs="?", default="-1", help="target (default: -1, one step)")
    current = msub.add_parser("current", help="the database's revision, and the code's head")
    history = msub.add_parser("history", help="every revision, newest first")
    stamp = msub.add_parser("stamp", help="record REVISION without running migrations")
    stamp.add_argument("revision", help="the revision to record")
    rev = msub.add_parser("revision", help="write a new migration script (development)")
    rev.add_argument("-m", "--message", required=True, help="what the migration changes")
    rev.add_argument(
        "--autogenerate", action="store_true", help="compare the models with the database"
    )
    for action in (up, down, current, history, stamp, rev):
        _config_arg(action, nested=True)


class _Edge:
    """What the last handler needs: the settings' secrets, whether logging is set up."""

    secrets: tuple[str, ...] = ()
    logging = False


def _settings(args: argparse.Namespace, *, webhook_secrets: bool = False) -> Settings:
    """The settings a command needs: ``webhook_secrets`` only for those that send webhooks."""
    settings = load_settings(getattr(args, "config", None), webhook_secrets=webhook_secrets)
    _Edge.secrets = tuple(settings.secrets())
    configure_logging(settings.logging, secrets=settings.secrets())
    _Edge.logging = True
    _say_database(settings)
    return settings


def _say_database(settings: Settings) -> None:
    """Every command names the database it uses (redacted) and why a DATABASE_URL is unused."""
    import structlog

    from scanner.secrets import redact_url

    log = structlog.get_logger("scanner.cli")
    shown = redact_url(settings.database_url.get_secret_value())
    log.info("database_in_use", database=shown, source=settings.database_source, env=settings.env)
    if settings.database_url_ignored is not None:
        log.warning("database_url_ignored", database=shown, reason=settings.database_url_ignored)


def cmd_run(args: argparse.Namespace) -> int:
    from scanner.app import run

    settings = _settings(args, webhook_secrets=True)
    _need_chains(settings, "nothing to scan")
    tune_gc()
    return asyncio.run(run(settings))


def _need_chains(settings: Settings, what: str) -> None:
    if not settings.chains:
        where = settings.config_file or "no config file (--config or SCANNER_CONFIG)"
        raise ConfigError(
            f"no [[chains]] configured in {where}: {what}", key="chains", file=settings.config_file
        )


def cmd_backfill(args: argparse.Namespace) -> int:
    from scanner.commands import backfill

    settings = _settings(args)
    tune_gc()
    return asyncio.run(backfill(settings, args))


def cmd_status(args: argparse.Namespace) -> int:
    from scanner.commands import status

    settings = _settings(args)
    _need_chains(settings, "no chain to show")
    return asyncio.run(status(settings, as_json=args.json))


def cmd_check(args: argparse.Namespace) -> int:
    from scanner.commands import check

    return asyncio.run(check(_settings(args)))


def cmd_rewind(args: argparse.Namespace) -> int:
    from scanner.commands import rewind

    return asyncio.run(rewind(_settings(args), args.chain, args.to_block))


# What the `demo` extra installs (and scanner/devchain imports); nothing else needs them.
DEMO_EXTRA_MODULES = frozenset({"web3", "eth_abi", "eth_utils", "requests"})


def cmd_deliver(args: argparse.Namespace) -> int:
    from scanner.app import deliver

    return asyncio.run(deliver(_settings(args, webhook_secrets=True)))


def cmd_webhooks(args: argparse.Namespace) -> int:
    from scanner.deliver.commands import webhooks

    return asyncio.run(webhooks(_settings(args, webhook_secrets=args.action != "list"), args))


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from scanner.devchain.demo import run_demo
        from scanner.devchain.tron_demo import run_tron_demo
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in DEMO_EXTRA_MODULES:
            raise
        raise ConfigError(
            f"demo: the demo extra (web3) is not installed ({missing} is missing): "
            "pip install 'ctrip-scanner[demo]'"
        ) from exc
    from scanner.devchain.node import AnvilStartError

    run = run_tron_demo if args.chain == "tron" else run_demo
    try:
        return run(payments=args.payments, seconds=args.seconds)
    except AnvilStartError as exc:
        _say(str(exc))
        return EXIT_FAILURE


def cmd_migrate(args: argparse.Namespace) -> int:
    from scanner.db import migrate

    settings = _settings(args)
    if args.action in ("upgrade", "downgrade", "stamp"):
        return _migrate_to(settings, args.action, args.revision)
    if args.action == "current":
        current = migrate.stored_revision(settings)  # creates no SQLite file
        head = migrate.head_revision()
        label = "(head)" if current == head else f"(head is {head})"
        print(printable(f"{current or '<none>'} {label}"))
    elif args.action == "history":
        for line in migrate.history(settings):
            print(printable(line))
    elif args.action == "revision":
        print(printable(migrate.revision(settings, args.message, args.autogenerate)))
    return EXIT_OK


def _migrate_to(settings: Settings, action: str, revision: str) -> int:
    """Upgrade, downgrade or stamp, then one sentence: from which revision to which."""
    from scanner.db import migrate
    from scanner.secrets import redact_url

    before = migrate.current(settings)
    getattr(migrate, action)(settings, revision)
    after = migrate.current(settings)
    shown = redact_url(settings.database_url.get_secret_value())
    head = " (head)" if after == migrate.head_revision() else ""
    if before == after:
        print(printable(f"{shown}: schema already at {after or '<none>'}{head}; nothing to do"))
    else:
        verb = {"upgrade": "upgraded", "downgrade": "downgraded", "stamp": "stamped"}[action]
        moved = f"from {before or '<none>'} to {after or '<none>'}{head}"
        print(printable(f"{shown}: schema {verb} {moved}"))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "backfill": cmd_backfill,
    "status": cmd_status,
    "check": cmd_check,
    "demo": cmd_demo,
    "rewind": cmd_rewind,
    "deliver": cmd_deliver,
    "webhooks": cmd_webhooks,
    "migrate": cmd_migrate,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ScannerError as exc:
        _say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last handler: nothing leaves unscrubbed or as a bare traceback
        return _crashed(exc)


def _say(message: str) -> None:
    print(f"scanner: {Scrubber(_Edge.secrets).printable(message)}", file=sys.stderr)


def _crashed(exc: Exception) -> int:
    """An unexpected error: its traceback through the log pipeline, one line on stderr."""
    if not _Edge.logging:
        configure_logging(LoggingSettings(), secrets=_Edge.secrets)
        _Edge.logging = True
    first = _first_leaf(exc)
    structlog.get_logger(__name__).error(
        "command_crashed", error=type(first).__name__, message=str(first), exc_info=exc
    )
    _say(f"unexpected {type(first).__name__}: {first} (details in the log: command_crashed)")
    return EXIT_FAILURE


def _first_leaf(exc: BaseException) -> BaseException:
    """The first error inside exception groups (a TaskGroup's), else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
