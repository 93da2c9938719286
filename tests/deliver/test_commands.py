"""``scanner webhooks list | redeliver | test`` as an operator runs them, and no secret of the
endpoint (the signing secret, credentials in its URL) in any output: command output, logs,
metrics, stored errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import load_settings
from scanner.deliver.worker import DeliveryWorker
from scanner.observe.metrics import Metrics
from tests.deliver.support import (
    SECRET,
    Received,
    Receiver,
    add_events,
    add_payment,
    deliveries,
    detected,
    drive,
)
from tests.ops.support import json_lines, run_cli, scanner_env, scanner_process
from tests.support.wait import until

pytestmark = pytest.mark.long(45)  # seconds, about: the workers take it early

SECRETS = ("hunter2pw", "tok_0123456789abcdef", "k_abcdefabcdef12", SECRET)


def config(tmp_path: Path, port: int) -> Path:
    url = f"http://user:hunter2pw@127.0.0.1:{port}/hooks/tok_0123456789abcdef?key=k_abcdefabcdef12"
    path = tmp_path / "scanner.toml"
    path.write_text(
        '[logging]\nformat = "json"\n[metrics]\nenabled = false\n'
        f'[[webhooks]]\nurl = "{url}"\nsecret_env = "HOOK_SECRET"\nmax_attempts = 2\n'
        "retry_base = 0.01\nretry_max = 0.05\n",
        encoding="utf-8",
    )
    return path


class Cli:
    def __init__(self, path: Path, db_url: str) -> None:
        self.path, self.env = path, scanner_env(db_url, HOOK_SECRET=SECRET)
        self.outputs: list[str] = []

    async def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = await asyncio.to_thread(
            run_cli, ["webhooks", *args, "--config", str(self.path)], self.env
        )
        self.outputs += [done.stdout, done.stderr]
        return done


async def test_list_redeliver_and_test_and_no_secret_anywhere(
    db_url: str,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    mode = {"status": 500}

    async def answer(got: Received) -> web.StreamResponse:
        return web.Response(status=mode["status"])

    receiver.answer = answer
    path = config(tmp_path, receiver.port)
    cli = Cli(path, db_url)
    settings = load_settings(str(path), environ={"HOOK_SECRET": SECRET})
    metrics = Metrics(secrets=settings.secrets())
    worker = DeliveryWorker(
        settings.webhooks, session_factory, metrics=metrics.webhooks, poll_interval=0.05
    )
    await worker.prepare()
    await add_events(session_factory, detected(await add_payment(engine)))
    with structlog.testing.capture_logs() as logs:
        await drive(worker, lambda: len(receiver.requests) >= 2, engine=engine)
    assert receiver.requests[0].headers["Authorization"].startswith("Basic ")

    listed = await cli("list", "--status", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["status"], row["attempts"], row["last_status"]) == ("failed", 2, 500)
    assert row["last_error"] == "HTTP 500" and row["endpoint"] == 0
    assert row["url"] == f"http://127.0.0.1:{receiver.port}/***"
    table = await cli("list")
    assert table.returncode == 0 and row["delivery_id"] in table.stdout and "failed" in table.stdout

    mode["status"] = 200
    again = await cli("redeliver", row["delivery_id"])
    assert again.returncode == 0, again.stderr
    new_id = json.loads(again.stdout)["delivery_id"]
    await drive(worker, lambda: len(receiver.requests) >= 3, engine=engine)
    resent = receiver.requests[2]
    assert resent.verified()
    assert (resent.json["redelivery"], resent.json["delivery_id"]) == (True, new_id)
    assert resent.json["id"] == receiver.requests[0].json["id"]
    assert [(r["status"], r["redelivery"]) for r in await deliveries(engine)] == [
        ("failed", False),
        ("delivered", True),
    ]
    missing = await cli("redeliver", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no webhook delivery" in missing.stderr

    tested = await cli("test", "--endpoint", "0")
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.startswith("endpoint 0 (") and "accepted the signed test event" in (
        tested.stdout
    )
    tested = await cli("test", "--endpoint", "0", "--json")
    assert json.loads(tested.stdout)["outcome"] == "delivered"
    probe = receiver.requests[-1]
    assert probe.verified() and probe.json["type"] == "test" and probe.json["id"] == 0
    mode["status"] = 503
    failing = await cli("test", "--endpoint", "0", "--json")
    assert failing.returncode == 1 and json.loads(failing.stdout)["http_status"] == 503
    wrong = await cli("test", "--endpoint", "3")
    assert wrong.returncode == 2 and "has 1 endpoint(s)" in wrong.stderr

    rendered = metrics.render()[0].decode()
    assert 'scanner_webhook_deliveries_total{endpoint="0",outcome="http_error"} 2.0' in rendered
    everything = "\n".join([*cli.outputs, json.dumps(logs, default=str), rendered])
    everything += json.dumps(await deliveries(engine), default=str)
    for secret in SECRETS:
        assert secret not in everything, secret


async def test_scanner_deliver_runs_the_worker_alone_and_stops_on_sigterm(
    db_url: str,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    path = config(tmp_path, receiver.port)
    env = scanner_env(db_url, HOOK_SECRET=SECRET)
    with scanner_process(["deliver", "--config", str(path)], env) as proc:
        await until(lambda: "webhook_worker_started" in proc.err(), 20, "the worker started")
        await add_events(session_factory, detected(await add_payment(engine)))
        await until(lambda: receiver.requests, 20, "the event delivered")
        proc.send_signal(signal.SIGTERM)
        code, _ = proc.exit_within(15)
        err = proc.err()
    assert code == 0, err[-2000:]
    assert receiver.requests[0].verified()
    events = [e.get("event") for e in json_lines(err)]
    assert "webhook_delivered" in events and events[-1] == "scanner_stopped"
    for secret in SECRETS:
        assert secret not in err


async def test_scanner_deliver_without_webhooks_is_a_configuration_error(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    done = await asyncio.to_thread(run_cli, ["deliver", "--config", str(path)], scanner_env(db_url))
    assert done.returncode == 2 and "no [[webhooks]] configured" in done.stderr


async def test_webhooks_test_reports_a_hostile_answer_in_one_line_never_a_traceback(
    db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    async def answer(got: Received) -> web.StreamResponse:  # "²" is a digit to str.isdigit
        return web.Response(status=429, headers={"Retry-After": "\u00b2"})

    receiver.answer = answer
    cli = Cli(config(tmp_path, receiver.port), db_url)
    tested = await cli("test", "--endpoint", "0", "--json")
    assert tested.returncode == 1, tested.stderr
    assert "Traceback" not in tested.stderr
    result = json.loads(tested.stdout)
    assert (result["outcome"], result["http_status"], result["error"]) == (
        "http_error",
        429,
        "HTTP 429",
    )
