from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import structlog

from scanner.config import LoggingSettings
from scanner.errors import DatabaseError, RpcTransportError
from scanner.observe.logging import _ScannerHandler, configure_logging
from scanner.secrets import Scrubber, printable, redact_url, secret_fragments

DB_PASSWORD = "hunter2-Sup3rSecret"
API_KEY = "AbCdEf0123456789kEyKeYkEy42"
DB_URL = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/payments"
RPC_URL = f"https://eth-mainnet.g.alchemy.com/v2/{API_KEY}"
SECRETS = [DB_URL, RPC_URL]
# Nothing of these may reach the output, whole or in part.
FORBIDDEN = [DB_PASSWORD, API_KEY, "hunter2", "Sup3rSecret", "kEyKeYkEy"]


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def configure(level: str = "info", fmt: str = "json", stream: io.StringIO | None = None) -> Any:
    out = io.StringIO() if stream is None else stream
    settings = LoggingSettings(level=level, format=fmt)
    configure_logging(settings, secrets=SECRETS, stream=out)
    return out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def log_everywhere() -> None:
    """A secret in a message, fields, exceptions and stdlib records, inside a chain's context."""
    structlog.contextvars.bind_contextvars(chain="eth")
    log = structlog.get_logger("scanner.test")
    log.info(f"connecting to {DB_URL} and {RPC_URL}", rpc=RPC_URL, extra={"dsn": DB_URL})
    log.info("credentials_seen", password=DB_PASSWORD, key=API_KEY, urls=[RPC_URL], n=3)
    try:
        raise RpcTransportError(f"connection refused: {RPC_URL}", chain="eth")
    except RpcTransportError:
        log.exception("rpc_failed")
    logging.getLogger("web3.providers.rpc").warning("request to %s failed", RPC_URL)
    try:
        try:
            raise OSError(f"could not connect to {DB_URL}")
        except OSError as exc:
            raise DatabaseError(f"database {DB_URL} unreachable") from exc
    except DatabaseError:
        logging.getLogger("sqlalchemy.pool").error("pool error for %s", DB_URL, exc_info=True)


def test_no_secret_reaches_json_output() -> None:
    out = configure()
    log_everywhere()
    text = out.getvalue()
    for forbidden in FORBIDDEN:
        assert forbidden not in text
    events = lines(out)
    assert len(events) == 5
    assert all(e["chain"] == "eth" for e in events)
    assert all(e["timestamp"].endswith("Z") for e in events)
    assert "https://eth-mainnet.g.alchemy.com/***" in events[0]["event"]
    assert "postgresql://app:***@db.internal:5432/payments" in events[0]["event"]
    assert events[1]["password"] == "***" and events[1]["key"] == "***"


def test_exceptions_are_rendered_as_dicts() -> None:
    out = configure()
    log_everywhere()
    by_event = {e["event"].split(" ")[0]: e for e in lines(out)}
    failed = by_event["rpc_failed"]
    assert failed["level"] == "error"
    assert failed["exception"][0]["exc_type"] == "RpcTransportError"
    assert failed["exception"][0]["frames"]
    assert "locals" not in failed["exception"][0]["frames"][0]
    pool = by_event["pool"]
    assert pool["logger"] == "sqlalchemy.pool"
    assert [e["exc_type"] for e in pool["exception"]] == ["DatabaseError", "OSError"]


def test_foreign_records_share_the_pipeline() -> None:
    out = configure()
    structlog.contextvars.bind_contextvars(chain="base")
    logging.getLogger("aiohttp.client").warning("slow %s", "response")
    (event,) = lines(out)
    assert event == {
        "event": "slow response",
        "chain": "base",
        "level": "warning",
        "logger": "aiohttp.client",
        "timestamp": event["timestamp"],
    }


def test_levels_and_noisy_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    out = configure(level="info")
    log = structlog.get_logger("scanner.test")
    log.debug("hidden_debug")
    log.info("shown_info")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")
    logging.getLogger("httpx").warning("httpx_warning")
    logging.getLogger("scanner.other").info("stdlib_info")
    assert [e["event"] for e in lines(out)] == ["shown_info", "httpx_warning", "stdlib_info"]

    out = configure(level="debug")  # the scanner's debug; a library's only when named
    log.debug("shown_debug")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")
    logging.getLogger("aiosqlite").debug("executing")
    assert [e["event"] for e in lines(out)] == ["shown_debug"]

    monkeypatch.setenv("SCANNER_DEBUG_LOGGERS", "sqlalchemy.engine")
    out = configure(level="info")
    logging.getLogger("sqlalchemy.engine").debug("SELECT 2")
    logging.getLogger("aiosqlite").debug("executing")
    log.debug("hidden_debug")
    assert [e["event"] for e in lines(out)] == ["SELECT 2"]
    monkeypatch.delenv("SCANNER_DEBUG_LOGGERS")

    out = configure(level="error")
    logging.getLogger("web3").warning("web3_warning")
    log.warning("scanner_warning")
    log.error("scanner_error")
    assert [e["event"] for e in lines(out)] == ["scanner_error"]


def test_reconfiguring_replaces_the_handler() -> None:
    first = configure()
    second = configure()
    structlog.get_logger("scanner.test").info("once")
    assert first.getvalue() == ""
    assert [e["event"] for e in lines(second)] == ["once"]
    root_handlers = logging.getLogger().handlers
    assert sum(isinstance(h, _ScannerHandler) for h in root_handlers) == 1


