"""The deployment files: example configs, systemd unit, container image, compose, monitoring.

Fast and offline. Checks that need a system tool (systemd-analyze, promtool, docker compose) run
when it is installed and are skipped, with the reason, when it is not. Nothing else skips: a file
of the repository that is missing, or a module of the project (or of the test extras) that does
not import, is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from scanner.config import (
    WEBHOOK_EVENTS,
    ChainSettings,
    ClusterSettings,
    DatabaseSettings,
    FileSettings,
    LoggingSettings,
    MetricsSettings,
    Settings,
    TokenSettings,
    WebhookSettings,
    load_settings,
)
from scanner.observe.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TOML = ROOT / "config/scanner.example.toml"
DEV_TOML = ROOT / "config/scanner.dev.toml"
COMPOSE_TOML = ROOT / "config/scanner.compose.toml"
UNIT = ROOT / "systemd/scanner.service"
TEMPLATE_UNIT = ROOT / "systemd/ctrip-scanner@.service"
ENV_EXAMPLE = ROOT / "systemd/scanner.env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "monitoring/grafana-dashboard.json"
ALERTS = ROOT / "monitoring/prometheus-alerts.yml"

DEFAULT_SHUTDOWN_TIMEOUT = FileSettings().shutdown_timeout
TOOL_TIMEOUT_S = 60

# What the scanner exports (besides the client's process_* metrics and Prometheus' `up`).
METRICS = {
    "scanner_chain_head_block",
    "scanner_last_scanned_block",
    "scanner_lag_blocks",
    "scanner_rpc_requests_total",
    "scanner_rpc_request_duration_seconds",
    "scanner_rpc_retries_total",
    "scanner_logs_processed_total",
    "scanner_transfers_matched_total",
    "scanner_payment_status_changes_total",
    "scanner_reorgs_total",
    "scanner_reorg_depth",
    "scanner_skipped_logs_total",
    "scanner_batch_duration_seconds",
    "scanner_open_payments",
    "scanner_chain_halted",
    "scanner_verification_failed_total",
    "scanner_verification_delayed_total",
    "scanner_logs_missed_total",
    "scanner_finality_violations_total",
    "scanner_webhook_deliveries_total",
    "scanner_webhook_deliveries_failed_total",
    "scanner_webhook_attempt_duration_seconds",
    "scanner_webhook_pending_deliveries",
    "scanner_webhook_oldest_pending_age_seconds",
    "scanner_node_stalls_total",
    "scanner_chain_stalled",
    "scanner_chain_locks_lost_total",
}
HISTOGRAMS = {
    "scanner_rpc_request_duration_seconds",
    "scanner_reorg_depth",
    "scanner_batch_duration_seconds",
    "scanner_webhook_attempt_duration_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


# --- configuration files ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [EXAMPLE_TOML, DEV_TOML, COMPOSE_TOML], ids=lambda p: p.name)
def test_config_file_loads(path: Path) -> None:
    settings = load_settings(str(path), environ={})
    assert settings.chains
    assert settings.config_file == str(path)


def test_example_config_chains() -> None:
    settings = load_settings(str(EXAMPLE_TOML), environ={})
    ethereum = settings.chain("ethereum")
    assert ethereum.chain_id == 1
    assert ethereum.confirmations == 12
    assert ethereum.finality is None
    assert {t.symbol for t in ethereum.tokens} == {"USDT", "USDC"}
    polygon = settings.chain("polygon")
    assert polygon.chain_id == 137
    assert polygon.finality == "finalized"
    assert polygon.confirmations is None


def _keys_mentioned(text: str) -> set[str]:
    """Keys set (`key = ...`) or shown commented out (`# key = ...`) in a TOML file."""
    return set(re.findall(r"^\s*#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))


@pytest.mark.parametrize(
    "model",
    [
        FileSettings,
        DatabaseSettings,
        MetricsSettings,
        LoggingSettings,
        ChainSettings,
        ClusterSettings,
        TokenSettings,
        WebhookSettings,
    ],
    ids=lambda m: m.__name__,
)
def test_example_config_documents_every_key(model: type[BaseModel]) -> None:
    text = EXAMPLE_TOML.read_text(encoding="utf-8")
    tables = {
        "database": "[database]",
        "metrics": "[metrics]",
        "logging": "[logging]",
        "cluster": "[cluster]",
        "chains": "[[chains]]",
        "tokens": "[[chains.tokens]]",
        "webhooks": "[[webhooks]]",
    }
    keys = _keys_mentioned(text)
    for name in model.model_fields:
        if name in tables:
            assert tables[name] in text, f"{tables[name]} missing from {EXAMPLE_TOML.name}"
        else:
            assert name in keys, f"{model.__name__}.{name} missing from {EXAMPLE_TOML.name}"


def test_example_config_uses_the_defaults_it_shows() -> None:
    """Values set in the example for database/metrics/logging equal the model's defaults."""
    data = tomllib.loads(EXAMPLE_TOML.read_text(encoding="utf-8"))
    for table, model in (
        ("database", DatabaseSettings),
        ("metrics", MetricsSettings),
        ("logging", LoggingSettings),
        ("cluster", ClusterSettings),
    ):
        defaults = model().model_dump()
        for key, value in data[table].items():
            assert value == defaults[key], f"[{table}] {key} = {value!r}, default {defaults[key]!r}"
    assert data["shutdown_timeout"] == DEFAULT_SHUTDOWN_TIMEOUT


