"""``longseq`` command line. Each subcommand lives in ``longseq/commands/<name>.py`` and exposes
``register(subparsers)`` which adds its parser and sets ``func`` (called with the parsed args)."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import __version__, commands

    parser = argparse.ArgumentParser(
        prog="longseq",
        description="Efficient long-sequence token mixers: list them, train them on offline tasks, benchmark them.",
    )
    parser.add_argument("--version", action="version", version=f"longseq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"longseq.commands.{info.name}").register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes each record to the ``sys.stderr`` of the moment (not the one at set-up), bare message."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: that flushes the previous stream, which may be closed
        super().emit(record)


def configure_logging(level: int = logging.INFO) -> None:
    """The CLI's output of the library's progress messages: the ``longseq`` loggers' records at
    ``level`` and above, as bare lines on stderr (what the library printed before it logged).
    Idempotent; a program that imports longseq as a library configures logging itself."""
    root = logging.getLogger("longseq")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # user errors: a message, not a traceback
        print(f"longseq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission, read-only: one sentence with the path
        from .utils.io import describe_os_error

        print(f"longseq {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # the trainer saved a checkpoint and says where
        print(f"longseq {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
