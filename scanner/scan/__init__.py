"""One range end to end, for the live scan, the backfill, the catch-up and the idle tick: load
(every row the range needs, read from the node and the database) → plan (``scanner.core``,
pure) → persist (``scanner.db``, bulk writes, one transaction). The only layer besides the app
that brings the node's side (``scanner.chain``) and the database's side (``scanner.db``)
together."""
