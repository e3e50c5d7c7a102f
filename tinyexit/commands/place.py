"""`tinyexit place`: where should the early exit go?"""

from pathlib import Path

from tinyexit import cluster
from tinyexit.commands import add_data_arguments, add_seed_argument, percentage_points, positive_int

HELP = ("exit placement analysis: accuracy an exit reaches after each block vs the MACs and qemu-m4 instructions "
        "spent to reach it; prints a table, writes placement.json and placement.png")


def add_arguments(p) -> None:
    add_data_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>/place)")
    p.add_argument("--epochs", type=positive_int, default=30, help="backbone training epochs (default 30)")
    p.add_argument("--head-epochs", type=positive_int, default=15, help="exit head training epochs (default 15)")
    p.add_argument("--budget-pp", type=percentage_points, default=1.0, help="accuracy budget for the projection (default 1)")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="candidates whose firmware runs side by side when pricing them in qemu-m4 instructions "
                        "(default: the cores available)")
    cluster.add_cluster_argument(p)
    add_seed_argument(p)


def run(args) -> int:
    from tinyexit import atomic, pipeline, place

    out = Path(args.out or f"out/{args.task}/place")
    atomic.check_writable(out, "--out", folder=True)
    ds = pipeline.load_data(args.task, args.data)
    with cluster.executor(args.jobs, args.cluster) as pool:
        result, _ = place.analyse(ds, out, args.epochs, args.head_epochs, args.budget_pp, args.seed, executor=pool)
    pipeline.write_json(out / "placement.json", result)
    print(place.table(result))
    print(f"wrote {out}/placement.json and {out}/placement.png "
          f"(use it with `tinyexit train --placement {out}/placement.json`)")
    return 0
