"""Alembic, wrapped with the application's URL: what ``scanner migrate ...`` and start-up call.

Every function takes the resolved :class:`~scanner.config.Settings` and opens its own short-lived
connection (no pool). The sync functions may be called with or without a running event loop.

Start-up (:func:`ensure_schema`), as docs/design.md says: the database's revision equal to the
code's head goes on; behind is upgraded when ``migrate_on_start`` is set, else
:class:`SchemaBehind`; a revision this code does not know is refused with :class:`SchemaUnknown`. On
PostgreSQL the check and the upgrade run under an advisory lock, so replicas starting together
migrate once.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from scanner.config import Settings
from scanner.db.engine import make_engine
from scanner.db.errors import DRIVER_ERRORS, database_error
from scanner.db.locks import MIGRATION_LOCK_KEY, advisory_lock
from scanner.db.models import metadata
from scanner.errors import DatabaseError, ScannerError, SchemaBehind, SchemaUnknown
from scanner.secrets import redact_url

log = structlog.get_logger(__name__)

T = TypeVar("T")


def _scripts_home() -> Path:
    """Where ``alembic.ini`` and ``migrations/`` are: next to the package in a source checkout
    (development, editable install), else where an installed wheel put them (its data files,
    ``sys.prefix/share/ctrip-scanner``: the container image has no source tree)."""
    source = Path(__file__).resolve().parents[2]
    for home in (source, Path(sys.prefix) / "share" / "ctrip-scanner"):
        if (home / "alembic.ini").is_file() and (home / "migrations" / "env.py").is_file():
            return home
    return source


ROOT = _scripts_home()
ALEMBIC_INI = ROOT / "alembic.ini"
MIGRATIONS_DIR = ROOT / "migrations"
UPGRADE_COMMAND = "scanner migrate upgrade"


@dataclass(frozen=True)
class SchemaStatus:
    """What :func:`ensure_schema` found (``current``, before any upgrade) and did."""

    current: str | None
    head: str
    upgraded: bool


# -- configuration shared with migrations/env.py ------------------------------------------------


def alembic_config(
    settings: Settings | None = None, connection: Connection | None = None
) -> Config:
    """An Alembic config for this code's scripts; env.py uses ``settings``/``connection`` if set."""
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["configure_logging"] = False
    if settings is not None:
        config.attributes["settings"] = settings
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def context_options(dialect_name: str) -> dict[str, Any]:
    """The options env.py passes to ``context.configure`` (and :func:`schema_diff` uses)."""
    return {
        "target_metadata": metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
        # SQLite DDL is transactional here: the engine emits BEGIN IMMEDIATE itself.
        "transactional_ddl": True,
    }


@contextmanager
def quiet_expression_index_warnings() -> Iterator[None]:
    """SQLite cannot reflect expression indexes (``lower(address)``): autogenerate skips them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index")
        yield


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The code's head revision (the scripts must have exactly one head)."""
    head = script_directory().get_current_head()
    if head is None:
        raise ScannerError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head


# -- running against the database --------------------------------------------------------------


