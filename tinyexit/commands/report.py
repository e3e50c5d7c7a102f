"""`tinyexit report`: the figures of several demo runs side by side, as one markdown table."""

import json
from pathlib import Path

from tinyexit.errors import TinyexitError

HELP = "print the report.json figures of demo runs (e.g. out/har out/kws out/vww) as one markdown table"


def add_arguments(p) -> None:
    p.add_argument("runs", metavar="DIR", nargs="*", default=["out/har", "out/kws", "out/vww"],
                   help="demo output folders holding report.json (default: out/har out/kws out/vww)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")


def run(args) -> int:
    from tinyexit.report import tasks_table

    reports = []
    for run_dir in args.runs:
        path = Path(run_dir) / "report.json"
        try:
            reports.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise TinyexitError(f"{path} not found (run `tinyexit demo --task ... --out {run_dir}` first)") from None
        except ValueError as err:
            raise TinyexitError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(reports[-1], dict) or "task" not in reports[-1]:
            raise TinyexitError(f"{path}: not a tinyexit report")
    table = tasks_table(reports)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0
