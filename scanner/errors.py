"""The scanner's one exception tree.

Other libraries' errors (httpx, web3, SQLAlchemy, pydantic, Alembic) are translated once, at the
adapter that calls them (``raise ... from exc``); everything above the adapters sees only these.

    ScannerError
    ├── ConfigError                 bad settings: exit code 2
    ├── SchemaError                 database revision not what the code expects: exit code 3
    │   ├── SchemaBehind            older than the code, migrate_on_start off
    │   └── SchemaUnknown           a revision this code does not know (newer schema)
    ├── DatabaseError               the database is unreachable or refused a statement
    │   └── PaymentLocked           a payment row the gateway holds locked: retried, reported
    ├── ChainLockLost               this process no longer holds the chain (its lock or lease)
    ├── BackfillJobLost             a split backfill's job is another worker's now: drop it
    ├── RpcError                    the node answered badly or not at all
    │   ├── RpcTransportError       connection refused, timeout, HTTP 5xx   (transient: retried)
    │   ├── RpcRateLimited          HTTP 429 / "rate limit" codes            (transient: retried)
    │   │   └── RpcNodeBusy         a node's limiter body (java-tron, HTTP 200) (transient)
    │   ├── RpcResponseError        a JSON-RPC error object                  (not retried)
    │   │   └── RangeTooLarge       getLogs range or result too large: shrink the range
    │   ├── MalformedResponse       not JSON-RPC, or a result of the wrong shape (``kind``;
    │   │                           a garbled body or batch is transient: retried)
    │   └── BlockNotAvailable       null block / unknown block (lagging)    (transient: retried)
    │       ├── ReceiptNotAvailable a null transaction receipt               (transient: retried)
    │       └── HistoryUnavailable  a block far below the node's head that it cannot show
    │                               (pruned, a snapshot, history expiry): not "yet"
    ├── RangeRejected               a range read from the node cannot be committed as it is
    │   ├── ReorgDetected           it does not link to the stored blocks: walk back first
    │   ├── CursorMoved             the cursor is not where the range began: drop the range
    │   ├── RangeInconsistent       its logs and headers name different blocks: read it again
    │   └── StoredBlocksDisagree    a backfill's node and the live scan's blocks disagree
    └── ChainHalted                 a chain must stop until an operator resumes it
        ├── ChainIdMismatch         the node serves another chain
        ├── DeepReorg               a reorg deeper than max_reorg_depth
        └── TokenConfigConflict     configured decimals disagree with the tokens table

The local dev chain (:mod:`scanner.devchain`) raises :class:`RpcResponseError` for the node's
JSON-RPC errors, like the scanner's own client; that anvil did not start is its own
``AnvilStartError``, no error of the scanner's.

Errors carry data (``chain``, ``method``, revisions, ...) as attributes, not only in the message.
No message may contain a secret: URLs are passed through :func:`scanner.secrets.redact_url`
before they reach an error.
"""

from __future__ import annotations

# The process's exit codes, each in this one place (the errors below carry theirs).
EXIT_OK = 0
EXIT_FAILURE = 1  # a ScannerError, or an unexpected one
EXIT_CONFIG = 2  # bad settings or arguments
EXIT_SCHEMA = 3  # the database's revision is not the code's
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C), or a second signal during shutdown


class ScannerError(Exception):
    """Base of every error the scanner raises on purpose."""

    exit_code: int = EXIT_FAILURE


class ConfigError(ScannerError):
    """Invalid configuration: names the key and the file."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.file = file


class SchemaError(ScannerError):
    """The database schema is not at the code's revision."""

    exit_code = EXIT_SCHEMA

    def __init__(self, message: str, *, current: str | None, head: str) -> None:
        super().__init__(message)
        self.current = current
        self.head = head


class SchemaBehind(SchemaError):
    """The database is older than the code and is not to be upgraded automatically."""


