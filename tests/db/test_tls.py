"""PostgreSQL TLS from libpq's URL parameters: what asyncpg is given, what is refused in one
line, and what the local server (which offers no TLS) answers to each mode."""

from __future__ import annotations

import ssl
import traceback

import certifi
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.db.engine import engine_for_url, make_session_factory
from scanner.db.tls import split
from scanner.errors import ConfigError, DatabaseError
from tests.conftest import BACKENDS

URL = "postgresql+asyncpg://app:s3cret-pw@db.example:5432/pay"
CA = certifi.where()


def tls(query: str, *, production: bool = False) -> tuple[str, object]:
    url, argument = split(make_url(f"{URL}?{query}" if query else URL), production=production)
    return url.render_as_string(hide_password=False), argument


def context(query: str, *, production: bool = False) -> ssl.SSLContext:
    url, argument = tls(query, production=production)
    assert url == URL  # libpq's parameters never reach asyncpg as keywords
    assert isinstance(argument, ssl.SSLContext)
    return argument


def test_no_sslmode_is_asyncpgs_default_outside_production() -> None:
    assert tls("") == (URL, None)
    assert tls("command_timeout=5") == (f"{URL}?command_timeout=5", None)


@pytest.mark.parametrize(("mode", "argument"), [("disable", False), ("prefer", "prefer")])
def test_modes_that_accept_plaintext_pass_as_asyncpgs_own(mode: str, argument: object) -> None:
    assert tls(f"sslmode={mode}") == (URL, argument)


def test_require_encrypts_without_checking_the_certificate() -> None:
    made = context("sslmode=require")
    assert made.verify_mode == ssl.CERT_NONE and not made.check_hostname
    for asyncpgs in ("ssl=require", "ssl=true"):  # asyncpg's own spelling: the same
        same = context(asyncpgs)
        assert same.verify_mode == ssl.CERT_NONE and not same.check_hostname
    assert tls("ssl=disable") == (URL, False)


def test_verify_ca_checks_the_chain_against_sslrootcert_and_verify_full_the_host_too() -> None:
    ca = context(f"sslmode=verify-ca&sslrootcert={CA}")
    assert ca.verify_mode == ssl.CERT_REQUIRED and not ca.check_hostname
    assert ca.get_ca_certs()
    full = context(f"sslmode=verify-full&sslrootcert={CA}")
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname
    system = context("sslmode=verify-full")  # no sslrootcert: the system's trust store
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    as_libpq = context(f"sslmode=require&sslrootcert={CA}")  # libpq: require checks it then
    assert as_libpq.verify_mode == ssl.CERT_REQUIRED and not as_libpq.check_hostname


def test_in_production_no_sslmode_requires_tls_and_only_disable_allows_plaintext() -> None:
    made = context("", production=True)
    assert made.verify_mode == ssl.CERT_NONE
    assert tls("sslmode=disable", production=True) == (URL, False)
    for mode in ("prefer", "allow"):
        with pytest.raises(ConfigError, match=f"sslmode={mode} accepts a plaintext connection"):
            tls(f"sslmode={mode}", production=True)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("sslmode=bogus", "sslmode 'bogus'"),
        ("sslcompression=1", "'sslcompression'"),
        ("connect_timeout=10", "'connect_timeout'"),
        ("sslmode=verify-full&sslrootcert=/nonexistent/root.crt", "sslrootcert"),
        ("sslmode=require&sslcert=/nonexistent/client.crt", "sslcert"),
        ("sslmode=require&sslmode=disable", "'sslmode' is given more than once"),
        ("sslmode=require&ssl=require", "both ssl and sslmode"),
    ],
)
def test_a_parameter_asyncpg_cannot_take_is_refused_in_one_line_naming_it(
    query: str, named: str
) -> None:
    url = f"{URL}?{query}"
    with pytest.raises(ConfigError) as caught:
        engine_for_url(url)
    message = str(caught.value)
    assert named in message and "\n" not in message
    assert "s3cret-pw" not in "".join(traceback.format_exception(caught.value))


async def _select_one(url: str, *, production: bool = False) -> object:
    engine: AsyncEngine = engine_for_url(url, production=production)
    try:
        async with make_session_factory(engine)() as session:
            return (await session.execute(text("SELECT 1"))).scalar()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
@pytest.mark.skipif("postgresql" not in BACKENDS, reason="TLS is PostgreSQL's")
async def test_the_local_server_without_tls_refuses_require_in_one_line(db_url: str) -> None:
    assert await _select_one(f"{db_url}?sslmode=disable", production=True) == 1
    assert await _select_one(f"{db_url}?sslmode=prefer") == 1
    for query, production in (("?sslmode=require", False), ("", True)):
        with pytest.raises(DatabaseError) as caught:
            await _select_one(f"{db_url}{query}", production=production)
        message = str(caught.value)
        assert "rejected SSL upgrade" in message and "sslmode=disable" in message
        assert "\n" not in message
