"""`tinyexit demo`: the whole pipeline on one task with defaults, ending in report.json."""

from pathlib import Path

from tinyexit.commands import add_data_arguments, add_seed_argument

# where the literature already placed the exit, the demo follows it instead of searching
FIXED_PLACEMENT = {"kws": [3]}  # T-RECX: after DS-CNN's 2nd depthwise-separable block


def _vww_pretrained():
    from tinyexit.paths import shared_datasets

    return shared_datasets() / "models" / "mlperf_vww_96_float.h5"


# tasks whose demo retrofits exits onto a pretrained model instead of training from scratch
PRETRAINED = {"vww": _vww_pretrained}  # MLPerf Tiny's MobileNetV1 0.25, trained on the full VWW set

HELP = ("run everything on a task with defaults: placement analysis, training, int8 export, calibration, "
        "evaluation on the official test split; prints a table and writes DIR/report.json")


def add_arguments(p) -> None:
    add_data_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30)")
    p.add_argument("--exits-after", type=int, nargs="+", metavar="BLOCK",
                   help="skip the placement analysis and put exits after these blocks")
    p.add_argument("--budget-pp", type=float, default=1.0, help="calibration accuracy budget (default 1 pp)")
    p.add_argument("--firmware-samples", type=int, default=None,
                   help="test samples run on the emulated Cortex-M4 firmware (default: all)")
    p.add_argument("--agreement-samples", type=int, default=300,
                   help="test samples on which LiteRT is compared with TFLite Micro stage by stage (default 300)")
    add_seed_argument(p)


def run(args) -> int:
    from tinyexit import pipeline, place

    clock = pipeline.Stopwatch()
    out = Path(args.out or f"out/{args.task}")
    epochs = args.epochs or pipeline.DEFAULT_EPOCHS
    ds = pipeline.load_data(args.task, args.data)
    print(f"{args.task}: {len(ds.train)} train / {len(ds.val)} validation / {len(ds.test)} test samples")
    if args.task in PRETRAINED:
        pipeline.retrofit(PRETRAINED[args.task](), ds, out, epochs=epochs, budget_pp=args.budget_pp,
                          seed=args.seed, agreement_samples=args.agreement_samples, search=True,
                          firmware_samples=args.firmware_samples)
        print(f"wrote {out}/report.json; plot: {out}/export/pareto.png")
        return 0

    placement = None
    exits_after = args.exits_after or FIXED_PLACEMENT.get(args.task)
    if not exits_after:
        print("[1/6] exit placement analysis")
        placement, _ = place.analyse(ds, out / "place", epochs=epochs, head_epochs=max(1, epochs // 2),
                                  budget_pp=args.budget_pp, seed=args.seed)
        pipeline.write_json(out / "place" / "placement.json", placement)
        print(place.table(placement))
        exits_after = placement["recommended_exits_after"]
    print(f"[2/6] training with exits after block(s) {exits_after}")
    model, spec = pipeline.train(ds, out / "model", exits_after, epochs, seed=args.seed)
    pipeline.finish(model, spec, ds, out, args.budget_pp, args.seed, args.agreement_samples, clock,
                    firmware_samples=args.firmware_samples, extra={"exits_after": exits_after, "epochs": epochs,
                           "placement": placement["candidates"] if placement else None})
    print(f"wrote {out}/report.json; plots: {out}/export/pareto.png" +
          (f", {out}/place/placement.png" if placement else ""))
    return 0
