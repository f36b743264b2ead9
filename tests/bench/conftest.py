"""Fixtures of the benchmark tests: a PostgreSQL database per test (see ``tests/postgres.py``)."""

from tests.postgres import postgres_database, postgres_server  # noqa: F401