def _block_on(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, in a worker thread when this thread runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _database_error(settings: Settings, exc: BaseException) -> DatabaseError:
    return database_error(exc, settings.database_url.get_secret_value(), settings.secrets())


async def _on_connection(settings: Settings, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on one connection (taking the migration lock on PostgreSQL) and commit."""
    engine = make_engine(settings, migrating=True)
    try:
        async with engine.connect() as conn, advisory_lock(conn, MIGRATION_LOCK_KEY):
            result = await conn.run_sync(work)
            await conn.commit()
            return result
    except CommandError as exc:
        raise ScannerError(f"migration failed: {exc}") from exc
    except DRIVER_ERRORS as exc:
        raise _database_error(settings, exc) from exc
    finally:
        await engine.dispose()


def _run(settings: Settings, work: Callable[[Connection], T]) -> T:
    return _block_on(lambda: _on_connection(settings, work))


def upgrade(settings: Settings, rev: str = "head") -> None:
    _run(settings, lambda conn: command.upgrade(alembic_config(settings, conn), rev))


def downgrade(settings: Settings, rev: str) -> None:
    _run(settings, lambda conn: command.downgrade(alembic_config(settings, conn), rev))


def stamp(settings: Settings, rev: str) -> None:
    _run(settings, lambda conn: command.stamp(alembic_config(settings, conn), rev))


def _current_heads(conn: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


def current(settings: Settings) -> str | None:
    """The database's revision, ``None`` for an empty (unmigrated) database."""
    heads = _run(settings, _current_heads)
    return ", ".join(heads) if heads else None


def history(settings: Settings) -> list[str]:
    """One line per revision, newest first: ``down -> rev (head) (current), message``."""
    now = set(_run(settings, _current_heads))
    return [_history_line(script, now) for script in script_directory().walk_revisions()]


def _history_line(script: Script, current_heads: set[str]) -> str:
    marks = " (head)" if script.is_head else ""
    marks += " (current)" if script.revision in current_heads else ""
    down = script.down_revision or "<base>"
    return f"{down} -> {script.revision}{marks}, {script.doc}"


def revision(settings: Settings, message: str, autogenerate: bool = False) -> str:
    """Write a new revision file (compared with the database when autogenerating); its path."""

    def write(conn: Connection | None) -> str:
        made = command.revision(
            alembic_config(settings, conn), message=message, autogenerate=autogenerate
        )
        scripts = made if isinstance(made, list) else [made]
        return ", ".join(s.path for s in scripts if s is not None)

    if autogenerate:
        return _run(settings, write)
    try:
        return write(None)
    except CommandError as exc:
        raise ScannerError(f"cannot create revision: {exc}") from exc


def schema_diff(settings: Settings, target: MetaData | None = None) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty: in sync)."""
    models = metadata if target is None else target

    def compare(conn: Connection) -> list[Any]:
        options = context_options(conn.dialect.name) | {"target_metadata": models}
        context = MigrationContext.configure(conn, opts=options)
        with quiet_expression_index_warnings():
            return list(compare_metadata(context, models))

    return _run(settings, compare)


# -- start-up ----------------------------------------------------------------------------------


async def ensure_schema(settings: Settings) -> SchemaStatus:
    """Compare the revision with the code's head; upgrade if allowed (docs/design.md, start-up)."""
    status = await _on_connection(settings, lambda conn: _check_and_upgrade(conn, settings))
    if status.upgraded:
        log.info("schema_upgraded", from_revision=status.current, to_revision=status.head)
    else:
        log.info("schema_checked", revision=status.head)
    return status


def _check_and_upgrade(conn: Connection, settings: Settings) -> SchemaStatus:
    script = script_directory()
    head = head_revision()
    heads = _current_heads(conn)
    shown = ", ".join(heads) if heads else None
    if heads == (head,):
        return SchemaStatus(current=head, head=head, upgraded=False)
    unknown = [rev for rev in heads if not _known(script, rev)]
    if unknown:
        raise SchemaUnknown(
            f"the database is at revision {', '.join(unknown)}, which this scanner does not "
            f"know (its newest is {head}): it was migrated by a newer version; run that version "
            "or downgrade the database with it",
            current=shown,
            head=head,
        )
    if not settings.migrate_on_start:
        raise SchemaBehind(
            f"the database is at revision {shown or '<none> (empty database)'}, this scanner "
            f"needs {head}: run `{UPGRADE_COMMAND}` (or enable migrate_on_start)",
            current=shown,
            head=head,
        )
    command.upgrade(alembic_config(settings, conn), "head")
    return SchemaStatus(current=shown, head=head, upgraded=True)


def _known(script: ScriptDirectory, rev: str) -> bool:
    try:
        return script.get_revision(rev) is not None
    except CommandError:
        return False


# -- one-off commands --------------------------------------------------------------------------


def _missing_sqlite_file(settings: Settings) -> Path | None:
    """The file of a SQLite URL that does not exist yet (None: PostgreSQL, memory, present)."""
    from scanner.db.engine import async_url

    url = async_url(settings.database_url.get_secret_value())
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    return None if path.exists() else path


def stored_revision(settings: Settings) -> str | None:
    """The database's revision, read without creating anything: a SQLite file that does not
    exist is an empty database (``None``), left uncreated."""
    if _missing_sqlite_file(settings) is not None:
        return None
    return current(settings)


def require_head(settings: Settings) -> str:
    """For a command that reads the scanner's tables: the schema is at this code's head, else a
    :class:`SchemaError` that says what to run. Creates nothing, migrates nothing."""
    head = head_revision()
    rev = stored_revision(settings)
    if rev == head:
        return head
    shown = redact_url(settings.database_url.get_secret_value())
    if rev is None:
        raise SchemaBehind(
            f"database {shown}: the schema is missing: run `{UPGRADE_COMMAND}`",
            current=None,
            head=head,
        )
    if not _known(script_directory(), rev):
        raise SchemaUnknown(
            f"database {shown}: schema at {rev}, which this scanner does not know (its newest "
            f"is {head}): it was migrated by a newer version",
            current=rev,
            head=head,
        )
    raise SchemaBehind(
        f"database {shown}: schema at {rev}, this scanner needs {head}: run `{UPGRADE_COMMAND}`",
        current=rev,
        head=head,
    )
