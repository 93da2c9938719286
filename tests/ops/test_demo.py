"""The README's first command ends in ``scanner demo``: payments go pending → confirming →
confirmed in the log, on the embedded default (SQLite) and a local anvil chain."""

from __future__ import annotations

from pathlib import Path

from tests.ops.support import json_lines, run_cli, scanner_env


def test_the_quickstart_demo_confirms_its_payments(tmp_path: Path) -> None:
    done = run_cli(
        ["demo", "--payments", "2", "--seconds", "45"],
        scanner_env(),  # not a terminal: JSON lines
        timeout=90,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = json_lines(done.stderr + done.stdout)
    names = [e.get("event") for e in events]
    assert names.count("payment_confirming") == 2
    assert names.count("payment_confirmed") == 2
    assert "demo_all_confirmed" in names
    assert (tmp_path / "scanner-demo.db").exists()


def test_the_tron_demo_confirms_its_payments_at_the_solidified_block(tmp_path: Path) -> None:
    # DposService.updateSolidBlock: confirmed once the solidified block (head - 18) passes it
    done = run_cli(
        ["demo", "--chain", "tron", "--payments", "2", "--seconds", "60"],
        scanner_env(),
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = json_lines(done.stderr + done.stdout)
    names = [e.get("event") for e in events]
    assert names.count("payment_confirming") == 2
    assert names.count("payment_confirmed") == 2
    assert "demo_all_confirmed" in names
    created = [e["address"] for e in events if e.get("event") == "demo_payment_created"]
    assert len(created) == 2 and all(a.startswith("T") for a in created)
