"""The ``playcast`` command: one subcommand per program."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "server": ("playcast.signaling.main", "run the signaling server (and the web page)"),
    "worker": ("playcast.worker.main", "run a worker that streams one game"),
    "farm": ("playcast.farm.main", "run a worker for every phone adb sees on this host"),
    "demo": ("playcast.demo", "run a server and two synthetic workers on this machine"),
    "ticket": ("playcast.ticket", "print a join ticket for a server with --join-secret"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="playcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Import only the chosen program: the server must not pay for (or
        # depend on) the worker's media stack, and vice versa.
        if args_list and args_list[0] == name:
            chosen = importlib.import_module(module_name)
            chosen.add_arguments(command_parser)
    args = parser.parse_args(args_list)
    assert chosen is not None
    result: int = chosen.run(args)
    return result
