"""PostgreSQL TLS from libpq's URL parameters, as asyncpg's ``ssl`` argument.

Managed PostgreSQL hands out URLs in libpq's spelling (``?sslmode=require``); asyncpg takes
``ssl=`` (a mode or an :class:`ssl.SSLContext`) and fails on any other keyword. The URL's
``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``sslpassword`` and ``sslcrl`` become
that one argument:

- ``disable``: plaintext; ``allow`` / ``prefer``: TLS tried, plaintext accepted, no check;
- ``require``: TLS, the certificate not checked (checked as ``verify-ca`` when ``sslrootcert``
  names a file, as libpq does); the mode of a URL naming certificate files but no mode;
- ``verify-ca``: the certificate checked against ``sslrootcert`` (else the system's trust
  store); ``verify-full``: that, and the host name.

With no ``sslmode`` asyncpg would try TLS and accept plaintext (``prefer``); in production
(``ENV=production``) a URL without ``sslmode`` requires TLS instead, and one asking for
``allow`` or ``prefer`` is refused: plaintext only when the URL says ``sslmode=disable``.
asyncpg's own ``ssl=<mode>`` (``true``: ``require``) is read the same way. A parameter neither
libpq's TLS nor asyncpg's own is refused with one line naming it.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import URL

from scanner.errors import ConfigError

MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
LIBPQ_TLS = frozenset(("sslmode", "sslpassword", *FILES))
#: What SQLAlchemy's asyncpg dialect takes from a URL's query besides asyncpg's keywords.
#: ``host`` may be given several times: ``?host=db1:5432&host=db2:5432`` (with
#: ``target_session_attrs=read-write``, the one that takes writes).
_DIALECT = frozenset(("prepared_statement_cache_size", "host"))
_ASYNCPG = frozenset(inspect.signature(asyncpg.connect).parameters) - {"dsn", "loop"}
_ASYNCPG_SSL = {"true": "require", "false": "disable"}


def _error(problem: str, key: str = "DATABASE_URL") -> ConfigError:
    return ConfigError(f"database URL: {problem}", key=key)


def split(url: URL, *, production: bool = False) -> tuple[URL, object]:
    """``url`` without libpq's TLS parameters, and asyncpg's ``ssl`` argument for them
    (None: asyncpg's default, which only a non-production URL without ``sslmode`` gets)."""
    for name in url.query:
        if name not in LIBPQ_TLS | _DIALECT | _ASYNCPG:
            raise _error(f"unknown parameter {name!r} (libpq's ssl* and asyncpg's are taken)")
    params = {name: _one(url.query[name], name) for name in LIBPQ_TLS if name in url.query}
    stripped = url.difference_update_query((*LIBPQ_TLS, "ssl"))
    mode = params.get("sslmode")
    if "ssl" in url.query:  # asyncpg's own spelling (SQLAlchemy's documented one): same modes
        if mode is not None:
            raise _error("both ssl and sslmode are given: keep sslmode", key="sslmode")
        given = _one(url.query["ssl"], "ssl")
        mode = _ASYNCPG_SSL.get(given.lower(), given)
    if mode is None:  # certificate files ask for TLS; production asks for it anyway
        if not production and not any(name in params for name in FILES):
            return stripped, None
        mode = "require"
    if mode not in MODES:
        raise _error(f"sslmode {mode!r} is not one of {', '.join(MODES)}", key="sslmode")
    if production and mode in ("allow", "prefer"):
        raise _error(
            f"sslmode={mode} accepts a plaintext connection: in production use require, "
            "verify-ca or verify-full (or sslmode=disable to say plaintext is meant)",
            key="sslmode",
        )
    return stripped, ssl_argument(mode, params)


def _one(value: str | tuple[str, ...], name: str) -> str:
    if isinstance(value, tuple):
        raise _error(f"parameter {name!r} is given more than once")
    return value


def ssl_argument(mode: str, params: dict[str, str]) -> object:
    """asyncpg's ``ssl`` for an ``sslmode`` and the files the URL names."""
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        if any(name in params for name in FILES):
            raise _error(f"sslmode={mode} checks nothing: certificates need require or stronger")
        return mode
    if mode == "require" and "sslrootcert" in params:
        mode = "verify-ca"  # libpq: a root certificate given makes require check the chain
    return _context(mode, params)


def _context(mode: str, params: dict[str, str]) -> ssl.SSLContext:
    checks = mode != "require"
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = mode == "verify-full"
    if not checks:
        context.verify_mode = ssl.CERT_NONE
    root = params.get("sslrootcert")
    if checks and root is not None and root != "system":
        _load(lambda: context.load_verify_locations(cafile=root), "sslrootcert")
    if "sslcrl" in params:
        _load(lambda: context.load_verify_locations(cafile=params["sslcrl"]), "sslcrl")
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if "sslcert" in params or "sslkey" in params:
        cert, key = params.get("sslcert"), params.get("sslkey")
        if cert is None:
            raise _error("sslkey needs sslcert (the client certificate)", key="sslcert")
        password = params.get("sslpassword")
        _load(lambda: context.load_cert_chain(cert, key, password), "sslcert/sslkey")
    return context


def _load(action: Callable[[], object], name: str) -> None:
    try:
        action()
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise _error(f"{name} cannot be loaded: {reason}", key=name) from None
