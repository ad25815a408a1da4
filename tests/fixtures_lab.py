"""Pytest fixtures for the lab tests (registered in tests/conftest.py)."""
