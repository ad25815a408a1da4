"""Pytest fixtures for the mdm tests (registered in tests/conftest.py)."""
