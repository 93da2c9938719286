"""The database: engine and sessions, the schema (one model module per table), migrations.

- :mod:`scanner.db.engine`: ``make_engine(settings)``, ``make_session_factory(engine)``.
- :mod:`scanner.db.types`: column types with one meaning on PostgreSQL and SQLite.
- :mod:`scanner.db.models`: the tables; importing it registers them all.
- :mod:`scanner.db.migrate`: Alembic with the application's URL, and the start-up check.
- :mod:`scanner.db.locks`: PostgreSQL advisory locks (no-ops on SQLite).
"""
