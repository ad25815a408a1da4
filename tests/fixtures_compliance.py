"""Pytest fixtures for the compliance tests (registered in tests/conftest.py)."""