def test_console_on_a_tty_is_coloured_and_scrubbed() -> None:
    out = configure(fmt="auto", stream=TtyStream())
    log_everywhere()
    text = out.getvalue()
    assert "\x1b[" in text
    assert "rpc_failed" in text and "Traceback" in text and "RpcTransportError" in text
    assert "chain" in text
    for forbidden in FORBIDDEN:
        assert forbidden not in text
    assert not text.lstrip().startswith("{")


def test_console_format_on_a_pipe_has_no_colours() -> None:
    out = configure(fmt="console")
    structlog.get_logger("scanner.test").info("plain", rpc=RPC_URL)
    text = out.getvalue()
    assert "plain" in text and "\x1b[" not in text and API_KEY not in text


def test_auto_format_on_a_pipe_is_json() -> None:
    out = configure(fmt="auto")
    structlog.get_logger("scanner.test").info("piped")
    assert lines(out)[0]["event"] == "piped"


def test_scrubber_survives_urls_urllib_rejects() -> None:
    scrubber = Scrubber(SECRETS)
    assert scrubber.text(f"bad http://host:notaport/x then {API_KEY}") == (
        "bad <redacted url> then ***"
    )


def test_scrubber_walks_structures_and_stringifies_objects() -> None:
    scrubber = Scrubber(SECRETS)
    value = {"a": [RPC_URL, (1, None, True)], 2: ValueError(DB_PASSWORD)}
    assert scrubber.value(value) == {
        "a": ["https://eth-mainnet.g.alchemy.com/***", [1, None, True]],
        "2": "ValueError('***')",
    }


def test_scrubber_survives_objects_that_cannot_print() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert Scrubber().value({"x": Broken()}) == {"x": "<unprintable Broken>"}


def test_secret_fragments() -> None:
    assert set(secret_fragments(DB_URL)) == {DB_PASSWORD}
    assert secret_fragments(RPC_URL) == [API_KEY]
    assert secret_fragments("https://rpc.example/?apikey=s3cr3t&chain=1") == ["s3cr3t"]
    assert secret_fragments("https://rpc.example/v2/short") == []
    assert secret_fragments("not a url") == []
    # a database's name is no key, however long: the logs name the database in use
    long_name = f"postgresql://app:{DB_PASSWORD}@db:5432/payments_production_eu"
    assert set(secret_fragments(long_name)) == {DB_PASSWORD}
    shown = Scrubber([long_name]).text(f"database {long_name}")
    assert shown == "database postgresql://app:***@db:5432/payments_production_eu"


def test_an_amount_beyond_64_bits_is_written_exactly_not_lost() -> None:
    """An 18-decimal token's amounts in base units pass 2**64 at 18.4 tokens: the record (here
    the one alert of a finality violation) is written with the exact numbers."""
    out = configure()
    log = structlog.get_logger("scanner.test")
    log.error("finality_violation", amount_received=80 * 10**18, values=[2**256 - 1], n=3)
    (event,) = lines(out)
    assert event["event"] == "finality_violation"
    assert event["amount_received"] == 80 * 10**18
    assert event["values"] == [2**256 - 1] and event["n"] == 3


HOST_KEY = "9f3c2a71b8e04d5f9A6c1e2b7d8f0a34"
READABLE_HOSTS = [
    "eth-mainnet.g.alchemy.com",
    "mainnet.infura.io",
    "still-wandering-river.quiknode.pro",
    "nd-123-456-789.p2pify.com",
    "ethereum-rpc.publicnode.com",
    "polygon-mainnet-archive.example.com",
    "api-eth-mainnet-1234.example.com",
    "bsc-dataseed1.binance.org",
    "127.0.0.1",
]


def test_a_host_label_that_looks_like_a_key_is_hidden_and_known_hosts_stay_readable() -> None:
    shown = redact_url(f"https://{HOST_KEY}.eth.rpc.rivet.cloud/")
    assert shown == "https://***.eth.rpc.rivet.cloud"
    assert redact_url(f"wss://{HOST_KEY.lower()}.eth.ws.rivet.cloud:443") == (
        "wss://***.eth.ws.rivet.cloud:443"
    )
    uuid_label = "3f2b8c1e-1111-4a3b-9c7d-0123456789ab"
    assert redact_url(f"https://{uuid_label}.example.com") == "https://***.example.com"
    for host in READABLE_HOSTS:
        assert redact_url(f"https://{host}:8545") == f"https://{host}:8545"
    # Printed apart from its URL (a resolver's message), the label is still a secret.
    url = f"https://{HOST_KEY}.eth.rpc.rivet.cloud"
    assert secret_fragments(url) == [HOST_KEY]
    scrubber = Scrubber([url])
    text = f"cannot resolve {HOST_KEY}.eth.rpc.rivet.cloud; {url}/v1: refused"
    assert scrubber.text(text) == (
        "cannot resolve ***.eth.rpc.rivet.cloud; https://***.eth.rpc.rivet.cloud/***: refused"
    )


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    hostile = "\x1b[2J\x1b[Hcheck: ok\r\nfake\u202eabc\x85\x00"
    assert printable(hostile) == ("\\x1b[2J\\x1b[Hcheck: ok\\x0d\\x0afake\\u202eabc\\x85\\x00")
    assert printable("naïve 日本 — ok\tdone") == "naïve 日本 — ok\\x09done"
    assert Scrubber([RPC_URL]).printable(f"\x1b]0;{API_KEY}\x07") == "\\x1b]0;***\\x07"
