"""What the tests and the benchmarks both need, and nothing of either: a gateway's rows as plain
SQL (:mod:`~scanner.testkit.gateway`), the PostgreSQL server they create databases on
(:mod:`~scanner.testkit.postgres`), and settings as the scanner builds them
(:mod:`~scanner.testkit.settings`). The scanner itself never imports it (an import contract
says so); like ``structlog.testing``, it ships with the package.
"""
