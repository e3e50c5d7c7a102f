"""Command-line entry point: `tinyexit <command> ...`.

Each command lives in `tinyexit/commands/<name>.py` and exposes `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Heavy imports (TensorFlow) happen inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from tinyexit import __version__
from tinyexit.errors import TinyexitError

COMMANDS = ["demo", "train", "place", "export", "calibrate", "evaluate", "retrofit", "build", "sim", "flash", "profile", "report", "quantize"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyexit",
        description="Design, train, quantize, export and run early-exit tiny neural networks "
        "on microcontrollers (TFLite Micro compatible).",
    )
    parser.add_argument("--version", action="version", version=f"tinyexit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"tinyexit.commands.{name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def quiet_tensorflow() -> None:
    """TensorFlow prints C++ banners on import; keep the terminal for our own output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except TinyexitError as err:
        print(f"tinyexit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinyexit: interrupted", file=sys.stderr)
        return 130
