"""`tinyexit demo`: the whole pipeline on one task with defaults, ending in report.json."""

from pathlib import Path

from tinyexit import cluster
from tinyexit.commands import add_data_arguments, add_seed_argument, percentage_points, positive_float, positive_int

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
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs (default 30; for a retrofit: passes of head training over the augmented "
                        "views, default 4)")
    p.add_argument("--exits-after", type=positive_int, nargs="+", metavar="BLOCK",
                   help="skip the placement analysis and put exits after these blocks")
    p.add_argument("--budget-pp", type=percentage_points, default=1.0, help="calibration accuracy budget (default 1 pp)")
    p.add_argument("--firmware-samples", type=positive_int, default=None,
                   help="test samples run on the emulated Cortex-M4 firmware (default: all)")
    p.add_argument("--agreement-samples", type=positive_int, default=300,
                   help="test samples on which LiteRT is compared with TFLite Micro stage by stage (default 300)")
    p.add_argument("--bits", default="8", choices=["8", "mixed"],
                   help="weight widths: 8 = int8 everywhere (default); mixed = per-layer 8/4/2 bits searched "
                        "under --flash-kb (default: half the int8 weight bytes), then fine-tuned; the int8 run "
                        "goes to DIR/int8 for comparison")
    p.add_argument("--flash-kb", type=positive_float, default=None, help="weight budget for --bits mixed, in KiB")
    p.add_argument("--qat-epochs", type=positive_int, default=6, help="fine-tuning epochs for --bits mixed (default 6)")
    cluster.add_cluster_argument(p, "run the firmware (placement pricing, the test split)")
    add_seed_argument(p)


def run(args) -> int:
    with cluster.executor(cluster=args.cluster) as pool:
        return _run(args, pool if args.cluster else None)  # None: this machine's cores


def _run(args, executor) -> int:
    from tinyexit import atomic, pipeline, place
    from tinyexit.errors import TinyexitError

    clock = pipeline.Stopwatch()
    out = Path(args.out or f"out/{args.task}")
    epochs = args.epochs or pipeline.DEFAULT_EPOCHS
    if args.bits == "mixed" and args.task in PRETRAINED:
        raise TinyexitError(f"--bits mixed is not supported for the retrofitted task '{args.task}'")
    if args.flash_kb is not None and args.bits != "mixed":
        raise TinyexitError("--flash-kb needs --bits mixed")
    atomic.check_writable(out, "--out", folder=True)
    ds = pipeline.load_data(args.task, args.data)
    print(f"{args.task}: {len(ds.train)} train / {len(ds.val)} validation / {len(ds.test)} test samples")
    if args.task in PRETRAINED:
        after = None
        if args.exits_after:  # block numbers -> the layers ending those separable blocks
            from tinyexit import retrofit
            from tinyexit.errors import TinyexitError

            blocks = retrofit.separable_block_outputs(retrofit.load_pretrained(PRETRAINED[args.task]()))
            if not all(1 <= b <= len(blocks) for b in args.exits_after):
                raise TinyexitError(f"--exits-after: the pretrained {args.task} model has blocks 1..{len(blocks)}")
            after = [blocks[b - 1] for b in sorted(set(args.exits_after))]
        pipeline.retrofit(PRETRAINED[args.task](), ds, out, after=after, epochs=args.epochs, budget_pp=args.budget_pp,
                          seed=args.seed, agreement_samples=args.agreement_samples, search=after is None,
                          firmware_samples=args.firmware_samples, executor=executor)
        print(f"wrote {out}/report.json; plot: {out}/export/pareto.png")
        return 0

    placement = None
    exits_after = args.exits_after or FIXED_PLACEMENT.get(args.task)
    if not exits_after:
        print("[1/6] exit placement analysis")
        placement, _ = place.analyse(ds, out / "place", epochs=epochs, head_epochs=max(1, epochs // 2),
                                  budget_pp=args.budget_pp, seed=args.seed, executor=executor)
        pipeline.write_json(out / "place" / "placement.json", placement)
        print(place.table(placement))
        exits_after = placement["recommended_exits_after"]
    print(f"[2/6] training with exits after block(s) {exits_after}")
    model, spec = pipeline.train(ds, out / "model", exits_after, epochs, seed=args.seed)
    extra = {"exits_after": exits_after, "epochs": epochs, "placement": placement["candidates"] if placement else None}
    if args.bits == "mixed":
        from tinyexit.quantize import run_mixed

        int8 = pipeline.finish(model, spec, ds, out / "int8", args.budget_pp, args.seed, args.agreement_samples,
                               clock, firmware_samples=args.firmware_samples, extra=extra)
        print("mixed precision: search, fine-tuning, export")
        budget = None if args.flash_kb is None else int(args.flash_kb * 1024)
        r = run_mixed(model, spec, ds, out, budget, args.qat_epochs, args.seed, args.budget_pp, args.firmware_samples,
                      args.agreement_samples, int8_report=int8, extra={**extra, "qat_epochs": args.qat_epochs})
        print(f"mixed: {r['weight_bytes']:,} weight bytes (int8 {r['int8_weight_bytes']:,}), early-exit accuracy "
              f"{r['int8_early_exit_accuracy']:.2%} (int8 {r['all8_early_exit_accuracy']:.2%}), qemu-m4 instructions "
              f"{r['instructions_mean']:,.0f} (int8 {r['all8_instructions_mean']:,.0f}), every exit off "
              f"{r['instructions_all_stages']:,.0f} (int8 {r['all8_instructions_all_stages']:,.0f}); firmware .text+.rodata "
              f"{r['firmware_text_rodata_bytes'] or 0:,} B (int8 {r['all8_firmware_text_rodata_bytes'] or 0:,} B); "
              f"plot {out}/bits_pareto.png")
        return 0
    pipeline.finish(model, spec, ds, out, args.budget_pp, args.seed, args.agreement_samples, clock,
                    firmware_samples=args.firmware_samples, extra=extra, executor=executor)
    print(f"wrote {out}/report.json; plots: {out}/export/pareto.png" +
          (f", {out}/place/placement.png" if placement else ""))
    return 0