def test_example_config_shows_every_event_type_as_the_webhooks_default() -> None:
    """The commented ``events`` line is the default: every type the outbox holds, each one
    deliverable (``transfer_unmatched`` and ``verification_failed`` included)."""
    (line,) = re.findall(r"^# events = (\[.*\])", EXAMPLE_TOML.read_text("utf-8"), re.MULTILINE)
    shown = tomllib.loads(f"events = {line.split('#')[0]}")["events"]
    assert shown == list(WEBHOOK_EVENTS) == WebhookSettings(url="http://h/", secret="s").events


def test_dev_config_is_the_local_anvil() -> None:
    settings = load_settings(str(DEV_TOML), environ={})
    (chain,) = settings.chains
    assert (chain.name, chain.chain_id, chain.confirmations) == ("anvil", 31337, 3)
    assert chain.poll_interval == 1
    assert [u.get_secret_value() for u in chain.rpc_urls] == ["http://127.0.0.1:8545"]
    (token,) = chain.tokens
    assert token.address == "0x5fbdb2315678afecb367f032d93f642f64180aa3"
    assert token.decimals == 6


def test_compose_config_matches_dev_config_but_for_the_rpc_host() -> None:
    dev = load_settings(str(DEV_TOML), environ={}).chains
    compose = load_settings(str(COMPOSE_TOML), environ={}).chains
    assert [c.model_dump(exclude={"rpc_urls"}) for c in compose] == [
        c.model_dump(exclude={"rpc_urls"}) for c in dev
    ]
    assert [u.get_secret_value() for u in compose[0].rpc_urls] == ["http://anvil:8545"]


# --- systemd -------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values in order]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _seconds(value: str) -> float:
    """A systemd or compose duration ("45", "45s", "1min 30s", "1m30s") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def _one(unit: dict[str, dict[str, list[str]]], key: str) -> str:
    values = unit["Service"].get(key)
    assert values, f"[Service] {key}= missing"
    return values[-1]


# Directives the unit must have, with their values (checked as the last value set).
_UNIT_DIRECTIVES = """
    Type=notify NotifyAccess=main Restart=on-failure EnvironmentFile=/etc/scanner/scanner.env
    StateDirectory=scanner User=scanner Group=scanner NoNewPrivileges=yes ProtectSystem=strict
    ProtectHome=yes PrivateTmp=yes PrivateDevices=yes ProtectKernelTunables=yes
    ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes ProtectClock=yes
    ProtectHostname=yes RestrictNamespaces=yes LockPersonality=yes MemoryDenyWriteExecute=yes
    RestrictRealtime=yes RestrictSUIDSGID=yes SystemCallArchitectures=native
    SystemCallFilter=@system-service CapabilityBoundingSet= UMask=0077 LimitNOFILE=16384
