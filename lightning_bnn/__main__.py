"""``python -m lightning_bnn``: LightningCLI subcommands plus the project's own commands.

``fit``, ``validate``, ``test``, ``predict``: LightningCLI (see :mod:`lightning_bnn.cli`).
``runs``, ``compare``, ``prune``, ``sweep``: plain commands, each a ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: command name -> "module:function"; each function takes argv (without the command) and returns an exit code
COMMANDS = {
    "runs": "lightning_bnn.commands:runs_main",
    "compare": "lightning_bnn.commands:compare_main",
    "prune": "lightning_bnn.prune:main",
    "sweep": "lightning_bnn.sweep:main",
}


def run(argv: list[str]) -> int:
    """Dispatch ``argv`` to a project command or to the LightningCLI."""
    if argv and argv[0] in COMMANDS:
        module_name, function = COMMANDS[argv[0]].split(":")
        return int(getattr(importlib.import_module(module_name), function)(argv[1:]) or 0)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lightning_bnn.cli import main

    try:
        main(argv)
    except SIGTERMException:  # Lightning stopped training cleanly on SIGTERM (the run is KILLED): not a success
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
