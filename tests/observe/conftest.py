from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from scanner.observe.logging import NOISY_LOGGERS


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave structlog, the root logger and the library loggers as the test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    config = structlog.get_config()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.configure(**config)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)
