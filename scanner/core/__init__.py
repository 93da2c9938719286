"""The pure core of the scanner: range arithmetic, decoding, matching, payment states, reorgs.

Nothing here does I/O or imports from ``scanner.chain``, ``scanner.db``, ``scanner.scan`` or the
CLI: plain functions over frozen dataclasses, so every money rule is testable in microseconds.

    model     the value types (Header, Transfer, Payment, Credit, Finality, Event, PaymentOutcome)
    ranges    block ranges and the adaptive range size
    decode    raw JSON-RPC logs and blocks → transfers; amounts and addresses
    matching  which payment a transfer goes to
    finality  confirmations and finality of a block
    events    the payment_events rows
    ledger    the payment state machine over one batch (the money-critical part)
    reorg     parent-hash checks and the walk back to the common ancestor
"""
