"""Command-line entry point: `tinyexit <command> ...`.

Each command lives in `tinyexit/commands/<name>.py` and exposes `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Heavy imports (TensorFlow) happen inside `run`, so `--help` stays fast.

Bad input of any kind (an argument out of range, a missing or malformed file) ends with exactly one
`tinyexit: error: ...` line on stderr and exit code 2: argparse's own errors are reworded to that form,
and commands raise `TinyexitError`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

from tinyexit import __version__
from tinyexit.errors import TinyexitError

COMMANDS = ["demo", "train", "place", "export", "calibrate", "evaluate", "retrofit", "import", "check", "inputs", "build",
            "sim", "flash", "profile", "report", "quantize", "edge", "bridge"]
MODULES = {"import": "import_"}  # a command whose name is a Python keyword


class Parser(argparse.ArgumentParser):
    """argparse with the kit's one-line error format (usage stays available through --help)."""

    def error(self, message: str):
        command = self.prog.removeprefix("tinyexit").strip()
        self.exit(2, f"tinyexit: error: {command + ': ' if command else ''}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tinyexit",
        description="Design, train, quantize, export and run early-exit tiny neural networks "
        "on microcontrollers (TFLite Micro compatible).",
    )
    parser.add_argument("--version", action="version", version=f"tinyexit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"tinyexit.commands.{MODULES.get(name, name)}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


# what TensorFlow's C++ side prints while it loads (absl's pre-init notice and its I/W/E log lines)
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                      r"|[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*)$")


class _QuietTensorflowImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` (whoever imports it first) with fd 2 captured: its C++ loader logs through absl,
    which ignores TF_CPP_MIN_LOG_LEVEL before absl is initialised. Lines that are not such log lines are
    passed on."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and find the real spec without coming back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader  # the module keeps the real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                log.seek(0)
                kept = [line for line in log.read().decode(errors="replace").splitlines()
                        if line.strip() and not TF_NOISE.match(line)]
                if kept:
                    print("\n".join(kept), file=sys.stderr)
        # the Python side: TensorFlow's and absl's loggers to errors only
        try:
            module.get_logger().setLevel("ERROR")
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except Exception:  # an unusual TensorFlow build: its log lines are not worth failing for
            pass


def quiet_tensorflow() -> None:
    """TensorFlow prints C++ banners on import; keep the terminal for our own output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorflowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowImport())


def main(argv: list[str] | None = None) -> int:
    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except TinyexitError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # always one line
        print(f"tinyexit: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinyexit: interrupted", file=sys.stderr)
        return 130