class SchemaUnknown(SchemaError):
    """The database carries a revision this code does not know (written by a newer version)."""


class DatabaseError(ScannerError):
    """The database could not be reached or refused a statement."""


class PaymentLocked(DatabaseError):
    """Payment rows a range must update are locked by another transaction (the gateway's) for
    longer than the row lock timeout; ``keys`` are their ids as stored. Retried with backoff."""

    def __init__(self, keys: list[object]) -> None:
        shown = ", ".join(str(k) for k in keys[:5]) + (" …" if len(keys) > 5 else "")
        super().__init__(f"payment row(s) locked by another transaction: {shown}")
        self.keys = keys


class ChainLockLost(ScannerError):
    """The connection that held a chain's writer lock is gone (terminated by the server, an
    ``idle_session_timeout``, a restart): another process may hold the chain now. The chain
    stops scanning and takes the lock again before going on."""

    def __init__(self, message: str, *, chain: str) -> None:
        super().__init__(message)
        self.chain = chain


class BackfillJobLost(ScannerError):
    """A job of a split backfill is not this worker's any more (its lease expired and another
    worker took it over), or it does not stand where the range began: nothing is written."""

    def __init__(self, message: str, *, chain: str, job: tuple[int, int]) -> None:
        super().__init__(message)
        self.chain = chain
        self.job = job


