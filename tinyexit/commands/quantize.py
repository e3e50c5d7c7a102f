"""`tinyexit quantize`: per-layer 8/4/2-bit weights under a flash budget, fine-tuned, exported and calibrated."""

from pathlib import Path

from tinyexit.commands import add_data_arguments, add_seed_argument, percentage_points, positive_float, positive_int

HELP = ("mixed-precision weights: search per-layer widths (8, 4, 2 bits) that keep validation accuracy highest "
        "within --flash-kb of weights, fine-tune with fake quantization, export (manifest records each layer's "
        "width) and calibrate; writes search.json and bits_pareto.png")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="EXPORT_OR_MODEL_DIR",
                   help="trained model folder (model.keras + spec.json), or an export folder whose sibling "
                        "`model/` holds it (the demo's layout)")
    p.add_argument("--flash-kb", type=positive_float, required=True, help="weight budget in KiB (packed filters; biases excluded)")
    add_data_arguments(p, task_from="trained model (spec.json)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>/mixed)")
    p.add_argument("--qat-epochs", type=positive_int, default=6, help="fine-tuning epochs (default 6)")
    p.add_argument("--budget-pp", type=percentage_points, default=1.0, help="exit calibration accuracy budget (default 1 pp)")
    p.add_argument("--int4-packed", action="store_true",
                   help="also write export-int4/: 4- and 2-bit filters as TFLite's packed INT4 tensors, for stock "
                        "TFLite Micro")
    add_seed_argument(p)


def model_dir(path: str) -> Path:
    from tinyexit.errors import TinyexitError

    p = Path(path)
    if not p.exists():
        raise TinyexitError(f"{p}: no such folder")
    if (p / "manifest.json").is_file() and (p.parent / "model" / "spec.json").is_file():
        return p.parent / "model"
    if (p / "manifest.json").is_file():
        raise TinyexitError(f"{p}: an export folder without the trained model beside it ({p.parent / 'model'}); "
                            f"fine-tuning needs the Keras model")
    return p


def run(args) -> int:
    from tinyexit import atomic, models, pipeline
    from tinyexit.commands import task_of
    from tinyexit.errors import TinyexitError
    from tinyexit.quantize import mixed_precision, pareto_plot

    model, spec = models.load(model_dir(args.model))
    task_of(spec.task, args.task, "model")
    if spec.cuts:
        raise TinyexitError("mixed precision is not supported for retrofitted models")
    out = Path(args.out or f"out/{spec.task}/mixed")
    atomic.check_writable(out, "--out", folder=True)
    ds = pipeline.load_data(spec.task, args.data)
    mp = mixed_precision(model, spec, ds, out, int(args.flash_kb * 1024), args.qat_epochs, args.seed)
    manifest = pipeline.export(mp["quantized"], spec, ds, out / "export", args.seed, weight_bits=mp["bits"])
    if args.int4_packed:
        pipeline.export(mp["quantized"], spec, ds, out / "export-int4", args.seed, weight_bits=mp["bits"],
                        int4_tensors=True)
    calibration = pipeline.calibrate(out / "export", ds, args.budget_pp, progress=False)
    pareto_plot(mp["search"], out / "bits_pareto.png", f"{spec.task}: accuracy vs weight bytes")
    nbytes = sum(v for s in manifest["stages"] for k, v in s["weight_bytes"].items() if k != "bias")
    print(f"{out}/export: {nbytes:,} weight bytes (int8: {mp['search']['int8_weight_bytes']:,}); validation "
          f"early-exit accuracy {calibration['chosen']['accuracy']:.2%}")
    for layer, bits in mp["bits"].items():
        print(f"  {layer:<16} {bits} bits")
    print(f"{out}/search.json, {out}/bits_pareto.png" + (f", {out}/export-int4" if args.int4_packed else ""))
    return 0
