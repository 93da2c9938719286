from __future__ import annotations

from uuid import UUID

import structlog

from scanner.chain.retrying import RpcObserver
from scanner.core.events import confirmed_reverted, status_changed
from scanner.core.kinds import EVM
from scanner.core.model import Credit
from scanner.errors import RpcRateLimited
from scanner.observe.metrics import Metrics
from scanner.scan.batch import BatchReport
from scanner.scan.report import report_batch

API_KEY = "k3yk3yk3yk3yk3yk3yk3y"
RPC_URL = f"https://rpc.example.com/v3/{API_KEY}"

REQUIRED = {
    "scanner_chain_head_block": ("chain",),
    "scanner_last_scanned_block": ("chain",),
    "scanner_lag_blocks": ("chain",),
    "scanner_rpc_requests_total": ("chain", "method", "outcome"),
    "scanner_rpc_request_duration_seconds_bucket": ("chain", "method"),
    "scanner_rpc_retries_total": ("chain", "method"),
    "scanner_logs_processed_total": ("chain",),
    "scanner_transfers_matched_total": ("chain",),
    "scanner_payment_status_changes_total": ("chain", "status"),
    "scanner_reorgs_total": ("chain",),
    "scanner_reorg_depth_bucket": ("chain",),
    "scanner_skipped_logs_total": ("chain", "reason"),
    "scanner_batch_duration_seconds_bucket": ("chain",),
    "scanner_open_payments": ("chain",),
    "scanner_chain_halted": ("chain",),
    "scanner_finality_violations_total": ("chain",),
    "scanner_backfill_blocks_total": ("chain",),
}


def touch_everything(metrics: Metrics) -> None:
    metrics.add_chain("eth")
    metrics.progressed("eth", head=120, cursor=100)
    metrics.batch_scanned("eth", seconds=0.4, logs=7, matched=2)
    metrics.logs_skipped("eth", "malformed", 2)
    metrics.payment_status_changed("eth", "confirmed")
    metrics.reorg_detected("eth", 3)
    metrics.finality_violated("eth")
    metrics.backfilled("eth", 500)
    metrics.set_open_payments("eth", 4)
    metrics.set_halted("eth", True)
    metrics.request_done("eth", "eth_getLogs", "ok", 0.12)
    metrics.retried("eth", "eth_getLogs", 1, RpcRateLimited("slow down"))


def rendered_series(metrics: Metrics) -> dict[str, list[str]]:
    body, _ = metrics.render()
    series: dict[str, list[str]] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            series.setdefault(name, []).append(line)
    return series


def test_every_required_metric_is_rendered_with_its_labels() -> None:
    metrics = Metrics()
    with structlog.testing.capture_logs():
        touch_everything(metrics)
    series = rendered_series(metrics)
    for name, labels in REQUIRED.items():
        assert name in series, name
        assert all(f'{label}="' in series[name][0] for label in labels), series[name][0]


def test_render_uses_the_prometheus_text_format_and_has_process_metrics() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "process_cpu_seconds_total" in text
    assert "python_info" in text
    assert "# TYPE scanner_rpc_requests_total counter" in text


def test_instances_have_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.set_halted("eth", True)
    assert first.registry.get_sample_value("scanner_chain_halted", {"chain": "eth"}) == 1
    assert second.registry.get_sample_value("scanner_chain_halted", {"chain": "eth"}) is None


def test_progress_sets_head_cursor_and_lag() -> None:
    metrics = Metrics()
    metrics.progressed("eth", head=100, cursor=120)  # a lagging replica: lag is never negative
    sample = metrics.registry.get_sample_value
    assert sample("scanner_chain_head_block", {"chain": "eth"}) == 100
    assert sample("scanner_last_scanned_block", {"chain": "eth"}) == 120
    assert sample("scanner_lag_blocks", {"chain": "eth"}) == 0


