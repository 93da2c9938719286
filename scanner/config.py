"""Typed settings: a TOML file for chains and tokens, the environment for secrets and deployment.

Built once, in the CLI, by :func:`load_settings`, and passed down. Nothing here reads the
environment at import time.

Database URL resolution keeps the gateway's variables:
- ``ENV`` is ``development`` (default), ``production`` or ``testing``;
- in production ``DATABASE_URL`` (PostgreSQL) is required;
- otherwise ``DATABASE_URL_DEV``, defaulting to the SQLite file ``./scanner.db``;
- ``[database] url`` in the file is used when the variable is not set: variables win.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from scanner.config_sources import (
    DEFAULT_SQLITE_SOURCE,
    env_bool,
    ignored_database_url,
    resolve_database_url,
)
from scanner.config_types import (
    CHAIN_NAME,
    RpcUrl,
    Strict,
    WrittenAddress,
    check_url,
    check_ws_url,
    config_error,
)
from scanner.core.kinds import ChainKind, kind_of
from scanner.errors import ConfigError


class TokenSettings(Strict):
    symbol: str = Field(min_length=1, max_length=32)
    address: WrittenAddress  # as the chain's users write it (checked by the chain's kind)
    decimals: int = Field(ge=0, le=77)


class ChainSettings(Strict):
    name: str
    kind: Literal["evm", "tron"] = "evm"
    chain_id: int = Field(gt=0)
    rpc_urls: list[RpcUrl] = Field(min_length=1)
    ws_url: Annotated[RpcUrl, AfterValidator(check_ws_url)] | None = None  # newHeads wakes ticks
    verify_urls: list[RpcUrl] = Field(default_factory=list)  # a second provider's word
    sweep: bool = True  # logs of final ranges read again, for logs a node left out
    sweep_blocks: int = Field(default=16, ge=1)  # final blocks gathered before a sweep reads
    confirmations: int | None = Field(default=None, ge=1)
    finality: Literal["finalized", "safe"] | None = None
    poll_interval: float = Field(default=3.0, gt=0)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    start_block: int | None = Field(default=None, ge=0)
    max_reorg_depth: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    grace_seconds: int = Field(default=300, ge=0)
    catch_up_max_blocks: int = Field(default=100_000, ge=1)
    filter_recipients_max: int = Field(default=1_000, ge=0, le=100_000)
    max_lag_blocks: int = Field(default=50, ge=0)
    rpc_timeout: float = Field(default=15.0, gt=0)  # one whole attempt
    rpc_max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    rpc_max_attempts: int = Field(default=6, ge=1)
    rpc_max_rps: float | None = Field(default=None, gt=0)  # per URL (scanner.chain.budget)
    rpc_headers: dict[str, dict[str, SecretStr]] = Field(default_factory=dict)  # by URL
    stall_after: float | None = Field(default=None, gt=0)
    native_symbol: str = "ETH"
    native_decimals: int = Field(default=18, ge=0, le=77)
    tokens: list[TokenSettings] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CHAIN_NAME.match(value):
            raise ValueError("use lower-case letters, digits, '-' and '_' (at most 32)")
        return value

    @field_validator("rpc_urls", "verify_urls")
    @classmethod
    def _urls(cls, value: list[RpcUrl]) -> list[RpcUrl]:
        for url in value:
            check_url(url, "RPC URL")
        return value

    @model_validator(mode="before")
    @classmethod
    def _kind_default(cls, data: Any) -> Any:
        """The kind's default finality when neither rule is set (TRON: the solidified block)."""
        if isinstance(data, dict) and data.get("kind") in ("evm", "tron"):
            default = kind_of(data["kind"]).default_finality
            if default and data.get("confirmations") is None and data.get("finality") is None:
                data = {**data, "finality": default}
        return data

    @model_validator(mode="after")
    def _finality(self) -> ChainSettings:
        if self.finality in self.kind_rules.refused_tags:
            raise ValueError(
                f"finality {self.finality!r} is not answered by a {self.kind} node: use"
                " 'finalized' or 'confirmations'"
            )
        if (self.confirmations is None) == (self.finality is None):
            raise ValueError("set exactly one of 'confirmations' or 'finality'")
        if (
            self.max_reorg_depth is not None
            and self.confirmations is not None
            and self.max_reorg_depth < self.confirmations
        ):
            raise ValueError("max_reorg_depth must be at least 'confirmations'")
        seen: set[str] = set()
        for token in self.tokens:
            key = self.kind_rules.parse_address(token.address)
            if key in seen:
                raise ValueError(f"token {token.address} is listed twice")
            seen.add(key)
        return self

    @model_validator(mode="after")
    def _headers(self) -> ChainSettings:
        urls = {u.get_secret_value() for u in self.rpc_urls + self.verify_urls}
        for n, url in enumerate(self.rpc_headers):
            if url not in urls:
                raise ValueError(f"rpc_headers[{n}]: not one of rpc_urls or verify_urls")
        return self

    def headers(self) -> dict[str, dict[str, str]]:
        """``rpc_headers`` as plain strings, by URL (what the RPC client sends)."""
        return {
            url: {name: value.get_secret_value() for name, value in fields.items()}
            for url, fields in self.rpc_headers.items()
        }

    @property
    def kind_rules(self) -> ChainKind:
        """What the chain's kind changes (:mod:`scanner.core.kinds`)."""
        return kind_of(self.kind)

    @property
    def reorg_depth(self) -> int:
        """How far back reorgs are followed (and how many block hashes are kept)."""
        if self.max_reorg_depth is not None:
            return self.max_reorg_depth
        return max(64, self.confirmations or 0) if self.confirmations else 128


