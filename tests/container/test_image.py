"""The container image an operator runs: built from the project's unchanged ``Dockerfile``, and
run from the image's own root as its non-root user (tests/container/image.py says how, without
a Docker engine). Against the test PostgreSQL and a real anvil: ``migrate upgrade``, ``check``,
then ``run`` with the configuration at /etc/scanner/scanner.toml until a payment is confirmed;
the image's HEALTHCHECK and /metrics while it runs; its STOPSIGNAL ends it with exit 0.

Needs root, podman and debootstrap (``.ci/run`` installs them); skipped, with the reason,
where they are missing or do not work. The first build on a machine takes about a minute
(a base image from Debian's packages, then the build); later ones reuse podman's cache.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from scanner.config import load_settings
from scanner.db.engine import make_engine
from scanner.devchain import DevChain
from scanner.devchain.node import free_port
from scanner.testkit.settings import CHAIN
from tests.container.image import (
    BASE,
    TAG,
    Container,
    build,
    container,
    image_size,
    remove_stale_containers,
    running,
    unusable_reason,
    walk_names,
)
from tests.ops.support import (
    PaymentSpec,
    http_get,
    insert_specs,
    json_lines,
    write_config,
)
from tests.support.wait import until_sync

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(420)]

MAX_ADDED_BYTES = 120_000_000  # what the image adds over its base
CONFIG_PATH = "/etc/scanner/scanner.toml"
NOT_IN_THE_IMAGE = {"pip", "setuptools", "wheel", "pytest", "hypothesis", "mypy", "ruff", "web3"}
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "make")


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built (or found in podman's cache) from the repository's Dockerfile."""
    reason = unusable_reason()
    if reason is not None:
        pytest.skip(reason)
    remove_stale_containers()
    build(TAG)
    yield TAG


@pytest.fixture
def box(image: str) -> Iterator[Container]:
    with container(image) as made:
        yield made


# -- what is in the image -----------------------------------------------------------------------


def test_the_image_is_slim(box: Container, capsys: pytest.CaptureFixture[str]) -> None:
    size, base = image_size(TAG), image_size(BASE)
    with capsys.disabled():
        print(f"\n{TAG}: {size / 1e6:.0f} MB, {(size - base) / 1e6:.0f} MB over {BASE}")
    assert size - base < MAX_ADDED_BYTES
    site = box.root / "opt/venv/lib/python3.11/site-packages"
    distributions = {p.name.partition("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "ctrip_scanner" in distributions
    assert not distributions & NOT_IN_THE_IMAGE, distributions & NOT_IN_THE_IMAGE
    for directory in ("usr/bin", "usr/local/bin", "bin", "opt/venv/bin"):
        for compiler in COMPILERS:
            assert not (box.root / directory / compiler).exists(), f"/{directory}/{compiler}"
    shipped = [*walk_names(box.root, "/app"), *walk_names(box.root, "/opt")]
    assert not [p for p in shipped if ".git" in p.parts or "tests" in p.parts[:2]]
    assert not list(walk_names(box.root, "/app")), "the source tree is in the image"


def test_the_image_runs_as_a_user_with_a_healthcheck(box: Container) -> None:
    assert box.uid != 0 and box.gid != 0
    assert box.config.healthcheck[0] == "CMD", "HEALTHCHECK lost: build with --format docker"
    assert box.config.env["SCANNER_CONFIG"] == CONFIG_PATH
    assert box.scanner() == ["scanner", "run"]
    whoami = box.run(["id", "-u"], {})
    assert whoami.stdout.strip() == str(box.uid)
    written = box.run(["touch", "/var/lib/scanner/probe", "/app/probe"], {})
    assert "/app/probe" in written.stderr and "/var/lib/scanner" not in written.stderr


def test_scanner_demo_in_the_image_names_the_missing_extra(box: Container) -> None:
    done = box.run(box.scanner(["demo"]), {})
    assert done.returncode == 2, done.stderr
    assert "pip install 'ctrip-scanner[demo]'" in done.stderr


# -- the scanner from the image, against PostgreSQL and anvil ----------------------------------


def _sql(url: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        engine = make_engine(load_settings(environ={"ENV": "testing", "DATABASE_URL_DEV": url}))
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in await conn.execute(text(query), params)]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _create_payment(url: str, spec: PaymentSpec) -> None:
    async def go() -> None:
        engine = make_engine(load_settings(environ={"ENV": "testing", "DATABASE_URL_DEV": url}))
        try:
            await insert_specs(engine, [spec])
        finally:
            await engine.dispose()

    asyncio.run(go())


def _metric(body: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


def _pay(chain: DevChain, url: str, token: str) -> str:
    """The gateway creates a payment (plain SQL), the customer pays it; the payment's id."""
    customer = chain.accounts[1]
    chain.mint(token, customer, 100_000_000)
    now = int(chain.block("latest")["timestamp"], 16)
    spec = PaymentSpec("p", str(uuid.uuid4()), "0x" + "ab" * 20, "25.5", token, now, now + 3600)
    _create_payment(url, spec)
    chain.wait_receipt(chain.transfer(token, customer, spec.address, 25_500_000))
    chain.mine(3)
    return spec.id


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_the_image_scanner_confirms_a_payment(
    box: Container,
    devchain: DevChain,
    empty_db_url: str,
    tmp_path: Path,
) -> None:
    token = devchain.deploy_token("Demo Tether", "USDT", 6)
    port = free_port()
    config = write_config(
        tmp_path / "scanner.toml", devchain.url, [("USDT", token, 6)], metrics_port=port
    )
    box.mount_file(config, CONFIG_PATH)  # -v ./scanner.toml:/etc/scanner/scanner.toml:ro
    # ENV=production (the image's): plaintext only when the URL says so; this server has no TLS
    url = f"{empty_db_url}?sslmode=disable"
    env = {"DATABASE_URL": url, "SCANNER_METRICS_ADDR": f"127.0.0.1:{port}"}  # -e

    for args in (["migrate", "upgrade"], ["check"]):
        done = box.run(box.scanner(args), env)
        assert done.returncode == 0, f"scanner {' '.join(args)}:\n{done.stderr[-3000:]}"
    assert "(head)" in box.run(box.scanner(["migrate", "current"]), env).stdout
    assert box.healthcheck(env).returncode != 0, "healthy with nothing listening"

    with running(box, box.scanner(), env) as proc:
        until_sync(
            lambda: _sql(empty_db_url, "SELECT 1 FROM tokens WHERE chain = :c", c=CHAIN),
            within=30,
            what="the scanner's start-up",
            ignoring=(OSError,),
            detail=lambda: proc.output()[-2000:],
        )
        payment = _pay(devchain, empty_db_url, token)
        query = "SELECT status FROM payments WHERE id = :id"
        until_sync(
            lambda: _sql(empty_db_url, query, id=payment) == [("confirmed",)],
            within=60,
            what="the payment's confirmation",
            ignoring=(OSError,),
        )
        health = box.healthcheck(env)
        assert health.returncode == 0, health.stderr
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        labels = {"chain": CHAIN, "status": "confirmed"}
        assert _metric(body, "scanner_payment_status_changes_total", **labels) == 1
        assert _metric(body, "scanner_last_scanned_block", chain=CHAIN) >= devchain.head() - 1
        started = time.monotonic()
        code = proc.stop(box.config.stop_signal)
        assert code == 0, proc.output()[-3000:]
        assert time.monotonic() - started < 30
        events = [e.get("event") for e in json_lines(proc.output())]
    assert "payment_confirmed" in events
