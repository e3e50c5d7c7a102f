"""`tinyexit calibrate`: choose the exit threshold on the validation split and write it to the manifest."""

from pathlib import Path

from tinyexit.commands import add_data_arguments

HELP = ("sweep the integer max-probability exit threshold on the validation split, pick the cheapest "
        "within an accuracy budget, write it into manifest.json; writes sweep.csv/json and pareto.png")


def add_arguments(p) -> None:
    p.add_argument("export", metavar="EXPORT_DIR", help="folder with manifest.json and stage files")
    add_data_arguments(p)
    p.add_argument("--budget-pp", type=float, default=1.0,
                   help="allowed accuracy drop vs the final exit alone, percentage points (default 1)")
    p.add_argument("--margin-sigma", type=float, default=1.0,
                   help="the measured drop plus this many standard errors must fit the budget (default 1; 0: the "
                        "drop alone)")
    p.add_argument("--policies", nargs="+", default=["max_prob"], choices=["max_prob", "margin", "entropy"],
                   metavar="KIND", help="policy kinds to sweep; the cheapest within the budget wins "
                                        "(max_prob, margin, entropy; default: max_prob)")
    p.add_argument("--out", metavar="DIR", help="where sweep.csv, sweep.json, pareto.png go (default: EXPORT_DIR)")


def run(args) -> int:
    from tinyexit import manifest as mf
    from tinyexit import pipeline

    task = mf.read(args.export)["task"]
    ds = pipeline.load_data(task, args.data)
    s = pipeline.calibrate(Path(args.export), ds, args.budget_pp, Path(args.out) if args.out else None,
                           margin_sigma=args.margin_sigma, kinds=tuple(args.policies))
    c = s["chosen"]
    print(f"{c['kind']} threshold {c['threshold']:.4f} (q15 {c['threshold_q15']}): validation accuracy {c['accuracy']:.2%} "
          f"vs final exit alone {s['final_only_accuracy']:.2%}, early exits {1 - c['exit_rates'][-1]:.1%}, "
          f"{c['macs_mean']:,.0f} MACs on average")
    print(f"wrote the threshold into {args.export}/manifest.json; sweep in {args.out or args.export}/sweep.csv, pareto.png")
    return 0