"""
UNIT_DIRECTIVES = _UNIT_DIRECTIVES.split()


@pytest.mark.parametrize("directive", UNIT_DIRECTIVES)
def test_unit_directive(unit: dict[str, dict[str, list[str]]], directive: str) -> None:
    key, _, value = directive.partition("=")
    assert _one(unit, key) == value


def test_unit_exec_start(unit: dict[str, dict[str, list[str]]]) -> None:
    argv = shlex.split(_one(unit, "ExecStart"))
    assert argv == ["/opt/scanner/venv/bin/scanner", "run", "--config", "/etc/scanner/scanner.toml"]


def test_unit_restart_policy(unit: dict[str, dict[str, list[str]]]) -> None:
    assert {"2", "3"} <= set(_one(unit, "RestartPreventExitStatus").split())
    assert _seconds(_one(unit, "RestartSec")) == 5
    assert _seconds(_one(unit, "WatchdogSec")) == 60


def test_unit_stop_timeout_exceeds_shutdown_timeout(unit: dict[str, dict[str, list[str]]]) -> None:
    example = load_settings(str(EXAMPLE_TOML), environ={})
    assert _seconds(_one(unit, "TimeoutStopSec")) > example.shutdown_timeout
    assert _seconds(_one(unit, "TimeoutStopSec")) > DEFAULT_SHUTDOWN_TIMEOUT


def test_unit_network_and_state(unit: dict[str, dict[str, list[str]]]) -> None:
    assert set(_one(unit, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    environment = dict(v.partition("=")[::2] for v in unit["Service"]["Environment"])
    assert environment["DATABASE_URL_DEV"] == "sqlite:////var/lib/scanner/scanner.db"
    assert "network-online.target" in unit["Unit"]["After"][0].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_template_unit_is_the_unit_with_a_metrics_port_per_instance(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    """``ctrip-scanner@PORT.service``: several instances on one host, each on its own port."""
    template = parse_unit(TEMPLATE_UNIT.read_text(encoding="utf-8"))
    environment = dict(v.partition("=")[::2] for v in template["Service"]["Environment"])
    assert environment["SCANNER_METRICS_ADDR"] == "127.0.0.1:%i"
    assert "DATABASE_URL_DEV" not in environment  # PostgreSQL only: SQLite runs one process
    for directive in [*UNIT_DIRECTIVES, "ExecStart=", "TimeoutStopSec=", "WatchdogSec="]:
        key = directive.partition("=")[0]
        assert _one(template, key) == _one(unit, key), key


@pytest.mark.parametrize(
    ("source", "name"), [(UNIT, "scanner.service"), (TEMPLATE_UNIT, "ctrip-scanner@9465.service")]
)
def test_systemd_analyze_verify(tmp_path: Path, source: Path, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart's binary exists; point it at one that does.
    text = source.read_text(encoding="utf-8").replace(
        "ExecStart=/opt/scanner/venv/bin/scanner ", f"ExecStart={sys.executable} "
    )
    copy = tmp_path / name
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    complaints = [line for line in result.stderr.splitlines() if "scanner" in line]
    assert result.returncode == 0 and not complaints, result.stderr


def _env_file(path: Path) -> dict[str, str]:
    """An environment file (systemd's EnvironmentFile, compose's ``env_file``): KEY=value lines,
    # comments."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line}"
            env[key.strip()] = value.strip()
    return env


def test_env_example_is_a_production_environment() -> None:
    env = _env_file(ENV_EXAMPLE)
    assert env["ENV"] == "production"
    assert env["DATABASE_URL"] == "postgresql://scanner:CHANGE_ME@db/payments?sslmode=verify-full"
    settings = load_settings(str(EXAMPLE_TOML), environ=env)
    assert settings.env == "production"
    assert settings.migrate_on_start is False
    assert settings.database_url.get_secret_value() == env["DATABASE_URL"]
    assert settings.logging.level == env["SCANNER_LOG_LEVEL"]
    assert settings.logging.format == env["SCANNER_LOG_FORMAT"]


# --- container image -------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line:
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _final_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (instruction, _) in enumerate(dockerfile) if instruction == "FROM"]
    return dockerfile[starts[-1] :]


