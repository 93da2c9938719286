"""structlog everywhere: the scanner's own events and the libraries' standard-library records.

One handler on the root logger writes every record. structlog events travel through the
standard library (``structlog.stdlib.LoggerFactory``) to that handler, whose
``ProcessorFormatter`` gives foreign records (SQLAlchemy, web3, aiohttp, httpx, ...) the same
fields: ISO UTC ``timestamp``, ``level``, ``logger`` and whatever ``bind_contextvars`` bound in
the current task (``chain``). Then, for every record, exceptions are rendered, every string is
scrubbed (:class:`scanner.secrets.Scrubber`), and the line is rendered: JSON when the
stream is not a terminal or ``format = "json"``, coloured console output otherwise.

Tracebacks never include local variables: they may hold secrets in forms no scrubber knows.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import orjson
import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from scanner.config import LoggingSettings
from scanner.secrets import Scrubber

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Chatty below WARNING: kept at WARNING whatever the level, unless named (a prefix of the
# logger's name) in SCANNER_DEBUG_LOGGERS, e.g. ``sqlalchemy.engine,httpx``.
NOISY_LOGGERS = (
    "sqlalchemy",
    "web3",
    "asyncio",
    "aiohttp",
    "httpx",
    "httpcore",
    "aiosqlite",
    "asyncpg",
    "urllib3",
    "alembic",
)


class _ScannerHandler(logging.StreamHandler[TextIO]):
    """The root handler configure_logging installs; its class marks it for replacement."""


def configure_logging(
    settings: LoggingSettings, *, secrets: Sequence[str] = (), stream: TextIO | None = None
) -> None:
    """Route structlog and standard-library logging to ``stream`` (stderr by default).

    May be called again: the previous handler is replaced and structlog reconfigured.
    """
    out = sys.stderr if stream is None else stream
    level = LEVELS[settings.level]
    as_json = settings.format == "json" or (settings.format == "auto" and not _isatty(out))
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        # Not cached, so that a later configure_logging (tests, a reload) reaches every logger.
        cache_logger_on_first_use=False,
    )
    formatter = ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=_output_processors(Scrubber(secrets), as_json=as_json, colors=_isatty(out)),
    )
    wanted = debug_loggers(os.environ)
    _install_handler(out, formatter, level)
    _quiet_noisy_loggers(level, wanted)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _shared_processors() -> list[Processor]:
    """Fields every event gets, whether it came from structlog or from a stdlib logger."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _output_processors(scrubber: Scrubber, *, as_json: bool, colors: bool) -> list[Processor]:
    """Render exceptions to text, scrub everything, then render the line."""
    if as_json:
        exceptions: Processor = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        renderer: Processor = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
    return [ProcessorFormatter.remove_processors_meta, exceptions, scrubber, renderer]


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    default = kwargs.get("default")
    try:
        return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits (an 18-decimal token's amount in base units
        # passes 2**64 at 18.4 tokens): the standard library writes them exactly
        return json.dumps(obj, default=default, separators=(",", ":"), ensure_ascii=False)


def _install_handler(stream: TextIO, formatter: logging.Formatter, level: int) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ScannerHandler)]:
        root.removeHandler(old)
        old.close()  # a StreamHandler never closes its stream
    handler = _ScannerHandler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)


def _quiet_noisy_loggers(level: int, wanted: Sequence[str] = ()) -> None:
    quiet = max(level, logging.WARNING)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    for name in wanted:  # asked for by name: everything they log, debug included
        logging.getLogger(name).setLevel(logging.DEBUG)


def debug_loggers(environ: Mapping[str, str]) -> list[str]:
    """The libraries named in ``SCANNER_DEBUG_LOGGERS`` (comma- or space-separated)."""
    raw = environ.get("SCANNER_DEBUG_LOGGERS", "")
    return [name for name in raw.replace(",", " ").split() if name]
