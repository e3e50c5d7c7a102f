"""`tinyexit demo`: the whole pipeline on one task with defaults, ending in report.json."""

from pathlib import Path

from tinyexit.commands import add_data_arguments, add_seed_argument

# where the literature already placed the exit, the demo follows it instead of searching
FIXED_PLACEMENT = {"kws": [3]}  # T-RECX: after DS-CNN's 2nd depthwise-separable block

HELP = ("run everything on a task with defaults: placement analysis, training, int8 export, calibration, "
        "evaluation on the official test split; prints a table and writes DIR/report.json")


def add_arguments(p) -> None:
    add_data_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30)")
    p.add_argument("--exits-after", type=int, nargs="+", metavar="BLOCK",
                   help="skip the placement analysis and put exits after these blocks")
    p.add_argument("--budget-pp", type=float, default=1.0, help="calibration accuracy budget (default 1 pp)")
    p.add_argument("--agreement-samples", type=int, default=300,
                   help="test samples on which LiteRT is compared with TFLite Micro stage by stage (default 300)")
    add_seed_argument(p)


def run(args) -> int:
    from tinyexit import pipeline, place
    from tinyexit.report import demo_table

    clock = pipeline.Stopwatch()
    out = Path(args.out or f"out/{args.task}")
    epochs = args.epochs or pipeline.DEFAULT_EPOCHS
    ds = pipeline.load_data(args.task, args.data)
    print(f"{args.task}: {len(ds.train)} train / {len(ds.val)} validation / {len(ds.test)} test samples")

    placement = None
    exits_after = args.exits_after or FIXED_PLACEMENT.get(args.task)
    if not exits_after:
        print("[1/5] exit placement analysis")
        placement = place.analyse(ds, out / "place", epochs=epochs, head_epochs=max(1, epochs // 2),
                                  budget_pp=args.budget_pp, seed=args.seed)
        pipeline.write_json(out / "place" / "placement.json", placement)
        print(place.table(placement))
        exits_after = placement["recommended_exits_after"]
    print(f"[2/5] training with exits after block(s) {exits_after}")
    model, spec = pipeline.train(ds, out / "model", exits_after, epochs, seed=args.seed)
    print("[3/5] int8 export")
    pipeline.export(model, spec, ds, out / "export", args.seed)
    print("[4/5] calibration on the validation split")
    calibration = pipeline.calibrate(out / "export", ds, args.budget_pp)
    print("[5/5] evaluation on the test split (TFLite Micro)")
    metrics = pipeline.evaluate(out / "export", ds.test)
    from tinyexit import manifest as mf

    manifest = mf.read(out / "export")
    report = {
        "task": args.task,
        "n_test": len(ds.test),
        **pipeline.float_metrics(model, ds.test, manifest),
        **{k: v for k, v in metrics.items() if k != "n"},
        "exits_after": exits_after,
        "parameters": int(model.count_params()),
        "stage_macs": [s["macs"] for s in manifest["stages"]],
        "weight_bytes": {k: sum(s["weight_bytes"].get(k, 0) for s in manifest["stages"])
                         for k in ("int8", "bias")},
        "validation": {"n": len(ds.val), "final_only_accuracy": calibration["final_only_accuracy"],
                       "early_exit_accuracy": calibration["chosen"]["accuracy"],
                       "macs_mean": calibration["chosen"]["macs_mean"]},
        "interpreter_agreement": pipeline.interpreter_agreement(out / "export",
                                                                ds.test.subset(args.agreement_samples, args.seed)),
        "placement": placement["candidates"] if placement else None,
        "epochs": epochs,
        "seed": args.seed,
        "seconds": clock.seconds(),
    }
    pipeline.write_json(out / "report.json", report)
    print(demo_table(report))
    print(f"wrote {out}/report.json; plots: {out}/export/pareto.png" +
          (f", {out}/place/placement.png" if placement else ""))
    return 0