class RpcError(ScannerError):
    """A JSON-RPC call failed. Subclasses declare their details as class attributes (with their
    defaults); a detail given to the constructor is set on the instance."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        chain: str | None = None,
        method: str | None = None,
        **details: object,
    ) -> None:
        super().__init__(message)
        self.chain = chain
        self.method = method
        for name, value in details.items():
            if not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no detail {name!r}")
            setattr(self, name, value)


class RpcTransportError(RpcError):
    """The node could not be reached, timed out, or answered with an HTTP error."""

    transient = True


class RpcRateLimited(RpcError):
    """The provider asked us to slow down (``retry_after`` seconds, when it said)."""

    transient = True
    retry_after: float | None = None


class RpcNodeBusy(RpcRateLimited):
    """A node's own limiter refused the request with a body of its own instead of a JSON-RPC
    answer: java-tron's ``{"Error": "class java.lang.IllegalAccessException : lack of computing
    resources"}`` with HTTP 200 (TronGrid's balancer, or ``rate.limiter`` in the node's config).
    A rate limit: retried with backoff, counted under its own label."""


class RpcResponseError(RpcError):
    """The node answered with a JSON-RPC error object (``code``, ``data``)."""

    code: int | None = None
    data: object = None


class RangeTooLarge(RpcResponseError):
    """An eth_getLogs range or its result was too large; ``suggested_size`` when the node said."""

    suggested_size: int | None = None


class MalformedResponse(RpcError):
    """The node's answer is not what JSON-RPC promises (bad JSON, missing fields, wrong types).

    ``kind`` says which, and is its metric label: ``not_json`` (an HTML error page, even with
    HTTP 200), ``truncated`` (a body cut short, or empty), ``batch_incomplete`` (a batch answer
    without some items), ``http_status`` (401, 403, 404: a wrong URL or key), ``malformed`` (a
    result of the wrong shape), ``too_large`` (an answer beyond the byte cap: a batch is asked
    again in halves; an ``eth_getLogs`` answer is a RangeTooLarge instead). A truncated body
    and an incomplete batch are transient (cut or dropped on the way): retried, and failed over
    to the next URL. The others are not: repeating a wrong URL's HTML page only burns quota;
    the chain's next tick tries again.
    """

    TRANSIENT_KINDS = frozenset({"truncated", "batch_incomplete"})
    kind: str = "malformed"

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.transient = self.kind in self.TRANSIENT_KINDS


class BlockNotAvailable(RpcError):
    """The node has no such block (yet): a lagging replica, or a hash it never saw.

    Transient: another replica, or the same one a moment later, may have it. A block the node
    cannot show is never skipped: the caller waits. ``block`` is the number or hash asked for.
    """

    transient = True
    block: int | str | None = None


class ReceiptNotAvailable(BlockNotAvailable):
    """The node answered ``null`` for a receipt (lagging, or the tx was reorged out)."""

    tx_hash: str = ""


class HistoryUnavailable(BlockNotAvailable):
    """A block the node cannot show, not one it has not got *yet*: it stayed unavailable through
    the retries while lying more than the chain's reorg window below the node's own head, or the
    node said its history is pruned (EIP-4444's code 4444). A pruned node, one started from a
    snapshot, or one whose history expired. A look-back over history stops above it and says so
    (``catch_up_truncated``); a range the scan must cover is never passed over: it waits.
    ``head``: the node's head when it was judged (None: the node said so itself)."""

    transient = False
    head: int | None = None


class RangeRejected(ScannerError):
    """A range read from the node cannot be committed as it is; the scan loop reacts."""


class ReorgDetected(RangeRejected):
    """The range does not link to what is stored at ``block``: walk back before going on."""

    def __init__(self, block: int) -> None:
        super().__init__(f"reorg detected at block {block}")
        self.block = block


class CursorMoved(RangeRejected):
    """The cursor is not where this prefetched range expected it: drop the range."""


class RangeInconsistent(RangeRejected):
    """Logs name block hashes the headers do not: the node changed under us. Like every
    :class:`ScannerError` that does not halt a chain, the chain retries it with backoff."""


class StoredBlocksDisagree(RangeRejected):
    """A backfill's node names a block the live scan stored by another hash (a stale replica,
    or a reorg the live scan has not followed yet): nothing of the range is written."""

    def __init__(self, chain: str, block: int) -> None:
        super().__init__(
            f"chain {chain!r}: the node names block {block} by another hash than the live scan"
            " stored (a stale replica, or a reorg the live scan has not followed yet); nothing"
            " written: run the backfill again once the live scan has caught up"
        )
        self.chain = chain
        self.block = block


class ChainHalted(ScannerError):
    """A chain cannot go on without an operator; the other chains continue."""

    def __init__(self, message: str, *, chain: str) -> None:
        super().__init__(message)
        self.chain = chain


class ChainIdMismatch(ChainHalted):
    def __init__(self, *, chain: str, expected: int, actual: int) -> None:
        super().__init__(
            f"chain {chain!r}: the node reports chain id {actual}, "
            f"the configuration says {expected}",
            chain=chain,
        )
        self.expected = expected
        self.actual = actual


class DeepReorg(ChainHalted):
    def __init__(self, *, chain: str, depth: int, max_depth: int) -> None:
        super().__init__(
            f"chain {chain!r}: reorg deeper than max_reorg_depth={max_depth} (at least {depth})",
            chain=chain,
        )
        self.depth = depth
        self.max_depth = max_depth


class UnlinkedCredit(ChainHalted):
    """A credit not final yet lies below every block the live scan stored (a backfill ran
    before it started), and the node now names its block by another hash: no stored hash
    links it, so the scan must not count it; an operator's rewind below it resumes the
    chain."""

    def __init__(self, *, chain: str, block: int) -> None:
        super().__init__(
            f"chain {chain!r}: a credit not final yet is in block {block}, below the blocks the"
            " live scan stored, and the node now shows another block there: run"
            f" `scanner rewind --chain {chain} --to-block {max(0, block - 1)}` (or lower)",
            chain=chain,
        )
        self.block = block


class TokenConfigConflict(ChainHalted):
    def __init__(self, *, chain: str, address: str, configured: int, stored: int) -> None:
        super().__init__(
            f"chain {chain!r}: token {address} is configured with {configured} decimals "
            f"but the tokens table says {stored}",
            chain=chain,
        )
        self.address = address
        self.configured = configured
        self.stored = stored
