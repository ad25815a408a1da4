"""Shared ground for every werne package: configuration, state database, inventory and errors."""

__version__ = "0.2.0"
