"""Where the database URL and the environment's switches come from (see :mod:`scanner.config`).

- ``ENV`` is ``development`` (default), ``production`` or ``testing``;
- in production ``DATABASE_URL`` (PostgreSQL) is required;
- otherwise ``DATABASE_URL_DEV``, defaulting to the SQLite file ``./scanner.db``;
- ``[database] url`` in the file is used when the variable is not set: variables win.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from scanner.errors import ConfigError
from scanner.secrets import redact_url

DEFAULT_SQLITE_URL = "sqlite:///./scanner.db"
DEFAULT_SQLITE_SOURCE = "the default ./scanner.db"
__all__ = ["DEFAULT_SQLITE_SOURCE", "DEFAULT_SQLITE_URL"]


def env_bool(environ: Mapping[str, str], name: str) -> bool | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}", key=name)


def resolve_database_url(
    env: str, file_url: SecretStr | None, environ: Mapping[str, str]
) -> tuple[SecretStr, str]:
    """The database URL and where it came from (a variable's name, the file, the default)."""
    from_file = file_url.get_secret_value() if file_url else None
    if env == "production":
        url = environ.get("DATABASE_URL") or from_file
        if not url:
            raise ConfigError(
                "ENV=production requires DATABASE_URL (a postgresql:// URL)", key="DATABASE_URL"
            )
        if not url.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ConfigError(
                f"DATABASE_URL must be PostgreSQL in production, got {redact_url(url)}",
                key="DATABASE_URL",
            )
        return SecretStr(url), "DATABASE_URL" if environ.get("DATABASE_URL") else "[database] url"
    if environ.get("DATABASE_URL_DEV"):
        return SecretStr(environ["DATABASE_URL_DEV"]), "DATABASE_URL_DEV"
    if from_file:
        return SecretStr(from_file), "[database] url"
    return SecretStr(DEFAULT_SQLITE_URL), DEFAULT_SQLITE_SOURCE


def ignored_database_url(env: str, source: str, environ: Mapping[str, str]) -> str | None:
    """Why a DATABASE_URL that is set is not the database in use (None: it is, or is unset)."""
    if env == "production" or not environ.get("DATABASE_URL"):
        return None
    return (
        f"DATABASE_URL is read only when ENV=production (ENV is {env}); the database in use "
        f"comes from {source} (set ENV=production, or DATABASE_URL_DEV for another database)"
    )