def _image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in stage:
        if instruction == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_is_multi_stage_on_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    bases = [args.split()[0] for instruction, args in dockerfile if instruction == "FROM"]
    assert len(bases) >= 2
    assert all(base == "python:3.11-slim" for base in bases)
    copies = [args for instruction, args in _final_stage(dockerfile) if instruction == "COPY"]
    assert any(args.startswith("--from=builder") and "/opt/venv" in args for args in copies)


def test_dockerfile_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for instruction, args in _final_stage(dockerfile) if instruction == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_runtime_settings(dockerfile: list[tuple[str, str]]) -> None:
    stage = _final_stage(dockerfile)
    env = _image_env(stage)
    assert env["SCANNER_METRICS_ADDR"] == "0.0.0.0:9464"
    assert env["SCANNER_CONFIG"] == "/etc/scanner/scanner.toml"
    assert "/opt/venv/bin" in env["PATH"].split(":")
    instructions = dict(stage)
    assert "9464" in instructions["EXPOSE"].split()
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert instructions["WORKDIR"] == "/app"
    command = json.loads(instructions.get("ENTRYPOINT", "[]")) + json.loads(instructions["CMD"])
    assert command == ["scanner", "run"]


def _healthcheck_command(dockerfile: list[tuple[str, str]]) -> list[str]:
    stage = _final_stage(dockerfile)
    (args,) = [args for instruction, args in stage if instruction == "HEALTHCHECK"]
    _, _, exec_form = args.partition("CMD ")
    command: list[str] = json.loads(exec_form)
    return command


def test_dockerfile_healthcheck_uses_healthz(dockerfile: list[tuple[str, str]]) -> None:
    command = _healthcheck_command(dockerfile)
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_works(
    dockerfile: list[tuple[str, str]],
    health_server: ThreadingHTTPServer,
    status: int,
    healthy: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Health, "status", status)
    command = _healthcheck_command(dockerfile)
    port = health_server.server_address[1]
    env = {**os.environ, "SCANNER_METRICS_ADDR": f"0.0.0.0:{port}"}
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env=env,
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert (result.returncode == 0) == healthy, result.stderr


def _dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        bare = pattern.removeprefix("**/")
        if (
            fnmatch(path, pattern)
            or fnmatch(Path(path).name, bare)
            or path.startswith(pattern + "/")
        ):
            ignored = not negate
    return ignored


def test_dockerignore_excludes_local_state() -> None:
    patterns = _dockerignore()
    local = ".git .venv node_modules devchain/node_modules scanner.db data/payments.db"
    for path in local.split():
        assert _ignored(path, patterns), f"{path} is sent to the build context"


