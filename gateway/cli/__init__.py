"""The ``gateway`` command: serve and demo (main.py), keys, audit and staff, policy and shops."""

from gateway.cli import audit, keys, policy  # noqa: F401 - registers their commands on main
from gateway.cli.main import main

__all__ = ["main"]
