"""The configuration reference (``docs/configuration.md``), written from the settings model.

``python -m scanner.config_reference > docs/configuration.md`` writes the page; a test fails when
the page and the model disagree, so a key added, renamed or given another default shows up in
the documentation or the build fails. Each key's meaning is written here, once; every key of the
model must have one (:func:`render` raises ``KeyError`` otherwise).
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, MinLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from scanner.config import (
    ChainSettings,
    ClusterSettings,
    DatabaseSettings,
    FileSettings,
    LoggingSettings,
    MetricsSettings,
    TokenSettings,
    WebhookSettings,
)
from scanner.config_sources import DEFAULT_SQLITE_URL

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("top level", FileSettings, "Keys at the top of the file, before any table."),
    (
        "[database]",
        DatabaseSettings,
        "The connection pool, and a URL when the environment sets none.",
    ),
    ("[metrics]", MetricsSettings, "The HTTP server of `/metrics`, `/healthz` and `/readyz`."),
    ("[logging]", LoggingSettings, "Where and how the logs are written (stderr)."),
    ("[cluster]", ClusterSettings, "Several instances on one PostgreSQL database."),
    ("[[chains]]", ChainSettings, "One table per chain; its `name` is its key in the database."),
    ("[[chains.tokens]]", TokenSettings, "The tokens of the chain above it, by contract address."),
    ("[[webhooks]]", WebhookSettings, "One table per endpoint (see [Webhooks](webhooks.md))."),
]
TABLES = {"database", "metrics", "logging", "cluster", "chains", "webhooks", "tokens"}

# key -> (environment variable or "", meaning). Keys are "section.key" ("top level" is "").
MEANING: dict[str, tuple[str, str]] = {
    ".migrate_on_start": (
        "SCANNER_MIGRATE_ON_START",
        "Upgrade a schema that is behind at start. "
        "Unset: true, except with `ENV=production` (then a schema behind the "
        "code exits 3 naming `scanner migrate upgrade`).",
    ),
    ".shutdown_timeout": (
        "",
        "Seconds to finish the batch in flight after SIGTERM/SIGINT. Keep "
        "the supervisor's stop timeout above it.",
    ),
    "database.url": (
        "DATABASE_URL / DATABASE_URL_DEV",
        "Used only when the environment sets no "
        "URL (see *The database URL* below). A secret: prefer the environment.",
    ),
    "database.pool_size": ("", "Connections kept open (PostgreSQL)."),
    "database.max_overflow": ("", "Extra connections allowed above `pool_size` under load."),
    "database.pool_timeout": (
        "",
        "Seconds to wait for a free connection (SQLite: the `busy_timeout`).",
    ),
    "database.pool_pre_ping": (
        "",
        "Test each connection before use, so a dropped one is replaced instead of failing a batch.",
    ),
    "database.echo": ("", "Log every SQL statement (debugging only)."),
    "metrics.enabled": ("", "Serve `/metrics`, `/healthz`, `/readyz`."),
    "metrics.host": (
        "SCANNER_METRICS_ADDR",
        "Listen address; `0.0.0.0` in a container (the image sets it).",
    ),
    "metrics.port": (
        "SCANNER_METRICS_ADDR",
        "Listen port; `0` takes a free one, logged in "
        "`metrics_serving`. Each instance on a host needs its own.",
    ),
    "metrics.max_connections": (
        "",
        "Connections open at once; beyond it the oldest idle one is closed to make room.",
    ),
    "metrics.header_timeout": (
        "",
        "Seconds a connection has to send its request header before it is closed.",
    ),
    "logging.level": (
        "SCANNER_LOG_LEVEL (or LOG_LEVEL)",
        "The scanner's level. Libraries log "
        "warnings only, unless named in `SCANNER_DEBUG_LOGGERS`.",
    ),
    "logging.format": (
        "SCANNER_LOG_FORMAT",
        "`auto`: JSON lines off a terminal, coloured console on one.",
    ),
    "cluster.lease_seconds": (
        "",
        "How long a chain's lease lasts (renewed four times a lease); "
        "a dead or frozen instance's chains move after about this long.",
    ),
    "chains.name": (
        "",
        "The chain's key in the database: lower-case letters, digits, `-`, `_` (at most 32).",
    ),
    "chains.kind": (
        "",
        "`tron`: TRC-20 tokens through java-tron's JSON-RPC "
        "([Chains and providers](providers.md#tron)).",
    ),
    "chains.chain_id": (
        "",
        "EIP-155 chain id, checked against `eth_chainId` (a mismatch halts the chain).",
    ),
    "chains.rpc_urls": (
        "",
        "One or more HTTP(S) endpoints of the chain, in failover order. "
        "Secrets (API keys): shown as `https://host/***`.",
    ),
    "chains.ws_url": (
        "",
        "A `ws://`/`wss://` endpoint of the same chain: `newHeads` wakes the "
        "scan at once; polling goes on beside it.",
    ),
    "chains.verify_urls": (
        "",
        "Another provider's endpoints: a payment is confirmed only once "
        "one of them agrees with each counted transfer.",
    ),
    "chains.sweep": (
        "",
        "Read the Transfer logs of final blocks once more, for logs a provider left out; an"
        " expiry waits until the blocks in its time are read again.",
    ),
    "chains.sweep_blocks": ("", "Final blocks gathered before a sweep reads them."),
    "chains.confirmations": (
        "",
        "Final at N confirmations. Exactly one of `confirmations` and `finality`.",
    ),
    "chains.finality": (
        "",
        "Final at or below the node's `finalized` (or `safe`) block. TRON "
        "defaults to `finalized` when neither is set.",
    ),
    "chains.poll_interval": ("", "Seconds between ticks."),
    "chains.batch_size": (
        "",
        "The largest `eth_getLogs` range (halved on a provider's refusal, grown back later).",
    ),
    "chains.start_block": ("", "Where a chain with no cursor starts. Unset: the node's head."),
    "chains.max_reorg_depth": (
        "",
        "How deep reorgs are followed; deeper halts the chain. Unset: "
        "max(64, confirmations), 128 with `finality`.",
    ),
    "chains.concurrency": ("", "Ranges read ahead while one commits."),
    "chains.grace_seconds": (
        "",
        "Clock skew allowed between the gateway's `created_at` and block times.",
    ),
    "chains.catch_up_max_blocks": (
        "",
        "How far below the cursor the look-back for a payment written behind it may start.",
    ),
    "chains.filter_recipients_max": (
        "",
        "A backfill filters `eth_getLogs` by recipient while "
        "the payments use at most this many addresses (0: never).",
    ),
    "chains.max_lag_blocks": ("", "`/readyz` fails when the chain is further behind its head."),
    "chains.rpc_timeout": (
        "",
        "Seconds for one whole RPC attempt (connect, send, the whole answer).",
    ),
    "chains.rpc_max_response_bytes": (
        "",
        "The largest RPC answer read (a websocket message: "
        "1 MiB). Longer `eth_getLogs`: the range shrinks.",
    ),
    "chains.rpc_max_attempts": (
        "",
        "Attempts of one request, with backoff and failover, before the tick fails.",
    ),
    "chains.rpc_max_rps": (
        "",
        "Requests a second to each RPC URL at most, paced before the provider refuses "
        "(shared by every client of the URL in the process; TronGrid: about 15 a key).",
    ),
    "chains.rpc_headers": (
        "",
        "Headers sent to one URL only, by the URL as listed (a provider key such as "
        "`TRON-PRO-API-KEY`); secrets, never logged.",
    ),
    "chains.stall_after": (
        "",
        "Seconds the head block may be old before its node counts as "
        "stalled. Unset: 30 block times, at least 60 s.",
    ),
    "chains.native_symbol": ("", "The native coin's symbol."),
    "chains.native_decimals": ("", "The native coin's decimals."),
    "chains.tokens": (
        "",
        "The chain's tokens (`[[chains.tokens]]`, below). Empty: the native coin only.",
    ),
    "tokens.symbol": ("", "Shown to people; tokens are matched by address, never by symbol."),
    "tokens.address": (
        "",
        "The contract: `0x…` (any case, stored lower-case); on TRON also "
        "`T…` or `41…` (stored as written).",
    ),
    "tokens.decimals": (
        "",
        "The contract's `decimals()`. Checked: a mismatch halts the token, not the chain.",
    ),
    "webhooks.url": ("", "Where events are POSTed. A secret: shown redacted."),
    "webhooks.secret": (
        "",
        "The signing secret, in the file. Exactly one of `secret` and `secret_env`.",
    ),
    "webhooks.secret_env": (
        "(the variable it names)",
        "The name of the environment variable that holds the signing secret.",
    ),
    "webhooks.events": (
        "",
        "The event types sent (every type of the [event catalogue](gateway.md#event-catalogue)).",
    ),
    "webhooks.chains": ("", "The chains whose events are sent. Unset: all."),
    "webhooks.timeout": ("", "Seconds for a whole attempt, the answer included."),
    "webhooks.max_attempts": ("", "Attempts before a delivery is `failed`."),
    "webhooks.retry_base": ("", "The first retry's delay, doubling each attempt."),
    "webhooks.retry_max": ("", "The longest delay between attempts."),
}

ENVIRONMENT: list[tuple[str, str]] = [
    ("SCANNER_CONFIG", "The config file when `--config` is not given."),
    ("ENV", "`development` (default), `production` or `testing`: decides which URL is read."),
    ("DATABASE_URL", "The PostgreSQL URL; read only when `ENV=production`, and required then."),
    ("DATABASE_URL_DEV", f"The database otherwise; default `{DEFAULT_SQLITE_URL}`."),
    ("SCANNER_MIGRATE_ON_START", "`true`/`false`: overrides `migrate_on_start`."),
    ("SCANNER_LOG_LEVEL", "Overrides `[logging] level` (`LOG_LEVEL` too)."),
    ("SCANNER_LOG_FORMAT", "Overrides `[logging] format`."),
    ("SCANNER_METRICS_ADDR", "`host:port`: overrides `[metrics] host` and `port`."),
    (
        "SCANNER_DEBUG_LOGGERS",
        "Libraries whose debug logs to show, by logger name prefix (`sqlalchemy.engine,httpx`).",
    ),
]


def _type(annotation: Any) -> str:
    """The annotation as a reader writes it in TOML."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin is list:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return "tables"
        return f"list of {_type(inner)}"
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return "URL" if annotation.__name__ == "RpcUrl" else "string (secret)"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    out = []
    for item in field.metadata:
        if isinstance(item, Ge):
            out.append(f"≥ {item.ge}")
        elif isinstance(item, Gt):
            out.append(f"> {item.gt}")
        elif isinstance(item, Le):
            out.append(f"≤ {item.le}")
        elif isinstance(item, MinLen):
            out.append(f"at least {item.min_length}")
    return ", ".join(out)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "—"
    if isinstance(value, list):
        return "`[]`" if not value else "all: " + ", ".join(f"`{v}`" for v in value)
    return f"`{json.dumps(value)}`"