def test_dockerfile_copies_only_what_the_context_has(dockerfile: list[tuple[str, str]]) -> None:
    """Every COPY source exists and is not excluded by .dockerignore."""
    patterns = _dockerignore()
    for instruction, args in dockerfile:
        if instruction != "COPY" or "--from=" in args:
            continue
        *sources, _ = [a for a in shlex.split(args) if not a.startswith("--")]
        for source in sources:
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def test_the_image_installs_pinned_versions_of_every_runtime_dependency(
    dockerfile: list[tuple[str, str]],
) -> None:
    """constraints.txt (made by .ci/lock) pins each of pyproject's dependencies, and the image
    installs with it: a dependency added without running `make lock` fails here."""
    pins = {
        re.split(r"==", line)[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in wanted["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None and name.group(0).lower().replace("_", "-") in pins, requirement
    installs = [
        args
        for instruction, args in dockerfile
        if instruction == "RUN" and "pip install -r" in args
    ]
    assert installs and all("-c constraints.txt" in args for args in installs)


# --- docker compose --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    """What a service's process gets: its env files, then its ``environment``."""
    files = service.get("env_file", [])
    environment: dict[str, str] = {}
    for path in [files] if isinstance(files, str) else files:
        environment |= _env_file(ROOT / path)
    return environment | {k: str(v) for k, v in service.get("environment", {}).items()}


def _compose_settings(
    compose: dict[str, Any], service: str = "scanner"
) -> tuple[Settings, dict[str, str]]:
    scanner = compose["services"][service]
    environment = _service_env(scanner)
    mounts = [v.split(":") for v in scanner["volumes"]]
    (host_path,) = [m[0] for m in mounts if m[1] == environment["SCANNER_CONFIG"]]
    config = (ROOT / host_path).resolve()
    assert config.is_file(), f"{host_path} does not exist"
    return load_settings(str(config), environ=environment), environment


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "anvil", "migrate", "scanner"}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert _service_env(postgres)["POSTGRES_PASSWORD"]
    anvil = services["anvil"]
    assert anvil["image"] == "node:20-slim"
    command = " ".join(anvil["command"])
    for part in ["@foundry-rs/anvil@1.7.1", "--host 0.0.0.0", "--block-time 1", "--chain-id 31337"]:
        assert part in command
    assert "healthcheck" in anvil


def test_compose_secrets_come_from_env_files(compose: dict[str, Any]) -> None:
    """No password in docker-compose.yml itself; the env files stay out of the image."""
    patterns = _dockerignore()
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            assert "PASSWORD" not in key and "DATABASE_URL" not in key, f"{name}: {key}"
            assert urlsplit(str(value)).password is None, f"{name}: {key}"
        files = service.get("env_file", [])
        for path in [files] if isinstance(files, str) else files:
            assert _ignored(path, patterns), f"{path} would be sent to the build context"
    password = _service_env(compose["services"]["postgres"])["POSTGRES_PASSWORD"]
    assert password not in COMPOSE.read_text(encoding="utf-8")


def test_compose_migrate_runs_before_the_scanner(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate, scanner = services["migrate"], services["scanner"]
    assert migrate["image"] == scanner["image"]
    assert migrate["command"] == ["migrate", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert scanner["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert str(migrate.get("restart", "no")) == "no"
    migrate_settings, migrate_env = _compose_settings(compose, "migrate")
    _, scanner_env = _compose_settings(compose, "scanner")
    assert migrate_env["DATABASE_URL"] == scanner_env["DATABASE_URL"]
    assert migrate_settings.env == "production"


def test_compose_scanner(compose: dict[str, Any]) -> None:
    scanner = compose["services"]["scanner"]
    assert scanner["build"] == "."
    for dependency in ("postgres", "anvil"):
        assert scanner["depends_on"][dependency]["condition"] == "service_healthy"
    assert any(str(p).endswith("9464:9464") for p in scanner["ports"])
    settings, environment = _compose_settings(compose)
    assert settings.env == "production"
    assert settings.migrate_on_start is False  # the migrate service did it
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", 9464)
    assert urlsplit(environment["DATABASE_URL"]).hostname == "postgres"
    for chain in settings.chains:
        for url in chain.rpc_urls:
            assert urlsplit(url.get_secret_value()).hostname in compose["services"]
    assert _seconds(scanner["stop_grace_period"]) > settings.shutdown_timeout
    assert _seconds(scanner["stop_grace_period"]) > DEFAULT_SHUTDOWN_TIMEOUT


def _compose_tool() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"],
            capture_output=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates() -> None:
    tool = _compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    result = subprocess.run(
        [*tool, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- monitoring ------------------------------------------------------------------------------

_KEYWORDS = "by without on ignoring group_left group_right and or unless bool offset inf nan"
_PROMQL_KEYWORDS = set(_KEYWORDS.split())


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables outside strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue  # a function or a keyword
        names.add(word)
    return names


def _known_metric(name: str) -> bool:
    if name in METRICS or name == "up" or name.startswith("process_"):
        return True
    return any(
        name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS
        for suffix in HISTOGRAM_SUFFIXES
    )


def test_promql_metric_names_helper() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (chain, le) (rate(scanner_batch_duration_seconds_bucket"
        '{job=~"$job", chain=~"$chain"}[$__rate_interval]))) > 1e3 and on (chain) '
        "scanner_lag_blocks offset 10m"
    )
    assert promql_metric_names(expr) == {
        "scanner_batch_duration_seconds_bucket",
        "scanner_lag_blocks",
    }
    assert not _known_metric("scanner_made_up_total")


def _exported_metric_names() -> set[str]:
    """Every sample name scanner.observe.metrics exposes (counters with _total, ...)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
    }
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def test_the_metrics_list_matches_the_code() -> None:
    exported = _exported_metric_names()
    for name in METRICS:
        assert name in exported or f"{name}_bucket" in exported, name


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [p for p in panels if p["type"] != "row"]


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p["targets"]]


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["chain"]["type"] == "query"
    assert "label_values(" in variables["chain"]["query"]["query"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_uses_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    for expr in _dashboard_exprs(dashboard):
        unknown = {n for n in promql_metric_names(expr) if not _known_metric(n)}
        assert not unknown, f"{expr}: {unknown}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.match(r"label_values\((\w+)", variable["query"]["query"])
            assert match and _known_metric(match.group(1)), variable["name"]


def test_dashboard_shows_every_scanner_metric(dashboard: dict[str, Any]) -> None:
    used = set().union(*(promql_metric_names(e) for e in _dashboard_exprs(dashboard)))
    for suffix in HISTOGRAM_SUFFIXES:
        used |= {n.removesuffix(suffix) for n in used if n.endswith(suffix)}
    assert used >= METRICS, METRICS - used
    assert 'chain=~"$chain"' in " ".join(_dashboard_exprs(dashboard))


def test_dashboard_metrics_are_exported(dashboard: dict[str, Any]) -> None:
    exported = _exported_metric_names() | {"up"}
    for expr in _dashboard_exprs(dashboard):
        assert promql_metric_names(expr) <= exported, expr


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    return promtool


def _run_promtool(*args: str) -> None:
    result = subprocess.run(
        [_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each panel query (Grafana's variables replaced by values)."""
    _promtool()
    substitutions = {
        "$__rate_interval": "5m",
        "$__range": "1h",
        "$__interval": "1m",
        "$chain": ".*",
        "$job": ".*",
    }
    rules = []
    for n, expr in enumerate(_dashboard_exprs(dashboard)):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.json"  # JSON is YAML: no PyYAML needed
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run_promtool("check", "rules", str(path))


@pytest.fixture(scope="module")
def alert_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return groups


def test_alert_rules_structure(alert_groups: list[dict[str, Any]]) -> None:
    rules = [rule for group in alert_groups for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    required = "ScannerDown ChainStalled ChainLagHigh DeepReorg RpcErrorRate ChainHalted"
    assert set(names) >= {*required.split(), "FinalityViolation"}
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        unknown = {n for n in promql_metric_names(rule["expr"]) if not _known_metric(n)}
        assert not unknown, f"{rule['alert']}: {unknown}"


def test_alert_metrics_are_exported(alert_groups: list[dict[str, Any]]) -> None:
    exported = _exported_metric_names() | {"up"}
    for rule in (rule for group in alert_groups for rule in group["rules"]):
        assert promql_metric_names(rule["expr"]) <= exported, rule["alert"]


def test_alert_rules_promtool_check() -> None:
    _run_promtool("check", "rules", str(ALERTS))


_ETH = 'job="scanner", instance="s:9464", chain="eth"'
# a second chain, halted: its cursor stops too, but ChainHalted covers it, not ChainStalled
_BSC = 'job="scanner", instance="s:9464", chain="bsc"'
_ALERT_TEST_SERIES = {
    'up{job="scanner", instance="s:9464"}': "1 1 0 0 0 0 0",
    f"scanner_chain_halted{{{_ETH}}}": "0x30",
    f"scanner_chain_halted{{{_BSC}}}": "0 0 1x30",
    # the cursor stops at 103 while the head goes on
    f"scanner_last_scanned_block{{{_ETH}}}": "100 101 102 103x30",
    f"scanner_chain_head_block{{{_ETH}}}": "110+1x30",
    f"scanner_last_scanned_block{{{_BSC}}}": "100x30",
    f"scanner_chain_head_block{{{_BSC}}}": "110+1x30",
    f"scanner_lag_blocks{{{_ETH}}}": "10 200x10",
    f"scanner_lag_blocks{{{_BSC}}}": "50x10",
    # a third of the requests fail
    f'scanner_rpc_requests_total{{{_ETH}, method="eth_getLogs", outcome="ok"}}': "0+60x20",
    f'scanner_rpc_requests_total{{{_ETH}, method="eth_getLogs", outcome="error"}}': "0+30x20",
    # 5% on the other chain: no alert
    f'scanner_rpc_requests_total{{{_BSC}, method="eth_getLogs", outcome="ok"}}': "0+95x20",
    f'scanner_rpc_requests_total{{{_BSC}, method="eth_getLogs", outcome="error"}}': "0+5x20",
    # one reorg of depth <= 6 at 2m, one deeper at 3m
    f'scanner_reorg_depth_bucket{{{_ETH}, le="6.0"}}': "0 0 1 1 1",
    f'scanner_reorg_depth_bucket{{{_ETH}, le="+Inf"}}': "0 0 1 2 2",
    f"scanner_reorg_depth_count{{{_ETH}}}": "0 0 1 2 2",
    f"scanner_finality_violations_total{{{_ETH}}}": "0 0 0 1 1",
    f"scanner_verification_failed_total{{{_ETH}}}": "0 0 0 1 1",
    f"scanner_logs_missed_total{{{_ETH}}}": "0 0 0 1 1",
    # endpoint 0 falls behind (over 15 minutes old from 3m on); endpoint 1 stays current
    'scanner_webhook_oldest_pending_age_seconds{job="scanner", instance="s:9464", endpoint="0"}': (
        "0 600+300x20"
    ),
    'scanner_webhook_oldest_pending_age_seconds{job="scanner", instance="s:9464", endpoint="1"}': (
        "0x20"
    ),
    'scanner_webhook_deliveries_failed_total{job="scanner", instance="s:9464", endpoint="0"}': (
        "0 0 0 1 1"
    ),
}
_CHAIN = {"job": "scanner", "instance": "s:9464", "chain": "eth"}
# (minute, alert, labels of the expected alert or None for no alert)
_ALERT_EXPECTATIONS: list[tuple[int, str, dict[str, str] | None]] = [
    (3, "ScannerDown", None),
    (5, "ScannerDown", {"job": "scanner", "instance": "s:9464", "severity": "critical"}),
    (1, "ChainHalted", None),
    (3, "ChainHalted", {**_CHAIN, "chain": "bsc", "severity": "critical"}),
    (14, "ChainStalled", None),  # 10 minutes without progress from 3m, held for 2
    (16, "ChainStalled", {**_CHAIN, "severity": "critical"}),
    (5, "ChainLagHigh", None),
    (7, "ChainLagHigh", {**_CHAIN, "severity": "warning"}),
    (2, "DeepReorg", None),
    (4, "DeepReorg", {**_CHAIN, "severity": "warning"}),
    (8, "RpcErrorRate", {**_CHAIN, "severity": "warning"}),
    (2, "FinalityViolation", None),
    (4, "FinalityViolation", {**_CHAIN, "severity": "critical"}),
    (2, "VerificationFailed", None),
    (4, "VerificationFailed", {**_CHAIN, "severity": "critical"}),
    (2, "LogsMissed", None),
    (4, "LogsMissed", {**_CHAIN, "severity": "warning"}),
    (7, "WebhookBacklog", None),  # over 15 minutes old from 3m, held for 5
    (8, "WebhookBacklog", {"job": "scanner", "endpoint": "0", "severity": "warning"}),
    (2, "WebhookDeliveriesFailed", None),
    (4, "WebhookDeliveriesFailed", {"job": "scanner", "endpoint": "0", "severity": "warning"}),
]


def test_alert_rules_fire(alert_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    """promtool test rules: each alert fires on the situation it describes, and not before."""
    _promtool()
    groups = [
        {
            **group,
            "rules": [
                {k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]
            ],
        }
        for group in alert_groups
    ]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"groups": groups}))
    cases = [
        {
            "eval_time": f"{minute}m",
            "alertname": name,
            "exp_alerts": [] if labels is None else [{"exp_labels": labels}],
        }
        for minute, name, labels in _ALERT_EXPECTATIONS
    ]
    spec = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in _ALERT_TEST_SERIES.items()],
                "alert_rule_test": cases,
            }
        ],
    }
    test_file = tmp_path / "rules-test.json"
    test_file.write_text(json.dumps(spec))
    _run_promtool("test", "rules", str(test_file))
