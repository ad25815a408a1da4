"""Pytest fixtures for the vpn tests (registered in tests/conftest.py)."""
