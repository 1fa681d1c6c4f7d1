"""The ``grukit`` command."""

from __future__ import annotations

import argparse
import sys

import grukit
from grukit.lm import commands as lm_commands
from grukit.tasks import commands as task_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grukit", description="Develop, train, fine-tune and run GRU models.")
    parser.add_argument("--version", action="version", version=f"grukit {grukit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    lm_commands.register(subparsers)
    task_commands.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