class DatabaseSettings(Strict):
    url: SecretStr | None = None
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout: float = Field(default=30.0, gt=0)
    pool_pre_ping: bool = True
    echo: bool = False


class MetricsSettings(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    # Connections open at once (the oldest idle one makes room), and seconds a connection has to
    # send its request header: idle connections cannot use up the process's file descriptors.
    max_connections: int = Field(default=64, ge=1, le=4096)
    header_timeout: float = Field(default=5.0, gt=0, le=300)


class ClusterSettings(Strict):
    """Several instances (PostgreSQL): chain leases last ``lease_seconds`` (docs/operations.md)."""

    lease_seconds: float = Field(default=8.0, ge=2.0, le=600.0)


class LoggingSettings(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


WebhookEvent = Literal[
    "status_changed",
    "transfer_detected",
    "transfer_orphaned",
    "paid_late",
    "confirmed_reverted",
    "invalid_payment",
    "transfer_unmatched",
    "verification_failed",
]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = get_args(WebhookEvent)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WebhookSettings(Strict):
    """One ``[[webhooks]]`` endpoint. ``secret_env`` is resolved into ``secret`` at load time."""

    url: RpcUrl
    secret: SecretStr | None = None
    secret_env: str | None = None
    events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))
    chains: list[str] | None = None
    timeout: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=20, ge=1)
    retry_base: float = Field(default=10.0, gt=0)
    retry_max: float = Field(default=28800.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: RpcUrl) -> RpcUrl:
        return check_url(value, "webhook URL")

    @model_validator(mode="after")
    def _secret(self) -> WebhookSettings:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("set exactly one of 'secret' or 'secret_env'")
        if self.secret is not None and not self.secret.get_secret_value():
            raise ValueError("'secret' must not be empty")
        if self.secret_env is not None and not _ENV_NAME.match(self.secret_env):
            raise ValueError("'secret_env' must name an environment variable")
        if self.retry_max < self.retry_base:
            raise ValueError("retry_max must be at least retry_base")
        return self

    @property
    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret is not None else ""


class FileSettings(Strict):
    """What the TOML file may hold; any other key is an error."""

    migrate_on_start: bool | None = None
    shutdown_timeout: float = Field(default=30.0, gt=0)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    chains: list[ChainSettings] = Field(default_factory=list)
    webhooks: list[WebhookSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_chains(self) -> FileSettings:
        names = [c.name for c in self.chains]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate chain name(s): {', '.join(dupes)}")
        urls = [h.url.get_secret_value() for h in self.webhooks]
        for n, hook in enumerate(self.webhooks):
            if urls.index(urls[n]) != n:
                raise ValueError(
                    f"webhooks[{n}].url: the same URL as webhooks[{urls.index(urls[n])}]"
                )
            unknown = sorted(set(hook.chains or ()) - set(names))
            if unknown:
                raise ValueError(f"webhooks[{n}].chains: unknown chain(s) {', '.join(unknown)}")
        return self


class Settings(Strict):
    """Everything the scanner runs with, resolved from file and environment."""

    env: Literal["development", "production", "testing"]
    database_url: SecretStr
    migrate_on_start: bool
    shutdown_timeout: float
    database: DatabaseSettings
    metrics: MetricsSettings
    logging: LoggingSettings
    chains: list[ChainSettings]
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    config_file: str | None = None
    # Where database_url came from, and why a DATABASE_URL that is set was not taken (if so).
    database_source: str = DEFAULT_SQLITE_SOURCE
    database_url_ignored: str | None = None

    def chain(self, name: str) -> ChainSettings:
        for chain in self.chains:
            if chain.name == name:
                return chain
        known = ", ".join(c.name for c in self.chains) or "none"
        raise ConfigError(f"unknown chain {name!r} (configured: {known})", key="chains")

    def secrets(self) -> list[str]:
        """Every secret string, for scrubbing free text."""
        url = self.database_url.get_secret_value()
        out = [] if url.startswith("sqlite") else [url]  # a file's path is no secret
        for chain in self.chains:
            out.extend(u.get_secret_value() for u in chain.rpc_urls + chain.verify_urls)
            out.extend(u.get_secret_value() for u in [chain.ws_url] if u is not None)
            out.extend(v for h in chain.headers().values() for v in h.values())
        for hook in self.webhooks:
            out += [hook.url.get_secret_value(), hook.secret_value]
        return out


def read_config_file(path: str | None) -> tuple[FileSettings, str | None]:
    if path is None:
        return FileSettings(), None
    file = str(Path(path))
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {file}", file=file) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}", file=file) from exc
    try:
        return FileSettings.model_validate(data), file
    except ValidationError as exc:
        raise config_error(exc, file) from exc


