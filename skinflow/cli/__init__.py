"""The ``skinflow`` command line (:mod:`skinflow.cli.commands`); every command is also a Python function."""

from skinflow.cli.commands import main

__all__ = ["main"]
