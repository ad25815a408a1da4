"""Pytest fixtures for the provisioning tests (registered in tests/conftest.py)."""
