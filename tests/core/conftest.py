"""Fixtures of the core tests: a fresh PostgreSQL schema per test (the cluster is session-wide,
tests/conftest.py), the SMTP sink, and a real node_exporter for the metrics' scrape path."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.alerts import smtp_sink  # noqa: F401
from tests.fixtures.metrics import node_exporter  # noqa: F401
from tests.fixtures.postgres import fresh_postgres_url  # noqa: F401
