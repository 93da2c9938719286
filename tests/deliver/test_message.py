"""The pure parts: the signature a receiver verifies, the retry schedule, Retry-After."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.deliver.message import (
    EventFacts,
    backoff,
    body,
    payload,
    retry_after,
    schedule,
    signature,
    verify,
)


def test_signature_is_hmac_sha256_over_timestamp_dot_raw_body() -> None:
    raw = b'{"id":1}'
    header = signature("k", 1700000000, raw)
    mac = hmac.new(b"k", b"1700000000." + raw, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify("k", header, raw, now=1700000100)
    assert not verify("k", header, raw + b" ", now=1700000100)  # the raw bytes, exactly
    assert not verify("other", header, raw, now=1700000100)
    assert not verify("k", header, raw, now=1700000000 + 301)  # too old for the tolerance
    assert not verify("k", "garbage", raw, now=1700000000)


def test_default_schedule_runs_from_seconds_to_hours_over_about_three_days() -> None:
    delays = schedule(20, 10.0, 28800.0)
    assert len(delays) == 19
    assert delays[0] == 10.0
    assert delays == sorted(delays)
    assert max(delays) == 28800.0  # 8 hours
    assert 2.5 < sum(delays) / 86400 < 3.2


def test_jitter_stays_within_a_fifth_and_under_the_cap() -> None:
    assert backoff(3, 1.0, 100.0, lambda: 0.0) == pytest.approx(3.2)
    assert backoff(3, 1.0, 100.0, lambda: 1.0) == pytest.approx(4.8)
    assert backoff(30, 1.0, 100.0, lambda: 1.0) == 100.0


def test_retry_after_seconds_or_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


@pytest.mark.parametrize(
    "header",
    [
        "\u00b2",  # a digit to str.isdigit, no number to float
        "\u0663",  # an Arabic-Indic three: float reads it, HTTP has ASCII digits only
        "1\u00b2",
        "Thu, 01 Jan 99999 12:00:00 GMT",
        "Thu, 31 Feb 2026 12:00:00 GMT",
        "Thu, 01 Jan 2026 25:61:61 GMT",
        "Mon, 01 Jan 0000 00:00:00 +9999",
        "-5",
        "1.5",
    ],
)
def test_retry_after_that_is_no_number_nor_a_date_is_none(header: str) -> None:
    assert retry_after(header, datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_retry_after_beyond_any_float_is_infinite_not_an_error() -> None:
    assert retry_after("9" * 400, datetime(2026, 1, 1, tzinfo=UTC)) == float("inf")


@given(st.text(max_size=40))
def test_retry_after_returns_for_any_header(header: str) -> None:
    seconds = retry_after(header, datetime(2026, 1, 1, tzinfo=UTC))
    assert seconds is None or seconds >= 0


def test_payload_has_every_field_with_amounts_as_decimal_strings() -> None:
    pid = uuid.uuid4()
    facts = EventFacts(
        id=5,
        key="6f1c2d3e-4b5a-5c6d-8e7f-0a1b2c3d4e5f",
        payment_id=str(pid).upper(),  # as SQLite may hold it
        type="status_changed",
        status_from="pending",
        status_to="confirming",
        data={"amount_received": "25500000", "amount_received_decimal": "25.5"},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        chain="ethereum",
        amount="25.50",
        amount_received="30",
        confirmations=1,
    )
    doc = payload(facts)
    assert doc["amount"] == "25.5"
    assert doc["amount_received"] == "25.5"  # as the event recorded it, not as it is now
    assert doc["created_at"] == "2026-01-01T00:00:00.000000Z"
    assert doc["payment_id"] == str(pid)
    assert doc["event_key"] == "6f1c2d3e-4b5a-5c6d-8e7f-0a1b2c3d4e5f"
    assert payload(replace(facts, key=None))["event_key"] == "00000000-0000-0000-0000-000000000005"
    did = uuid.uuid4()
    raw = body(doc, did, 2, False)
    assert b'"attempt":2' in raw and f'"delivery_id":"{did}"'.encode() in raw


def _docs_snippet(language: str) -> str:
    """The verification code of docs/webhooks.md in ``language``."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text("utf-8")
    section = page[page.index("## Verifying a signature") :]
    start = section.index(f"```{language}\n") + len(f"```{language}\n")
    return section[start : section.index("```\n", start)]


def test_the_documented_python_verification_accepts_our_signatures() -> None:
    import time

    namespace: dict[str, object] = {}
    exec(_docs_snippet("python"), namespace)
    check = namespace["verify"]
    raw = b'{"id":7,"type":"test"}'
    header = signature("s3cret", int(time.time()), raw)
    assert check("s3cret", header, raw) is True  # type: ignore[operator]
    assert check("s3cret", header, raw + b"\n") is False  # type: ignore[operator]
    assert check("s3cret", signature("s3cret", int(time.time()) - 600, raw), raw) is False  # type: ignore[operator]


@pytest.mark.parametrize("language", ["javascript", "go"])
def test_the_documented_node_and_go_verifications_accept_our_signatures(
    language: str, tmp_path: Any
) -> None:
    """Each snippet judges a good signature, a changed body and an old timestamp, as a real
    receiver would run it (skipped where the toolchain is not installed)."""
    import shutil
    import subprocess
    import time

    tool = "node" if language == "javascript" else "go"
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    raw = '{"id":7,"type":"test"}'
    cases = [
        (signature("s3cret", int(time.time()), raw.encode()), raw),
        (signature("s3cret", int(time.time()), raw.encode()), raw + " "),
        (signature("s3cret", int(time.time()) - 600, raw.encode()), raw),
    ]
    if language == "javascript":
        calls = "".join(
            f"console.log(verify('s3cret', {json.dumps(h)}, Buffer.from({json.dumps(b)})));"
            for h, b in cases
        )
        source, command = _docs_snippet("javascript") + calls, ["node", "-e"]
        out = subprocess.run([*command, source], capture_output=True, text=True, timeout=60)
    else:
        calls = "".join(
            f'fmt.Println(Verify("s3cret", {json.dumps(h)}, []byte({json.dumps(b)}), 300))\n'
            for h, b in cases
        )
        body_ = _docs_snippet("go").replace("import (", 'import (\n\t"fmt"', 1)
        (tmp_path / "main.go").write_text(
            f"package main\n\n{body_}\nfunc main() {{\n{calls}}}\n", encoding="utf-8"
        )
        out = subprocess.run(
            ["go", "run", str(tmp_path / "main.go")], capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["true", "false", "false"]


def test_amounts_pass_as_plain_decimals_and_bad_gateway_values_as_written() -> None:
    from scanner.deliver.message import amount_text

    assert amount_text("25.500000") == "25.5"
    assert amount_text("1E+2") == "100"
    assert amount_text("abc") == "abc"
    assert amount_text("NaN") == "NaN"
    assert amount_text(None) is None


def test_an_amount_whose_plain_form_is_huge_passes_as_written() -> None:
    from scanner.deliver.message import amount_text

    assert amount_text("1E+999999999999999999") == "1E+999999999999999999"  # MemoryError
    assert amount_text("1E+999999999") == "1E+999999999"  # a gigabyte of zeros in plain form
    assert amount_text("1E-999999999") == "1E-999999999"
    assert amount_text("1" * 2000) == "1" * 2000  # the gateway's own digits, as written
    assert amount_text("1E+999") == "1" + "0" * 999  # within the span: plain