def _section_key(title: str) -> str:
    if title == "top level":
        return ""
    return title.strip("[]").split(".")[-1]


def _rows(title: str, model: type[BaseModel]) -> list[str]:
    section = _section_key(title)
    lines = ["| key | type | default | environment | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if section == "" and name in TABLES:
            continue
        env, meaning = MEANING[f"{section}.{name}"]
        kind = _type(field.annotation)
        bounds = _bounds(field)
        shown_type = f"{kind} ({bounds})" if bounds else kind
        shown_env = f"`{env}`" if env and not env.startswith("(") else env
        lines.append(f"| `{name}` | {shown_type} | {_default(field)} | {shown_env} | {meaning} |")
    return lines


def render() -> str:
    """The whole page, Markdown."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Written by `python -m scanner.config_reference > docs/configuration.md` from the",
        "     settings model (scanner/config.py); tests/test_docs.py fails when they differ. -->",
        "",
        "The scanner reads a TOML file (chains, tokens, webhooks, tuning) and the environment",
        "(the deployment and its secrets). **Precedence: an environment variable wins over the",
        "file, the file over the default.** An unknown key, a wrong type or a value out of range",
        "is exit code 2, one line naming the key and the file. `config/scanner.example.toml`",
        "is every key below with a comment (`config/scanner.dev.toml`: a local anvil setup);",
        "`scanner check` validates a file without scanning.",
        "",
        "## Environment",
        "",
        "| variable | meaning |",
        "|---|---|",
        *(f"| `{name}` | {meaning} |" for name, meaning in ENVIRONMENT),
        "",
    ]
    for title, model, intro in SECTIONS:
        out += [f"## `{title}`" if title != "top level" else "## Top level", "", intro, ""]
        out += _rows(title, model)
        out.append("")
    out += DATABASE_URL_RULES
    return "\n".join(out).rstrip() + "\n"


DATABASE_URL_RULES = [
    "## The database URL",
    "",
    "Which URL is used, first match wins:",
    "",
    "1. `ENV=production`: `DATABASE_URL`, else `[database] url`; it must be PostgreSQL",
    "   (`postgresql://`, `postgres://`, `postgresql+asyncpg://`), and a missing one is exit 2.",
    "2. Otherwise: `DATABASE_URL_DEV`, else `[database] url`, else",
    f"   `{DEFAULT_SQLITE_URL}` (a file in the working directory).",
    "",
    "`DATABASE_URL` outside production is **not read**: every command logs `database_in_use`",
    "(the URL redacted, and where it came from), and a `DATABASE_URL` that is set but not used",
    "is a `database_url_ignored` warning that says why. SQLite URLs are `sqlite:///relative.db`",
    "or `sqlite:////absolute/path.db`; a missing directory is exit 2.",
    "",
    "### TLS (PostgreSQL)",
    "",
    "The URL takes libpq's parameters, as managed PostgreSQL hands them out: `sslmode`",
    "(`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert` (a CA",
    "file; `system` or unset: the system's trust store), `sslcert`, `sslkey`, `sslpassword`,",
    "`sslcrl` (asyncpg's own `ssl=<mode>` means the same). `require` encrypts without checking",
    "the server's certificate (as libpq, it checks the chain when `sslrootcert` names a file);",
    "`verify-full` checks the chain and the host name, and is the one to use across any network",
    "you do not own:",
    "",
    "```sh",
    "DATABASE_URL='postgresql://scanner:...@db.example.com/payments?sslmode=verify-full"
    "&sslrootcert=/etc/scanner/db-ca.pem'",
    "```",
    "",
    "Without `sslmode` the driver tries TLS and accepts plaintext, checking nothing; in",
    "production a URL without `sslmode` requires TLS instead, and `allow` / `prefer` are",
    "refused: plaintext only when the URL says `sslmode=disable`. A server that offers no TLS",
    "to a URL that requires it is one line (`rejected SSL upgrade`, naming `sslmode=disable`);",
    "an unknown parameter, an unknown mode or a certificate file that cannot be read is exit",
    "code 2, one line naming it.",
    "",
    "A replicated PostgreSQL: one address that follows the primary, or every host with",
    "`target_session_attrs=read-write`",
    "([Operations](operations.md#a-replicated-postgresql)).",
]


if __name__ == "__main__":
    print(render(), end="")
