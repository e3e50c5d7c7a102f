"""`tinyexit inputs`: the int8 X.npy (and y.npy) that `sim`, `profile`, `evaluate` and `calibrate` take."""

from pathlib import Path

from tinyexit.commands import add_seed_argument, positive_int

HELP = ("make a model's int8 inputs: a split of the task's dataset (preprocessed by the task's loader) or float "
        "arrays you preprocessed, quantized with the model's input scale and zero point; writes X.npy (+ y.npy)")
CLIP_WARNING = 0.02  # more values than this clipped to [-128, 127]: the floats were probably not preprocessed


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export folder (manifest.json + stages), or a .tflite with --float")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--split", choices=["train", "val", "test"],
                        help="a split of the export's task dataset, through the task's own loader and preprocessing")
    source.add_argument("--float", metavar="F.npy", dest="floats",
                        help="float32/64 inputs already preprocessed as the manifest's input.preprocessing says, "
                             "(N, *input shape) or flat (N, size)")
    p.add_argument("--data", metavar="PATH", help="with --split: the dataset in its official layout (default: "
                                                  "../shared/datasets beside the project, or $TINYEXIT_DATASETS)")
    p.add_argument("--normalize", action="store_true",
                   help="with --float: apply the manifest's preprocessing.normalize (per-channel mean and std, HAR) "
                        "first, for windows in physical units")
    p.add_argument("--labels", metavar="y.npy", help="with --float: their integer labels, checked and copied to y.npy")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="at most N samples (with --split: a random subset drawn with --seed; with --float: the first N)")
    add_seed_argument(p)
    p.add_argument("--out", metavar="DIR", default=".", help="where X.npy and y.npy go (default: the current folder)")


def check_preprocessing(manifest_pre: dict, data_pre: dict) -> None:
    """The loader must preprocess as the model's export did (same recipe, same normalization statistics)."""
    import json

    from tinyexit.errors import TinyexitError

    data_pre = json.loads(json.dumps(data_pre))
    if manifest_pre and data_pre != manifest_pre:
        keys = sorted(k for k in set(data_pre) | set(manifest_pre) if data_pre.get(k) != manifest_pre.get(k))
        raise TinyexitError(f"the dataset's preprocessing differs from the manifest's in {', '.join(keys)}: the model "
                            f"was exported from other data (use --float with inputs preprocessed as the manifest says)")


def from_split(args, manifest: dict, tensor: dict):
    from tinyexit import pipeline
    from tinyexit.commands import data_of
    from tinyexit.reference import quantize_input

    ds = pipeline.load_data(manifest["task"], data_of(args.data, args.model, manifest))
    check_preprocessing(manifest["input"].get("preprocessing") or {}, ds.preprocessing)
    split = getattr(ds, args.split)
    if args.limit:
        split = split.subset(args.limit, args.seed)
    pipeline.check_input(manifest, split)
    return quantize_input({"input": tensor}, split.x), split.y


def from_floats(args, manifest: dict | None, tensor: dict, classes: int | None):
    import numpy as np

    from tinyexit import inputs
    from tinyexit.errors import TinyexitError
    from tinyexit.reference import quantize_input

    x = inputs.read_npy(args.floats, "--float")
    if x.dtype.kind != "f":
        raise TinyexitError(f"--float {args.floats}: the values are {x.dtype}, not floats" +
                            (" (already int8: give it straight to --inputs)" if x.dtype == np.int8 else ""))
    x = inputs.check_array(x, {**tensor, "dtype": x.dtype.name}, args.floats)[:args.limit]
    if not np.all(np.isfinite(x)):
        raise TinyexitError(f"--float {args.floats}: holds NaN or infinite values")
    if args.normalize:
        norm = ((manifest or {}).get("input", {}).get("preprocessing") or {}).get("normalize")
        if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
            raise TinyexitError("--normalize: the manifest's input.preprocessing has no normalize (mean, std)")
        mean, std = np.asarray(norm["mean"], np.float64), np.asarray(norm["std"], np.float64)
        if mean.shape != (x.shape[-1],) or std.shape != mean.shape or not np.all(std > 0):
            raise TinyexitError(f"--normalize: the manifest's normalize has {mean.size} channels, the inputs "
                                f"{x.shape[-1]}")
        x = (x - mean) / std
    y = None
    if args.labels:
        y = inputs.check_labels(inputs.read_npy(args.labels, "--labels"), len(x), classes, args.labels)
    return quantize_input({"input": tensor}, x), y


def run(args) -> int:
    import sys

    import numpy as np

    from tinyexit import atomic, inputs
    from tinyexit import manifest as mf
    from tinyexit.errors import TinyexitError

    model = Path(args.model)
    manifest = mf.read(model) if model.is_dir() or model.name == "manifest.json" else None
    tensors, classes = inputs.model_inputs(model)
    if len(tensors) != 1:
        raise TinyexitError(f"{model} has {len(tensors)} inputs; `tinyexit inputs` makes inputs for one-input models")
    tensor = tensors[0]
    if tensor["dtype"] != "int8" or tensor["scale"] is None:
        raise TinyexitError(f"{model}: its input is {tensor['dtype']}, not quantized int8 (the firmware takes int8)")
    if args.split is not None:
        if manifest is None:
            raise TinyexitError("--split needs an export folder (its manifest names the task and preprocessing)")
        if args.labels or args.normalize:
            raise TinyexitError("--labels and --normalize go with --float (a split brings its own labels)")
    elif args.data is not None:
        raise TinyexitError("--data goes with --split")
    out = Path(args.out)
    atomic.check_writable(out, "--out", folder=True)
    x, y = from_split(args, manifest, tensor) if args.split else from_floats(args, manifest, tensor, classes)

    clipped = float(np.mean((x == -128) | (x == 127)))
    with atomic.outputs() as group:
        group.save_npy(out / "X.npy", x)
        if y is not None:
            group.save_npy(out / "y.npy", np.asarray(y, np.int64))
    print(f"wrote {out / 'X.npy'}: {len(x):,} int8 inputs of shape {tuple(x.shape[1:])} (input scale "
          f"{tensor['scale']:.6g}, zero point {tensor['zero_point']})" +
          (f" and {out / 'y.npy'}: their labels" if y is not None else ""))
    if clipped > CLIP_WARNING:
        print(f"tinyexit: warning: {clipped:.1%} of the values were clipped to [-128, 127]: were the floats "
              f"preprocessed as the manifest's input.preprocessing says?" +
              ("" if args.split or args.normalize else " (--normalize applies its mean and std)"), file=sys.stderr)
    return 0
