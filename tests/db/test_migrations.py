"""Migrations: they agree with the models, go down and up again, and the wrappers work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData

from scanner.config import Settings
from scanner.db import migrate
from scanner.db.models import metadata

ROOT = Path(__file__).resolve().parents[2]
HEAD_FILE = re.compile(r"^\d{8}_[0-9a-f]{12}_[a-z0-9_]+\.py$")


def test_revision_files_are_date_prefixed() -> None:
    files = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert files and all(HEAD_FILE.match(name) for name in files)
    assert migrate.head_revision() in files[-1]


def test_models_and_migrations_agree(settings: Settings) -> None:
    assert migrate.schema_diff(settings) == []


def test_the_comparison_would_notice_a_difference(settings: Settings) -> None:
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["payments"].append_column(Column("not_migrated", Integer))
    diff = migrate.schema_diff(settings, changed)
    assert [(op[0], op[3].name) for op in diff] == [("add_column", "not_migrated")]


def test_upgrade_downgrade_upgrade(settings: Settings) -> None:
    head = migrate.head_revision()
    assert migrate.current(settings) == head
    migrate.downgrade(settings, "base")
    assert migrate.current(settings) is None
    migrate.upgrade(settings)
    assert migrate.current(settings) == head
    assert migrate.schema_diff(settings) == []


def test_stamp_and_history(settings: Settings) -> None:
    head = migrate.head_revision()
    migrate.stamp(settings, "base")
    assert migrate.current(settings) is None
    migrate.stamp(settings, head)
    lines = migrate.history(settings)  # newest first
    assert f" -> {head} (head) (current), " in lines[0]
    assert lines[-1].startswith("<base> -> ")
    assert len(lines) == len(list(migrate.script_directory().walk_revisions()))


def test_downgrade_by_one_and_back(settings: Settings) -> None:
    head = migrate.head_revision()
    previous = migrate.script_directory().get_revision(head).down_revision
    migrate.downgrade(settings, "-1")
    assert migrate.current(settings) == previous
    migrate.upgrade(settings)
    assert migrate.current(settings) == head


def test_downgrade_to_an_unknown_revision_is_a_scanner_error(settings: Settings) -> None:
    with pytest.raises(Exception, match="migration failed") as caught:
        migrate.downgrade(settings, "feedfacecafe")
    assert type(caught.value).__module__ == "scanner.errors"


def test_autogenerate_against_a_migrated_database_writes_an_empty_revision(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    path = Path(migrate.revision(settings, "Nothing to do", autogenerate=True))
    assert path.parent == scripts / "versions"
    assert HEAD_FILE.match(path.name) and path.name.endswith("_nothing_to_do.py")
    body = path.read_text()
    assert "op." not in body.split("def upgrade() -> None:")[1]


def _alembic(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "ENV"))}
    environ |= {"PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plain_alembic_resolves_the_url_as_the_scanner_does(
    empty_db_url: str, settings_for: Callable[..., Settings]
) -> None:
    done = _alembic(["upgrade", "head"], ENV="testing", DATABASE_URL_DEV=empty_db_url)
    assert done.returncode == 0, done.stderr
    assert migrate.current(settings_for(empty_db_url)) == migrate.head_revision()
    done = _alembic(["-x", f"url={empty_db_url}", "current"])
    assert done.returncode == 0, done.stderr
    assert migrate.head_revision() in done.stdout


def test_offline_sql_renders_for_both_dialects(empty_db_url: str) -> None:
    done = _alembic(["-x", f"url={empty_db_url}", "upgrade", "head", "--sql"])
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE payments" in done.stdout
    assert "ix_payments_lookup" in done.stdout
