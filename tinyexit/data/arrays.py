"""A dataset given as arrays: a folder with `{train,val,test}_x.npy` (float inputs in the model's input
layout, after any preprocessing) and `{train,val,test}_y.npy` (integer labels), `classes.txt` optional (one
name per line). The layout `tinyexit import` writes into an export's `data/` folder and reads from --data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyexit.data import Dataset, Split
from tinyexit.errors import TinyexitError

SPLITS = ("train", "val", "test")


def _split(folder: Path, name: str, allow_int8: bool) -> Split | None:
    x_path, y_path = folder / f"{name}_x.npy", folder / f"{name}_y.npy"
    if not x_path.is_file():
        return None
    try:
        x = np.load(x_path, allow_pickle=False)
        y = np.load(y_path, allow_pickle=False) if y_path.is_file() else None
    except (OSError, ValueError) as err:
        raise TinyexitError(f"{folder}: cannot read the {name} split ({err})") from None
    if y is None:
        raise TinyexitError(f"{folder}: {x_path.name} has no {y_path.name} beside it")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise TinyexitError(f"{y_path}: expected {len(x)} integer labels, got {y.dtype} of shape {y.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or (allow_int8 and x.dtype == np.int8)):
        raise TinyexitError(f"{x_path}: inputs are {x.dtype}; give float inputs"
                            + (" (or int8 already quantized)" if allow_int8 else ""))
    return Split(x, y.astype(np.int64), np.zeros(len(y), np.int64))


def load_arrays(path: str | Path | None, allow_int8: bool = False) -> Dataset:
    """allow_int8: inputs may also be int8, already quantized for the model (`tinyexit import`)."""
    if path is None:
        raise TinyexitError("this model's data are arrays: give --data DIR (train_x.npy, val_x.npy, ...)")
    folder = Path(path)
    if not folder.is_dir():
        raise TinyexitError(f"data folder not found: {folder}")
    splits = {name: _split(folder, name, allow_int8) for name in SPLITS}
    if splits["val"] is None:
        raise TinyexitError(f"{folder}: no val_x.npy (the validation split calibration needs)")
    empty = Split(splits["val"].x[:0], splits["val"].y[:0], splits["val"].groups[:0])
    classes_file = folder / "classes.txt"
    labels = np.concatenate([s.y for s in splits.values() if s is not None])
    classes = (classes_file.read_text().split("\n") if classes_file.is_file() else
               [str(i) for i in range(int(labels.max(initial=0)) + 1)])
    classes = [c for c in classes if c]
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise TinyexitError(f"{folder}: labels range over {labels.min()}..{labels.max()}; "
                            f"there are {len(classes)} classes")
    return Dataset("custom", classes, splits["train"] or empty, splits["val"], splits["test"] or empty,
                   {"kind": "arrays"})  # preprocessed by the user: what the model takes

