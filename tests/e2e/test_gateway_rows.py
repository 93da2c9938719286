"""Rows the gateway wrote wrong, against a real node and both databases: each gets what the
table of docs/gateway.md says, no row stops the chain, and the good payments beside them are
credited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from structlog.testing import capture_logs

from tests.e2e.actions import pay
from tests.e2e.gateway import Row, events_of, insert_row, iso, row_of
from tests.e2e.harness import Harness

INVALID = "invalid"  # one invalid_payment event, left alone, nothing credited
CREDITED = "credited"  # followed as any payment: confirmed once paid and final
GATEWAY = "gateway"  # the gateway's own status: kept; the funds recorded against it
BOTH = ("sqlite", "postgresql")
SQLITE = ("sqlite",)


@dataclass(frozen=True)
class Case:
    name: str
    backends: tuple[str, ...]
    outcome: str
    amount: object = "5"
    address: str | None = None  # None: a fresh valid address
    id: str | None = None  # None: a fresh canonical uuid
    status: str | None = None
    created_at: object = None  # callables of the chain's time, or literals
    expires_at: object = None
    reason: str = ""  # what the invalid_payment event's reason contains


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


CASES = [
    # amounts
    Case("amount NaN", BOTH, INVALID, amount="NaN", reason="not a finite number"),
    Case("amount Infinity", BOTH, INVALID, amount="Infinity", reason="not a finite number"),
    Case("amount -Infinity", BOTH, INVALID, amount="-Infinity", reason="not a finite number"),
    Case("amount negative", BOTH, INVALID, amount="-5", reason="negative"),
    Case("amount zero", BOTH, INVALID, amount="0", reason="not positive"),
    Case("amount too precise", BOTH, INVALID, amount="1.0000001", reason="decimal places"),
    Case("amount beyond uint256", BOTH, INVALID, amount="1e80", reason="uint256"),
    Case("amount of a huge exponent", SQLITE, INVALID, amount="1E+999999999", reason="range"),
    Case("amount beyond any exponent", SQLITE, INVALID, amount="1E+" + "9" * 18, reason="range"),
    Case("amount of a tiny exponent", SQLITE, INVALID, amount="1E-999999999", reason="range"),
    Case("amount of 2,000 digits", BOTH, INVALID, amount="1" * 2000, reason="out of range"),
    Case("amount text", SQLITE, INVALID, amount="five", reason="not a number"),
    Case("amount with a decimal comma", SQLITE, INVALID, amount="5,5", reason="not a number"),
    # addresses
    Case("address empty", BOTH, INVALID, address="", reason="20 bytes of hex"),
    Case("address short", BOTH, INVALID, address="0x1234", reason="20 bytes of hex"),
    Case("address long", BOTH, INVALID, address="0x" + "ab" * 21, reason="20 bytes of hex"),
    Case("address non-hex", BOTH, INVALID, address="0x" + "zz" * 20, reason="20 bytes of hex"),
    Case(
        "address base58",
        BOTH,
        INVALID,
        address="TJRabPrwbZy45sbavfcjinPJC18kjpRTv8",
        reason="20 bytes of hex",
    ),
    # ids
    Case("id not a uuid", SQLITE, INVALID, id="order-1001", reason="not a uuid"),
    Case("id upper-case", BOTH, CREDITED, id="UPPER"),
    Case("id without hyphens", BOTH, CREDITED, id="HEX"),
    Case("id braced", BOTH, CREDITED, id="BRACED"),
    Case("id urn", SQLITE, CREDITED, id="URN"),
    # times
    Case("expires_at Unix seconds", SQLITE, CREDITED, expires_at="UNIX+3600"),
    Case("created_at Unix seconds", SQLITE, CREDITED, created_at="UNIX-60"),
    Case("created_at unreadable", SQLITE, INVALID, created_at="yesterday", reason="not a time"),
    Case("expires_at ISO T and Z", SQLITE, CREDITED, expires_at="ISOZ+3600"),
    Case("created_at with an offset", SQLITE, CREDITED, created_at="OFFSET-60"),
    # statuses the gateway owns
    Case("status cancelled", BOTH, GATEWAY, status="cancelled"),
    Case("status refunded", BOTH, GATEWAY, status="refunded"),
    Case("status unknown", BOTH, GATEWAY, status="on_hold"),
]


def _spelled(case: Case) -> str:
    """The row's id: a new uuid as ``case.id`` names its spelling, else ``case.id`` itself."""
    value = _uuid()
    if case.id is None:
        return str(value)
    spellings = {
        "UPPER": str(value).upper(),
        "HEX": value.hex,
        "BRACED": "{" + str(value) + "}",
        "URN": value.urn,
    }
    return spellings.get(case.id, case.id)


