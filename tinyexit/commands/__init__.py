"""One module per `tinyexit` subcommand: HELP, add_arguments(parser), run(args) -> exit code.

Shared here: the data and seed arguments, `type=` checkers that range-check numeric flags while the
arguments are parsed (before any work starts), and the warning for builds of an uncalibrated export.
"""

from __future__ import annotations

import argparse
import math
import sys

MAX_SEED = 2**32 - 1  # numpy's and TensorFlow's seed range


def _number(kind, test, expected: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, not '{text}'") from None
        if (kind is float and not math.isfinite(value)) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, not '{text}'")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive finite number")
non_negative_float = _number(float, lambda v: v >= 0, "a finite number >= 0")
finite_float = _number(float, lambda v: True, "a finite number")
percentage_points = _number(float, lambda v: 0 <= v <= 100, "a number of percentage points from 0 to 100")
seed = _number(int, lambda v: 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}")


def add_data_arguments(parser, task_choices=("har", "kws", "vww"), task_from: str | None = None) -> None:
    """--task and --data. `task_from` (e.g. "manifest"): the command takes the task from that file; --task then
    only guards it (given, it must be the same task)."""
    if task_from:
        parser.add_argument("--task", choices=task_choices,
                            help=f"default: the {task_from}'s task; given, it must be the same")
    else:
        parser.add_argument("--task", default="har", choices=task_choices, help="task (default: har)")
    parser.add_argument("--data", metavar="PATH",
                        help="dataset in its official layout (folder or archive); default: "
                             "../shared/datasets beside the project, or $TINYEXIT_DATASETS")


def task_of(actual: str, given: str | None, source: str = "export") -> str:
    """The task a file says (`actual`); a --task that names another one is an error."""
    from tinyexit.errors import TinyexitError

    if given is not None and given != actual:
        raise TinyexitError(f"--task {given}: this {source} was made for task '{actual}'")
    return actual


def add_seed_argument(parser) -> None:
    parser.add_argument("--seed", type=seed, default=0, help="random seed; the same seed repeats a run (default 0)")


def warn_if_uncalibrated(model_path) -> None:
    """One line on stderr when an export's early exits have no calibrated threshold (they never fire)."""
    from pathlib import Path

    from tinyexit import manifest as mf
    from tinyexit.policy import NEVER

    path = Path(model_path)
    if not (path.is_dir() or path.name == "manifest.json"):
        return
    m = mf.read(path, verify=False)
    never = [e["index"] for e in m["exits"] if not e["final"] and
             (e["policy"] is None or e["policy"]["threshold_q15"] >= NEVER)]
    if never:
        which = f"exit {never[0]} is" if len(never) == 1 else f"exits {', '.join(map(str, never))} are"
        print(f"tinyexit: warning: {path}: early {which} not calibrated and never taken: run "
              f"`tinyexit calibrate {path}` first", file=sys.stderr)


def data_of(given: str | None, export, manifest: dict) -> str | None:
    """--data, else the data folder an imported export carries (`tinyexit import --data`: manifest "data")."""
    from pathlib import Path

    if given is not None or "data" not in manifest:
        return given
    return str(Path(export) / manifest["data"])
