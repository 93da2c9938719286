"""The schema, one module per table. Importing this package registers every table on ``Base``.

A new model module must be imported here, or Alembic's autogenerate will not see it.
"""

from scanner.db.models.backfill_jobs import BackfillJob
from scanner.db.models.base import Base
from scanner.db.models.blocks import Block
from scanner.db.models.chain_states import ChainState
from scanner.db.models.cluster import ChainLease, ScannerInstance
from scanner.db.models.payment_events import PaymentEvent
from scanner.db.models.payment_sums import PaymentSum
from scanner.db.models.payments import Payment
from scanner.db.models.tokens import Token
from scanner.db.models.transactions import Transaction
from scanner.db.models.webhooks import WebhookCursor, WebhookDelivery

metadata = Base.metadata

__all__ = [
    "BackfillJob",
    "Base",
    "Block",
    "ChainLease",
    "ChainState",
    "Payment",
    "PaymentEvent",
    "PaymentSum",
    "ScannerInstance",
    "Token",
    "Transaction",
    "WebhookCursor",
    "WebhookDelivery",
    "metadata",
]
