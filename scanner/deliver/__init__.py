"""Webhook deliveries from the outbox (``payment_events``), durable in the database.

    payment_events ──(fan-out, in id order, per endpoint cursor)──▶ webhook_deliveries (pending)
    pending, due, not held back by an earlier event of the same payment
        ──(claim: FOR UPDATE SKIP LOCKED, short lease)──▶ POST, signed
        ──▶ delivered (2xx) │ pending again, after backoff (or Retry-After) │ failed (max_attempts)

- :mod:`scanner.deliver.message`: pure: payload, body, signature, retry schedule.
- :mod:`scanner.deliver.store`: every query (fan-out, claim, record, list, redeliver).
- :mod:`scanner.deliver.sender`: one HTTP attempt, its outcome (httpx, errors translated here).
- :mod:`scanner.deliver.worker`: the loop that ``scanner run`` and ``scanner deliver`` run.
- :mod:`scanner.deliver.commands`: ``scanner webhooks list | redeliver | test``.
"""
