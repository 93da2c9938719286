"""The database edge: SQLAlchemy's and the drivers' errors become one :class:`DatabaseError`.

Everything above :mod:`scanner.db` sees :class:`~scanner.errors.DatabaseError` (exit code 1, a
one-line message naming the redacted URL), never ``sqlalchemy.exc.*``, ``asyncpg.*`` or the
``OSError`` of a refused connection. Three doors, used where the database is reached:

- :class:`Session`, the class of every session :func:`scanner.db.engine.make_session_factory`
  makes: an error that leaves an ``async with sessions() as session:`` block is translated
  there (errors caught inside the block stay untouched);
- :func:`translated`, an async context manager for work on an engine's connection;
- :func:`database_error`, the translation itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.errors import DatabaseError
from scanner.secrets import redact_url, scrub

#: What the database layer can raise: SQLAlchemy's errors (which wrap the driver's), the
#: driver's own where SQLAlchemy lets them through, and the socket's (refused, reset, timeout).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)


def _root(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrappers (``.orig``, then ``__cause__``)."""
    seen = 0
    while seen < 5:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc, seen = inner, seen + 1
    return exc


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of the driver's own error, without SQLAlchemy's decorations."""
    root = _root(exc)
    text = str(root).strip()
    line = text.splitlines()[0] if text else "no message"
    return f"{type(root).__name__}: {line}"[:300]


def database_error(
    exc: BaseException, url: str | None = None, secrets: Sequence[str] = ()
) -> DatabaseError:
    """One ``DatabaseError`` for ``exc``: ``database <redacted url>: <Type>: <first line>``."""
    where = f"database {redact_url(url)}" if url else "database"
    return DatabaseError(f"{where}: {scrub(_first_line(exc), list(secrets))}{_hint(exc)}")


def _hint(exc: BaseException) -> str:
    """What to do about an error whose driver's words do not say it."""
    if "rejected SSL upgrade" in str(_root(exc)):
        return (
            " (the server offers no TLS and the URL requires it: sslmode=require or stronger,"
            " or no sslmode in production; sslmode=disable accepts a plaintext connection)"
        )
    return ""


@asynccontextmanager
async def translated(url: str | None = None, secrets: Sequence[str] = ()) -> AsyncIterator[None]:
    """Translate the database errors raised in the block (``url`` names it, redacted)."""
    try:
        yield
    except DatabaseError:
        raise
    except DRIVER_ERRORS as exc:
        raise database_error(exc, url, secrets) from exc


class Session(AsyncSession):
    """An ``AsyncSession`` whose block turns database errors into ``DatabaseError``."""

    def _url(self) -> str | None:
        bind = self.bind
        engine = getattr(bind, "engine", bind)  # an AsyncConnection has its engine
        url = getattr(engine, "url", None)
        if url is None:
            return None
        plain = url.set(drivername=url.get_backend_name())  # the URL as configured
        return str(plain.render_as_string(hide_password=True))

    async def __aexit__(
        self,
        type_: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(type_, value, traceback)
        except DRIVER_ERRORS as exc:  # closing failed too (the connection is gone)
            cause = value if isinstance(value, DRIVER_ERRORS) else exc
            raise database_error(cause, self._url()) from exc
        if isinstance(value, DRIVER_ERRORS):
            raise database_error(value, self._url()) from value
