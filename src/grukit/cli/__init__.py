"""The ``grukit`` command. All argument parsing lives in this package: :mod:`grukit.cli.lm` (``lm``,
``finetune``) and :mod:`grukit.cli.tasks` (``forecast``, ``classify-text``, ``classify-series``, ``tag``,
``translate``) read the user's files through :mod:`grukit.datasets` and call the library; every training
command saves its model with ``--out DIR``, and :mod:`grukit.cli.predict` (``predict DIR INPUT``) runs any of
them.

Errors. A user's mistake ends the command with ONE line on stderr, ``grukit: error: <what was given and what
was expected>``, and exit status 2, never a traceback. A user's mistake is

- anything the parser refuses: an unknown flag, a missing one, a value its type refuses (``--epochs -5``);
- an exception of one of :data:`USER_ERRORS` from a command: ``ValueError`` (which covers CheckpointError,
  UnicodeDecodeError and json.JSONDecodeError; grukit raises it for every bad value or file), ``TypeError``
  (a config value of the wrong type), ``OSError`` (a file or folder that is missing, unreadable or unwritable,
  a full disk), ``ImportError`` (an optional package that is not installed; the message names it) and
  ``FloatingPointError`` (training diverged; lower the learning rate).

Warnings raised while a command runs print as one line, ``warning: <message>``. Any other exception is a bug in
grukit, not the user's mistake, and keeps its traceback. Ctrl-C ends with
``grukit: interrupted`` and status 130. ``GRUKIT_TRACEBACK=1`` in the environment shows the traceback of a
user error too.
"""

from __future__ import annotations

import os
import sys
import warnings

import grukit
from grukit.cli import export, lm, predict, serve, tasks
from grukit.cli.distributed import relaunch
from grukit.cli.options import ERROR_PREFIX, Parser

USER_ERRORS = (ValueError, TypeError, OSError, ImportError, FloatingPointError)


def build_parser() -> Parser:
    parser = Parser(prog="grukit", description="Develop, train, fine-tune and run GRU models.")
    parser.add_argument("--version", action="version", version=f"grukit {grukit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    lm.register(subparsers)
    tasks.register(subparsers)
    predict.register(subparsers)
    serve.register(subparsers)
    export.register(subparsers)
    return parser


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line; an OSError as ``<reason>: <file>``."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.strerror}: {error.filename}"
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run ``grukit`` with ``argv`` (default: the process's arguments) and return its exit status; the parser
    exits (``SystemExit``) on its own errors and on ``--help``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    previous_format, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        relaunched = relaunch(args, sys.argv[1:] if argv is None else list(argv))
        if relaunched is not None:  # ran under torch.distributed.run
            return relaunched
        return int(handler(args) or 0)
    except USER_ERRORS as error:
        if os.environ.get("GRUKIT_TRACEBACK"):
            raise
        print(f"{ERROR_PREFIX} {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grukit: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


def one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings' signature)
    """A warning as ``warning: <message>``, one line, without the source file and line that raised it."""
    return f"warning: {' '.join(str(message).split())}\n"
