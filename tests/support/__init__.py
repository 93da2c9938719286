"""Helpers shared across the test packages and the benchmarks (``bench/`` imports them too).

- ``settings``: settings as the CLI builds them; ``chain_settings`` for the test chain.
- ``postgres``: the PostgreSQL server tests create their databases on.
- ``gateway``: the rows a gateway writes, as plain SQL.
- ``metrics``: metric reads that fail on a series that does not exist.
- ``devchain``: test-only calls on the dev chain (wrong-shaped logs, failed payments, web3).
- ``proxy``: the fault-injecting JSON-RPC proxy.
"""
