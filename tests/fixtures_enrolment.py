"""Pytest fixtures for the enrolment tests (registered in tests/conftest.py)."""
