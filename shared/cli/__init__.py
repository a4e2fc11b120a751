"""The ``psaudit`` command line; :func:`main` is its entry point (``shared.cli:main``)."""

from shared.cli.main import main

__all__ = ["main"]
