"""User-given model inputs (X.npy) and labels (y.npy), checked against the model in one place.

Every command that takes `--inputs X.npy [--labels y.npy]` (sim, profile, evaluate, calibrate) goes through
`load`: one `.npy` per model input, in the model's input order, each in the input's dtype (int8) and shape
(N, *sample shape) or flat (N, sample size); another shape of the same size is refused (it would be a
transposed layout, read as garbage); axes of size 1 may be left out or added. Labels are N integers from 0 to classes - 1. `tinyexit inputs` makes
such files from a dataset split or float arrays.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError

NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: str | Path, what: str) -> np.ndarray:
    """One array from a `.npy` file; anything else (missing, `.npz`, pickled objects, damaged) is one error."""
    path = Path(path)
    if not path.is_file():
        raise TinyexitError(f"{what} {path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as err:
        raise TinyexitError(f"{what} {path}: cannot read it ({err.strerror})") from None
    if head[:2] == b"PK" and zipfile.is_zipfile(path):
        raise TinyexitError(f"{what} {path}: a .npz archive; give one array as .npy (np.save), "
                            f"one file per model input")
    if head != NPY_MAGIC:
        raise TinyexitError(f"{what} {path}: not a .npy file (save the array with np.save)")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, EOFError, OSError... on damaged headers or data
        raise TinyexitError(f"{what} {path}: cannot read it as .npy ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:120] if str(err) else 'damaged'})") from None
    if array.ndim == 0:
        raise TinyexitError(f"{what} {path}: a single value, not an array of samples")
    return array


def sample_shape(tensor: dict) -> tuple[int, ...]:
    """One sample's shape: the tensor's shape without its batch dimension."""
    shape = tuple(tensor["shape"])
    return shape[1:] if len(shape) > 1 else shape


def model_inputs(model: str | Path) -> tuple[list[dict], int | None]:
    """The input tensors (name, shape, dtype, scale, zero_point) of an export folder or a plain `.tflite`, and
    the number of classes its labels may take (None where the model does not say)."""
    from tinyexit import manifest as mf
    from tinyexit.tflite_graph import Graph

    path = Path(model)
    if path.is_dir() or path.name == "manifest.json":
        m = mf.read(path)
        return [m["input"]], m["exits"][-1]["classes"]
    if path.suffix == ".tflite":
        g = Graph.load(path)
        classes = math.prod(g.tensors[g.outputs[0]].shape) if len(g.outputs) == 1 else None
        return [g.tensors[t].describe() for t in g.inputs], classes
    if not path.exists():
        raise TinyexitError(f"{path}: no such export folder or .tflite file")
    raise TinyexitError(f"{path}: give an export folder (manifest.json + stages) or a .tflite file")


def check_array(x: np.ndarray, tensor: dict, source: str) -> np.ndarray:
    """`x` as (N, *sample shape) of the tensor's dtype; accepts the flat (N, size) form."""
    want = sample_shape(tensor)
    size = math.prod(want)
    dtype = np.dtype(tensor["dtype"])
    if x.dtype != dtype:
        hint = " (make them with `tinyexit inputs`)" if dtype == np.int8 and x.dtype.kind in "fiu" else ""
        raise TinyexitError(f"{source}: the inputs are {x.dtype}, the model takes {dtype}{hint}")
    if len(x) == 0:
        raise TinyexitError(f"{source}: no samples (shape {x.shape})")
    if tuple(x.shape[1:]) == want:
        return x
    squeezed = tuple(d for d in want if d != 1)
    if (x.ndim == 2 and x.shape[1] == size) or tuple(d for d in x.shape[1:] if d != 1) == squeezed:
        return x.reshape((len(x), *want))  # flat, or unit axes added or left out: the same order of values
    layouts = f"(N, {', '.join(map(str, want))})" + (f" or flat (N, {size})" if len(want) > 1 else "")
    same = " (the same size in another layout: transpose it to the model's)" \
        if x.ndim > 1 and math.prod(x.shape[1:]) == size else ""
    raise TinyexitError(f"{source}: the inputs have shape {tuple(x.shape)}; the model takes {size} {dtype} values "
                        f"per sample, as {layouts}{same}")


def check_labels(y: np.ndarray, n: int, classes: int | None, source: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise TinyexitError(f"{source}: the labels are {y.dtype}; give integer class indices")
    if y.ndim != 1 or len(y) != n:
        raise TinyexitError(f"{source}: expected {n} labels (one per input sample), got shape {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or (classes is not None and y.max() >= classes)):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        limit = f"0 to {classes - 1}" if classes is not None else "0 or more"
        raise TinyexitError(f"{source}: label {bad} is out of range (the model's classes are {limit})")
    return y.astype(np.int64)


def load(inputs: str | Path | list, labels: str | Path | None, tensors: list[dict],
         classes: int | None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The validated input arrays (one per model input, each (N, *sample shape)) and labels (or None)."""
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if len(paths) != len(tensors):
        names = ", ".join(f"'{t['name']}' {list(t['shape'])}" for t in tensors)
        raise TinyexitError(f"--inputs: the model takes {len(tensors)} input{'s' if len(tensors) > 1 else ''} "
                            f"({names}); give {len(tensors)} .npy file{'s' if len(tensors) > 1 else ''} in that "
                            f"order, not {len(paths)}")
    arrays = [check_array(read_npy(p, "--inputs"), t, str(p)) for p, t in zip(paths, tensors)]
    if len({len(a) for a in arrays}) > 1:
        raise TinyexitError(f"--inputs: the files hold different numbers of samples ({[len(a) for a in arrays]})")
    y = None
    if labels is not None:
        y = check_labels(read_npy(labels, "--labels"), len(arrays[0]), classes, str(labels))
    return arrays, y


def load_for_model(model: str | Path, inputs, labels) -> tuple[list[np.ndarray], np.ndarray | None]:
    """`load` against the inputs and classes of an export folder or `.tflite`."""
    tensors, classes = model_inputs(model)
    return load(inputs, labels, tensors, classes)
