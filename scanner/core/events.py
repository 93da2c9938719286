"""The rows of ``payment_events``: one constructor per event type.

Events are never merged: one per transfer credited (``transfer_detected``), one per transfer
orphaned (``transfer_orphaned``), one per status change (``status_changed``), one per late
transfer (``paid_late``). ``data`` holds JSON-safe values only; base-unit values are ints.
Each event has a key (:func:`event_key`) that names that one fact for good.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from hashlib import sha1
from typing import Final
from uuid import UUID

import orjson

from scanner.core.model import Credit, Event, Status

TRANSFER_DETECTED: Final = "transfer_detected"
TRANSFER_ORPHANED: Final = "transfer_orphaned"
STATUS_CHANGED: Final = "status_changed"
PAID_LATE: Final = "paid_late"
CONFIRMED_REVERTED: Final = "confirmed_reverted"
INVALID_PAYMENT: Final = "invalid_payment"
TRANSFER_UNMATCHED: Final = "transfer_unmatched"


def _credit_data(credit: Credit) -> dict[str, object]:
    return {
        "tx_hash": credit.tx_hash,
        "log_index": credit.log_index,
        "block_number": credit.block_number,
        "value": credit.value,
        "late": credit.late,
    }


def transfer_detected(payment_id: UUID, credit: Credit) -> Event:
    return Event(payment_id, TRANSFER_DETECTED, None, None, _credit_data(credit))


def transfer_orphaned(payment_id: UUID, credit: Credit) -> Event:
    return Event(payment_id, TRANSFER_ORPHANED, None, None, _credit_data(credit))


def paid_late(payment_id: UUID, credit: Credit) -> Event:
    return Event(payment_id, PAID_LATE, None, None, _credit_data(credit))


def status_changed(payment_id: UUID, old: Status, new: Status, amount_received: int) -> Event:
    return Event(payment_id, STATUS_CHANGED, old, new, {"amount_received": amount_received})


def confirmed_reverted(payment_id: UUID, credit: Credit, amount_received: int) -> Event:
    """Funds left a ``confirmed`` payment; its status stays, the event makes it loud."""
    data: dict[str, object] = {
        "amount_received": amount_received,
        "tx_hash": credit.tx_hash,
        "log_index": credit.log_index,
    }
    return Event(payment_id, CONFIRMED_REVERTED, None, None, data)


def invalid_payment(payment_id: UUID, reason: str) -> Event:
    return Event(payment_id, INVALID_PAYMENT, None, None, {"reason": reason})


def transfer_unmatched(payment_id: UUID, credit: Credit) -> Event:
    """A transfer recorded against the payment that does not count towards it (another token)."""
    return Event(payment_id, TRANSFER_UNMATCHED, None, None, _credit_data(credit))


# The namespace of every event key (a fixed, random uuid: keys of this scanner only).
_KEY_SPACE: Final = UUID("5d1f3c2e-8a47-4b6e-9f0d-2c7a41e9b853")
_KEY_SPACE_BYTES: Final = _KEY_SPACE.bytes


def event_key(
    payment_key: str,
    ordinal: int,
    event_type: str,
    status_from: str | None,
    status_to: str | None,
    data: Mapping[str, object],
) -> str:
    """The event's identity: the same fact at the same place in its payment's history has the
    same key, whoever writes it and whatever ids the table hands out.

    ``ordinal`` is the event's position among its payment's events (0 for the first). A
    database that lost its newest commits (a failover to a lagging standby) hands the lost ids
    out again to other events; a rescan writes the lost facts again, at the same places, under
    the keys they had. Two different events never share a key: they differ in payment,
    position or content.
    """
    return _uuid5(_fact([payment_key, ordinal, event_type, status_from, status_to, data]))


def _fact(fact: list[object]) -> str:
    """The fact as sorted compact JSON with non-ASCII escaped (``json.dumps`` with
    ``sort_keys``, ``separators=(",", ":")``, ``default=str``), made by orjson when the two
    cannot differ (an event is written per credit): every value of ``data`` a plain str, int,
    bool or None and the text printable ASCII with nothing escaped. Anything else (a float,
    an int beyond 64 bits, a character either escapes) is made by ``json.dumps`` itself."""
    data = fact[-1]
    if isinstance(data, dict) and _PLAIN.issuperset(map(type, data.values())):
        try:
            text = orjson.dumps(fact, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # a key that is no str, an int beyond 64 bits
            pass
        else:
            if text.isascii() and b"\\" not in text and b"\x7f" not in text:
                return text.decode()
    return json.dumps(fact, sort_keys=True, separators=(",", ":"), default=str)


_PLAIN: Final = frozenset({str, int, bool, type(None)})


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_KEY_SPACE, name))``, without building a ``UUID`` (an event is written
    per credit): the SHA-1 of the namespace and the name, its first 16 bytes with the version
    nibble set to 5 and the variant bits to 10, in the standard 8-4-4-4-12 form."""
    h = sha1(_KEY_SPACE_BYTES + name.encode()).hexdigest()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"
