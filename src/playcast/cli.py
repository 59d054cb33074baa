"""The ``playcast`` command: one subcommand per program."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# subcommand -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "server": ("playcast.signaling.main", "run the signaling server (and the web page)"),
    "worker": ("playcast.worker.main", "run a worker that streams one game"),
    "demo": ("playcast.demo", "run a server and two synthetic workers on this machine"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="playcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    result: int = modules[args.command].run(args)
    return result
