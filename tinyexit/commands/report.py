"""`tinyexit report`: the figures of several demo runs side by side, as one markdown table."""

import json
import sys
from pathlib import Path

from tinyexit.errors import TinyexitError

HELP = "print the report.json figures of demo runs (e.g. out/har out/kws out/vww) as one markdown table"
DEFAULT_RUNS = ["out/har", "out/kws", "out/vww"]


def add_arguments(p) -> None:
    p.add_argument("runs", metavar="DIR", nargs="*",
                   help="demo output folders holding report.json (default: those of out/har out/kws out/vww that "
                        "exist)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")


def read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise TinyexitError(f"{path} not found (run `tinyexit demo --task ... --out {path.parent}` first)") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise TinyexitError(f"{path}: not valid JSON ({str(err)[:120]})") from None
    except OSError as err:
        raise TinyexitError(f"{path}: cannot read it ({err.strerror})") from None
    if not isinstance(report, dict) or not isinstance(report.get("task"), str):
        raise TinyexitError(f"{path}: not a tinyexit report")
    return report


def run(args) -> int:
    from tinyexit import atomic
    from tinyexit.report import tasks_table

    atomic.check_writable(args.markdown, "--markdown")
    runs = args.runs
    if not runs:  # the demos that ran; the others are named, not an error
        runs = [d for d in DEFAULT_RUNS if (Path(d) / "report.json").is_file()]
        missing = [d for d in DEFAULT_RUNS if d not in runs]
        if missing:
            demos = ", ".join(f"`tinyexit demo --task {Path(d).name}`" for d in missing)
            print(f"tinyexit report: no report.json in {', '.join(missing)} yet (made by {demos}); "
                  f"{'showing the others' if runs else 'nothing to show'}", file=sys.stderr)
        if not runs:
            return 0
    reports = [read_report(Path(run_dir) / "report.json") for run_dir in runs]
    table = tasks_table(reports)
    print(table)
    if args.markdown:
        atomic.write_text(args.markdown, table + "\n")
    return 0