def test_request_done_counts_and_times_requests() -> None:
    metrics = Metrics()
    observer: RpcObserver = metrics
    observer.request_done("eth", "eth_blockNumber", "ok", 0.02)
    observer.request_done("eth", "eth_blockNumber", "ok", 0.03)
    observer.request_done("eth", "eth_blockNumber", "transport_error", 15.0)
    sample = metrics.registry.get_sample_value
    ok = {"chain": "eth", "method": "eth_blockNumber", "outcome": "ok"}
    failed = {**ok, "outcome": "transport_error"}
    timed = {"chain": "eth", "method": "eth_blockNumber"}
    assert sample("scanner_rpc_requests_total", ok) == 2
    assert sample("scanner_rpc_requests_total", failed) == 1
    assert sample("scanner_rpc_request_duration_seconds_count", timed) == 3
    assert sample("scanner_rpc_request_duration_seconds_sum", timed) == 15.05


def test_retried_counts_and_logs_a_scrubbed_event() -> None:
    metrics = Metrics(secrets=[RPC_URL])
    error = RpcRateLimited(f"429 from {RPC_URL} (key {API_KEY})", chain="eth")
    with structlog.testing.capture_logs() as events:
        metrics.retried("eth", "eth_getLogs", 2, error)
    labels = {"chain": "eth", "method": "eth_getLogs"}
    assert metrics.registry.get_sample_value("scanner_rpc_retries_total", labels) == 1
    assert events == [
        {
            "event": "rpc_retry",
            "log_level": "warning",
            "chain": "eth",
            "method": "eth_getLogs",
            "attempt": 2,
            "error": "RpcRateLimited",
            "message": "429 from https://rpc.example.com/*** (key ***)",
        }
    ]


def test_add_chain_creates_zero_series() -> None:
    metrics = Metrics()
    metrics.add_chain("base")
    sample = metrics.registry.get_sample_value
    assert sample("scanner_chain_halted", {"chain": "base"}) == 0
    assert sample("scanner_reorgs_total", {"chain": "base"}) == 0
    assert sample("scanner_logs_processed_total", {"chain": "base"}) == 0


def test_reorg_depth_histogram_counts_reorgs() -> None:
    metrics = Metrics()
    metrics.reorg_detected("eth", 2)
    metrics.reorg_detected("eth", 20)
    sample = metrics.registry.get_sample_value
    assert sample("scanner_reorgs_total", {"chain": "eth"}) == 2
    assert sample("scanner_reorg_depth_count", {"chain": "eth"}) == 2
    assert sample("scanner_reorg_depth_bucket", {"chain": "eth", "le": "4.0"}) == 1


def test_a_batch_counts_every_status_change_by_status() -> None:
    """A backfill's batch changes thousands of payments: counted per status, none lost."""
    metrics = Metrics()
    metrics.add_chain("eth")
    ids = [UUID(int=n) for n in range(1, 8)]
    credit = Credit("0x" + "ab" * 32, 0, 5, "0x" + "cd" * 32, 1, 10, late=False, orphaned=False)
    events = [status_changed(i, "pending", "confirming", 10) for i in ids]
    events += [status_changed(i, "confirming", "confirmed", 10) for i in ids[:5]]
    events += [
        status_changed(ids[6], "pending", "expired", 0),
        confirmed_reverted(ids[0], credit, 0),
    ]
    report = BatchReport(1, 5, events=tuple(events))
    for _ in range(2):
        report_batch(structlog.get_logger(), metrics, "eth", report, 0.1, EVM)
    series = "\n".join(line for lines in rendered_series(metrics).values() for line in lines)
    changes = "scanner_payment_status_changes_total"
    assert f'{changes}{{chain="eth",status="confirming"}} 14.0' in series
    assert f'{changes}{{chain="eth",status="confirmed"}} 10.0' in series
    assert f'{changes}{{chain="eth",status="expired"}} 2.0' in series
    assert 'scanner_finality_violations_total{chain="eth"} 2.0' in series
