"""``python -m lightning_bnn``: LightningCLI subcommands plus the project's own commands.

``fit``, ``validate``, ``test``, ``predict``: LightningCLI (see :mod:`lightning_bnn.cli.app`).
``runs``, ``compare``, ``register``, ``prune``, ``sweep``: plain commands, each a ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: command name -> "module:function"; each function takes argv (without the command) and returns an exit code
COMMANDS = {
    "runs": "lightning_bnn.cli.commands:runs_main",
    "compare": "lightning_bnn.cli.commands:compare_main",
    "register": "lightning_bnn.cli.register:main",
    "prune": "lightning_bnn.cli.prune:main",
    "sweep": "lightning_bnn.cli.sweep:main",
}


def run(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: the command line) to a project command or to the LightningCLI."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in COMMANDS:
        module_name, function = COMMANDS[args[0]].split(":")
        return int(getattr(importlib.import_module(module_name), function)(args[1:]) or 0)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lightning_bnn.cli.app import main

    try:
        main(argv)  # None: LightningCLI reads the command line itself (and does not warn about it)
    except SIGTERMException:  # Lightning stopped training cleanly on SIGTERM (the run is KILLED): not a success
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(run())