def _resolve_webhooks(
    hooks: list[WebhookSettings], environ: Mapping[str, str], file: str | None, *, needed: bool
) -> list[WebhookSettings]:
    """Each ``secret_env`` read from the environment into ``secret``; a missing one is an error
    where the secrets are ``needed`` (a command that sends no webhook leaves them unread)."""
    out = []
    for n, hook in enumerate(hooks):
        if hook.secret_env is not None and needed:
            value = environ.get(hook.secret_env, "")
            if not value:
                where = f" in {file}" if file else ""
                raise ConfigError(
                    f"webhooks[{n}].secret_env{where}: environment variable "
                    f"{hook.secret_env} is not set",
                    key=f"webhooks[{n}].secret_env",
                    file=file,
                )
            hook = hook.model_copy(update={"secret": SecretStr(value), "secret_env": None})
        out.append(hook)
    return out


def load_settings(
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    webhook_secrets: bool = True,
) -> Settings:
    """Read the config file (``config_path`` or ``SCANNER_CONFIG``) and the environment.

    ``webhook_secrets=False``: a command that sends no webhook does not need (nor read) their
    secrets' environment variables."""
    environ = os.environ if environ is None else environ
    path = config_path or environ.get("SCANNER_CONFIG") or None
    file_settings, file = read_config_file(path)
    env = _env_name(environ)
    try:
        database_url, source = resolve_database_url(env, file_settings.database.url, environ)
        return Settings(
            env=env,
            database_url=database_url,
            database_source=source,
            database_url_ignored=ignored_database_url(env, source, environ),
            migrate_on_start=_migrate_on_start(environ, file_settings, env),
            shutdown_timeout=file_settings.shutdown_timeout,
            database=file_settings.database,
            metrics=_metrics(environ, file_settings.metrics),
            logging=_logging(environ, file_settings.logging),
            chains=file_settings.chains,
            webhooks=_resolve_webhooks(
                file_settings.webhooks, environ, file, needed=webhook_secrets
            ),
            cluster=file_settings.cluster,
            config_file=file,
        )
    except ValidationError as exc:
        raise config_error(exc, "environment") from exc
    except ValueError as exc:
        raise ConfigError(f"invalid environment setting: {exc}", key="environment") from exc


def _env_name(environ: Mapping[str, str]) -> str:
    env = environ.get("ENV", "development").strip().lower() or "development"
    if env not in {"development", "production", "testing"}:
        raise ConfigError(f"ENV must be development, production or testing, not {env!r}", key="ENV")
    return env


def _migrate_on_start(environ: Mapping[str, str], file_settings: FileSettings, env: str) -> bool:
    """The environment over the file; unset in both: migrate unless in production."""
    migrate = env_bool(environ, "SCANNER_MIGRATE_ON_START")
    if migrate is None:
        migrate = file_settings.migrate_on_start
    return env != "production" if migrate is None else migrate


def _logging(environ: Mapping[str, str], logging: LoggingSettings) -> LoggingSettings:
    level = environ.get("SCANNER_LOG_LEVEL") or environ.get("LOG_LEVEL")
    log_format = environ.get("SCANNER_LOG_FORMAT")
    if not (level or log_format):
        return logging
    return LoggingSettings(
        level=(level or logging.level).lower(), format=(log_format or logging.format).lower()
    )


def _metrics(environ: Mapping[str, str], metrics: MetricsSettings) -> MetricsSettings:
    """``SCANNER_METRICS_ADDR`` (``host:port``) over the file's address."""
    addr = environ.get("SCANNER_METRICS_ADDR")
    if not addr:
        return metrics
    host, _, port = addr.rpartition(":")
    return MetricsSettings(enabled=metrics.enabled, host=host or "127.0.0.1", port=int(port))
