"""`tinyexit calibrate`: choose the exit policy on the validation split and write it to the manifest."""

from pathlib import Path

from tinyexit import cluster
from tinyexit.commands import add_data_arguments, non_negative_float, percentage_points

HELP = ("sweep the integer exit-policy thresholds on the validation split and write the chosen policy into "
        "manifest.json: the cheapest within an accuracy budget in MACs (--budget-pp), or the best for a target "
        "priced in measured qemu instructions or board energy (--target); writes sweep.csv/json and pareto.png")


def add_arguments(p) -> None:
    p.add_argument("export", metavar="EXPORT_DIR", help="folder with manifest.json and stage files")
    add_data_arguments(p, task_from="manifest")
    p.add_argument("--inputs", metavar="X.npy",
                   help="calibrate on these int8 inputs (as `tinyexit inputs` writes them) instead of the task's "
                        "validation split; needs --labels")
    p.add_argument("--labels", metavar="y.npy", help="the labels of --inputs (integers 0 .. classes-1)")
    p.add_argument("--budget-pp", type=percentage_points, default=None,
                   help="allowed accuracy drop vs the final exit alone, percentage points; cost in MACs (default 1)")
    p.add_argument("--target", metavar="SPEC",
                   help="accuracy-drop=Ppp (fewest instructions within P pp of the final exit alone), instructions=N "
                        "(most accurate with at most N mean instructions; 2.5M and 250k work) or energy-uj=E (most "
                        "accurate with at most E uJ per inference on --board); cost = each stage's instructions "
                        "measured on the board's QEMU stand-in (qemu-m4 without --board), stored in the manifest "
                        "(cost.instructions) and measured first when absent")
    p.add_argument("--board", metavar="NAME",
                   help="with --target: boards/NAME.yaml prices instructions in energy (default for energy-uj: the "
                        "board qemu-m4 stands in for); its QEMU stand-in measures the instructions")
    p.add_argument("--measure", action="store_true",
                   help="with --target: measure the instructions again even if the manifest has them")
    p.add_argument("--margin-sigma", type=non_negative_float, default=1.0,
                   help="the measured drop plus this many standard errors must fit the budget (default 1; 0: the "
                        "drop alone)")
    p.add_argument("--policies", nargs="+", default=["max_prob"], choices=["max_prob", "margin", "entropy"],
                   metavar="KIND", help="policy kinds to sweep; the best for the budget or target wins "
                                        "(max_prob, margin, entropy; default: max_prob)")
    p.add_argument("--out", metavar="DIR", help="where sweep.csv, sweep.json, pareto.png go (default: EXPORT_DIR)")
    cluster.add_cluster_argument(p, "with --target: measure the instructions")


def _board_and_cost_target(target, board_name):
    from tinyexit import boards
    from tinyexit.errors import TinyexitError

    board = boards.load(board_name) if board_name else None
    if board is not None and board.qemu is None:
        raise TinyexitError(f"board '{board.name}' has no QEMU stand-in to count instructions on")
    cost_target = board.qemu if board is not None else "qemu-m4"
    if board is None and target.kind == "energy-uj":
        board = boards.for_target(cost_target)
    return board, cost_target


def data_for(args, manifest: dict):
    """(dataset, arrays): the task's dataset, or (None, (int8 inputs, labels)) from --inputs/--labels."""
    from tinyexit import inputs, pipeline
    from tinyexit.commands import data_of, task_of
    from tinyexit.errors import TinyexitError

    task = task_of(manifest["task"], args.task)
    if args.inputs is None:
        if args.labels is not None:
            raise TinyexitError("--labels goes with --inputs")
        return pipeline.load_data(task, data_of(args.data, args.export, manifest)), None
    if args.labels is None:
        raise TinyexitError("--inputs needs --labels (the right answers are what the thresholds are chosen on)")
    if args.data is not None:
        raise TinyexitError("give either --data (the task's validation split) or --inputs, not both")
    xs, y = inputs.load(args.inputs, args.labels, [manifest["input"]], manifest["exits"][-1]["classes"])
    return None, (xs[0], y)


def check_outputs(args) -> None:
    """Before any work: the manifest's folder and --out can take the files calibration writes."""
    from tinyexit import atomic

    atomic.check_writable(Path(args.export) / "manifest.json", "EXPORT_DIR")
    atomic.check_writable(args.out, "--out", folder=True)


def run(args) -> int:
    from tinyexit import manifest as mf
    from tinyexit import pipeline
    from tinyexit.errors import TinyexitError

    if args.target is None:
        if args.board or args.measure or args.cluster:
            raise TinyexitError("--board, --measure and --cluster go with --target")
        return _run_budget(args)
    if args.budget_pp is not None:
        raise TinyexitError("give either --budget-pp or --target, not both")
    from tinyexit.calibrate import parse_target

    target = parse_target(args.target)
    board, cost_target = _board_and_cost_target(target, args.board)
    manifest = mf.read(args.export)
    check_outputs(args)
    ds, arrays = data_for(args, manifest)
    with cluster.executor(1, args.cluster) as pool:  # one model: one firmware run
        s = pipeline.calibrate_target(Path(args.export), ds, target, board, Path(args.out) if args.out else None,
                                      args.margin_sigma, tuple(args.policies), args.measure, cost_target,
                                      arrays=arrays, executor=pool)
    c = s["chosen"]
    energy = f", {c['energy_uj']:,.3f} uJ on {board.name}" if board is not None else ""
    print(f"{target.text}: {c['kind']} thresholds q15 {c['thresholds_q15']}: validation accuracy {c['accuracy']:.2%} "
          f"vs final exit alone {s['final_only_accuracy']:.2%}, exit rates "
          f"{' / '.join(f'{x:.1%}' for x in c['exit_rates'])}, {c['instructions_mean']:,.0f} {cost_target} "
          f"instructions on average{energy}")
    print(f"wrote the policy into {args.export}/manifest.json; sweep in {args.out or args.export}/sweep.csv, pareto.png")
    return 0


def _run_budget(args) -> int:
    from tinyexit import manifest as mf
    from tinyexit import pipeline

    budget = 1.0 if args.budget_pp is None else args.budget_pp
    manifest = mf.read(args.export)
    check_outputs(args)
    ds, arrays = data_for(args, manifest)
    s = pipeline.calibrate(Path(args.export), ds, budget, Path(args.out) if args.out else None,
                           margin_sigma=args.margin_sigma, kinds=tuple(args.policies), arrays=arrays)
    c = s["chosen"]
    print(f"{c['kind']} threshold {c['threshold']:.4f} (q15 {c['threshold_q15']}): validation accuracy {c['accuracy']:.2%} "
          f"vs final exit alone {s['final_only_accuracy']:.2%}, early exits {1 - c['exit_rates'][-1]:.1%}, "
          f"{c['macs_mean']:,.0f} MACs on average")
    print(f"wrote the threshold into {args.export}/manifest.json; sweep in {args.out or args.export}/sweep.csv, pareto.png")
    return 0
