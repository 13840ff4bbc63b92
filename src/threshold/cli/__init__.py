"""The ``threshold`` command: thin subcommands over library functions."""

from threshold.cli._main import main

__all__ = ["main"]