def _time(spec: object, now: int) -> object:
    """A time literal from ``KIND±seconds`` (from the chain's time): ``UNIX`` (a number),
    ``ISOZ`` (with ``T`` and ``Z``), ``OFFSET`` (``+02:00``); anything else as it is."""
    if not isinstance(spec, str):
        return spec
    kind = next((k for k in ("UNIX", "ISOZ", "OFFSET") if spec.startswith(k)), None)
    if kind is None:
        return spec
    moment = now + int(spec[len(kind) :])
    if kind == "UNIX":
        return moment
    if kind == "ISOZ":
        return iso(moment).replace(" ", "T") + "Z"
    return iso(moment + 7200) + "+02:00"  # the same instant, two hours east


async def test_bad_rows_never_stop_the_chain(h: Harness, db_backend: str) -> None:
    await h.scan()
    now = h.now()
    cases = [c for c in CASES if db_backend in c.backends]
    stored: dict[str, tuple[str, str]] = {}
    for n, case in enumerate(cases, start=1):
        address = case.address if case.address is not None else "0x" + f"{n:040x}"
        row_id = _spelled(case)
        stored[case.name] = (row_id, address)
        row = Row(
            id=row_id,
            address=address,
            amount=case.amount,
            status=case.status,
            created_at=_time(case.created_at, now),
            expires_at=_time(case.expires_at, now),
        )
        await insert_row(h, row)
    good = await h.create_payment("0x" + "99" * 20, "5")
    with capture_logs() as logs:
        await h.scan()
        for case in cases:
            _, address = stored[case.name]
            if address.startswith("0x") and len(address) == 42 and case.address is None:
                pay(h, address, 5_000_000)
        pay(h, "0x" + "99" * 20, 5_000_000)
        h.mine(3)
        await h.scan()
    assert (await h.payment(good))["status"] == "confirmed"
    problems = [f"{c.name}: {p}" for c in cases if (p := await _check(h, c, *stored[c.name]))]
    assert problems == [], "\n".join(problems)
    invalid_logs = [e for e in logs if e["event"] == "payment_invalid"]
    assert len(invalid_logs) == sum(1 for c in cases if c.outcome == INVALID)
    await h.close()  # a restart looks at no row twice
    h.scanner = None
    await h.scan()
    for case in cases:
        if case.outcome == INVALID:
            found = await events_of(h, stored[case.name][0])
            assert [t for t, _ in found] == ["invalid_payment"], case.name


async def _check(h: Harness, case: Case, row_id: str, address: str) -> str | None:
    row = await row_of(h, row_id)
    found = await events_of(h, row_id)
    types = [t for t, _ in found]
    if case.outcome == INVALID:
        reasons = [str(d.get("reason", "")) for t, d in found if t == "invalid_payment"]
        if types != ["invalid_payment"] or case.reason not in reasons[0]:
            return f"events {found}"[:300]
        if len(reasons[0]) > 200:  # whatever the gateway wrote, the event stays small
            return f"a reason of {len(reasons[0])} characters"
        if (row["status"], row["transactions"]) != ("pending", 0):
            return f"row {row}"
    elif case.outcome == CREDITED:
        if (row["status"], row["transactions"]) != ("confirmed", 1):
            return f"row {row}, events {types}"
    elif (row["status"], row["transactions"]) != (case.status, 1) or "status_changed" in types:
        return f"row {row}, events {types}"
    elif types != ["transfer_detected"]:
        return f"events {types}"
    return None
